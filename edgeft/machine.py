"""Facts about the machine edgeft runs on: which built-in profile fits its CPU, and how much
memory this process has used (for run summaries and reports)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from edgeft.errors import EdgeftError


def auto_device() -> str:
    """The built-in profile that fits this machine's CPU."""
    import platform

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        return "x86-64-avx512-vnni" if "avx512_vnni" in flags else "x86-64-avx2"
    if machine in ("arm64", "aarch64"):
        return "apple-m-series" if platform.system() == "Darwin" else "generic-arm64"
    raise EdgeftError(f"No built-in device profile fits this machine ({machine}).", where="--device auto",
                      hint="pass --device NAME (see edgeft devices) or the path of your own profile.")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM``, the high-water mark of this program's own memory. ``ru_maxrss`` is not
    used there because it carries over through fork and exec, so a worker started by a large
    parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)
