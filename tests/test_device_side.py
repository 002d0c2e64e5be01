"""The device side must run with onnxruntime, numpy and light helpers only."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "optimum", "sentence_transformers")
DEVICE_MODULES = ["edgeft", "edgeft.cli", "edgeft.manifest", "edgeft.fsutil", "edgeft.selection", "edgeft.tasks",
                  "edgeft.labels", "edgeft.ortcompat", "edgeft.report", "edgeft.backends.ort_training",
                  "edgeft.commands.inspect"]


def test_device_modules_import_no_heavy_packages():
    code = "\n".join([*(f"import {m}" for m in DEVICE_MODULES), "import sys",
                      f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_inspect_runs_without_heavy_packages(tiny_onnx, tmp_path, export_cache):
    result = export_cache(model=str(tiny_onnx), train="head")
    code = ("import sys\nfrom edgeft.cli import main\n"
            f"try:\n main(['inspect', {str(result.folder)!r}, '--json'])\nexcept SystemExit as e: assert not e.code\n"
            f"assert not [m for m in {HEAVY!r} if m in sys.modules], sys.modules.keys()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
