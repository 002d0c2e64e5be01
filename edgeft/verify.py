"""``edgeft verify``: can this folder be used here? Hashes, format, and a real load in this runtime.

What a device (or a CI job) runs on a folder it downloaded before trusting it: the manifest is
read (a newer format is refused), every file's sha256 is checked, and the models are loaded by
the installed onnxruntime: the training sessions for artifacts, the inference model for bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.manifest import check_fields, load_manifest


def verify_folder(folder: Path) -> dict[str, Any]:
    """Raise EdgeftError with the reason when the folder cannot be used; else describe the checks."""
    manifest = check_fields(load_manifest(folder, verify=True))
    kind = manifest.kind
    checks = [f"manifest format {manifest.data['format_version']} readable",
              f"{len(manifest.data['files'])} files match their sha256"]
    if kind in ("artifacts", "package"):
        from edgeft.ortcompat import has_training_api

        if "training_model" not in manifest.data["files"]:
            pass  # portable format only: nothing of ORT's training API to load
        elif has_training_api():
            from edgeft.backends.ort_training import OrtTrainer
            from edgeft.manifest import TAIL_PREFIX

            OrtTrainer(manifest)
            checks.append("training, eval and optimizer models load in the ORT training API")
            if manifest.data.get("cache", {}).get("available"):
                OrtTrainer(manifest, prefix=TAIL_PREFIX)
                checks.append("tail artifacts of the frozen-prefix cache load")
        else:
            checks.append("training API not installed: ORT training artifacts not loaded")
        from edgeft.backends.portable import PortableTrainer, available

        if available(manifest):
            PortableTrainer(manifest)
            checks.append("portable training graphs load in onnxruntime")
        if kind == "artifacts":
            _load(manifest.path("forward_model"))
            checks.append("forward model loads in onnxruntime")
        else:
            checks.append(f"device package for {manifest.data['device']['name']}")
    elif kind == "bundle":
        _load(manifest.path("model"))
        checks.append("bundle model loads in onnxruntime")
    else:
        raise EdgeftError(f"Unknown folder kind {kind!r}.", where=str(folder),
                          hint="give an edgeft artifact folder or bundle.")
    return {"folder": str(folder), "kind": kind, "ok": True, "checks": checks}


def _load(path: Path) -> None:
    from edgeft.deployment.runtime import make_session

    try:
        make_session(path, threads=1, optimization="basic")
    except Exception as exc:
        raise EdgeftError(f"onnxruntime cannot load {path.name}: {exc}", where=str(path),
                          hint="use the onnxruntime version in edgeft's constraints file, or rebuild the folder.") from exc
