"""``edgeft export --device`` / ``edgeft package``: a device package from an artifact folder.

A device package holds what one device profile needs to fine-tune and deploy, and nothing else:
the frozen prefix prepared for the profile (``edgeft.packaging.prefix``: folded, fused, quantized as
its recipe says, accuracy-guarded on features), the tail's portable training and eval graphs, the
optimizer graph, the trainable tensors' initial values (once), labels, the tokenizer or image
preprocessor config, the profile itself and a manifest (kind ``package``) with the sha256 of every
file. It has no forward graph, no fp32 copy of the frozen weights and no ONNX Runtime training
artifacts: MiniLM ``--train last:1`` is about a third of its fp32 model's size. It trains with the
portable backend (``edgeft train PACKAGE DATA``) and deploys on the device (``edgeft deploy RUN``),
reusing its prefix.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.devices import DeviceProfile, load_profile
from edgeft.errors import EdgeftError
from edgeft.fsutil import sha256_file, staged_folder
from edgeft.manifest import MANIFEST_NAME, Manifest, check_fields, load_manifest, write_manifest
from edgeft.outputs import check_output, output_check

PROFILE_FILE = "profile.toml"
# artifact files a package leaves out: the forward graph, the fp32 prefix and ORT's training artifacts
_LEFT_OUT = {"forward_model", "prefix_model", "training_model", "eval_model", "optimizer_model", "checkpoint"}


@dataclass
class PackageResult:
    """What a package build produced."""

    folder: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        data = self.manifest.data
        return {"folder": str(self.folder), "device": data["device"]["name"], "size_mb": data["size"]["package_mb"],
                "fp32_model_mb": data["size"]["fp32_model_mb"], "size_ratio": data["size"]["ratio"],
                "prefix": {k: data["prefix"][k] for k in ("chosen", "recipe_summary", "guard")} if data.get("prefix")
                else None, "notes": self.notes, "seconds": round(self.seconds, 2)}


def _guard_examples(manifest: Manifest, guard_data: Path | None, columns: dict[str, str]) -> Any:
    if guard_data is None:
        return None
    from edgeft.data.records import read_records
    from edgeft.data.examples import ExampleSet

    return ExampleSet(read_records(Path(guard_data), manifest.data, **columns), manifest)


def _mb(nbytes: int) -> float:
    return round(nbytes / 2**20, 3)


def make_package(artifacts: Path | str, device: str = "auto", output: Path | str | None = None,
                 guard_data: Path | str | None = None, max_drop: float | None = None, force: bool = False,
                 text_column: str = "text", label_column: str = "label", extra: dict[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None) -> PackageResult:
    """Write the device package of the artifact folder ``artifacts`` for ``device`` (a profile
    name, a .toml path or ``auto``); see the module docstring. Raises EdgeftError on user mistakes."""
    from edgeft.machine import auto_device
    from edgeft.packaging.prefix import prepare_prefix

    started = time.perf_counter()
    step = progress or (lambda _text: None)
    manifest = check_fields(load_manifest(Path(artifacts), kind="artifacts"))
    if not manifest.data.get("portable", {}).get("available"):
        raise EdgeftError("This artifact folder has no portable training graphs, which a device package trains with.",
                          where=str(manifest.folder), hint="export it again with this edgeft version (--format portable).")
    profile: DeviceProfile = load_profile(auto_device() if device == "auto" else device)
    dest = Path(output) if output else Path("artifacts") / f"{manifest.data['name']}-{profile.name}"
    check_output(dest, force, "package")  # before the slow part
    guard = _guard_examples(manifest, guard_data, {"text_column": text_column, "label_column": label_column})
    notes: list[str] = []
    files: dict[str, str] = {}
    with staged_folder(dest, force=force, check=output_check("package")) as stage:
        work = stage / ".work"
        work.mkdir()
        prefix_section = None
        if manifest.data["cache"]["available"]:
            prepared = prepare_prefix(manifest, profile, work, guard, max_drop, step)
            shutil.copyfile(prepared.path, stage / "prefix.onnx")
            files["prefix_model"] = "prefix.onnx"
            notes += prepared.notes
            prefix_section = {"chosen": prepared.chosen, "recipe": prepared.recipe.model_dump(),
                              "recipe_summary": prepared.recipe.summary(), "attempts": prepared.attempts,
                              "guard": prepared.guard, "session_config": prepared.session_config,
                              "graph_optimization": profile.runtime.graph_optimization,
                              "fp32_mb": _mb((work / "prefix-fp32.onnx").stat().st_size)}
            notes.append(f"frozen prefix: {prepared.chosen} ({prepared.recipe.summary()}), "
                         + (f"probe drop {prepared.attempts[-1]['drop']:.2f} points on {len(guard)} examples"
                            if prepared.guard["checked"] else prepared.guard["note"]))
        else:
            notes.append(f"no frozen prefix ({manifest.data['cache'].get('reason')}): the training graphs hold the "
                         "whole model in fp32")
        shutil.rmtree(work)
        for key, entry in manifest.data["files"].items():
            if key in _LEFT_OUT or key.startswith("tail_") and key[5:] in _LEFT_OUT:
                continue
            shutil.copyfile(manifest.folder / entry["path"], stage / entry["path"])
            files[key] = entry["path"]
        shutil.copyfile(profile.path, stage / PROFILE_FILE)
        files["profile"] = PROFILE_FILE
        package_bytes = sum((stage / rel).stat().st_size for rel in files.values())
        fp32_bytes = manifest.path("forward_model").stat().st_size
        kept = {k: v for k, v in manifest.data.items() if k not in ("files", "format_version", "kind", "repairs", "formats")}
        data = {**kept, "kind": "package", "formats": ["portable"],
                "device": {"name": profile.name, "arch": profile.hardware.arch, "threads": profile.hardware.threads,
                           "memory_mb": profile.hardware.memory_mb, "profile": PROFILE_FILE},
                "artifacts": {"name": manifest.data["name"], "manifest_sha256": sha256_file(manifest.folder / MANIFEST_NAME)},
                "size": {"package_mb": _mb(package_bytes), "fp32_model_mb": _mb(fp32_bytes),
                         "ratio": round(package_bytes / fp32_bytes, 4)},
                **({"prefix": prefix_section} if prefix_section else {}), **(extra or {})}
        written = check_fields(write_manifest(stage, data, files))
        step("running one training step on the package")
        _smoke_step(written)
    return PackageResult(folder=dest, manifest=Manifest(folder=dest, data=written.data), notes=notes,
                         seconds=time.perf_counter() - started)


def _smoke_step(manifest: Manifest) -> None:
    """One portable training step through the package's own prefix: every loss and gradient finite."""
    from edgeft.backends.portable import PortableTrainer
    from edgeft.deployment.measure import sample_feed

    batch = sample_feed(manifest.data, manifest.folder, 2, 16)
    spec = manifest.data["labels"]["input"]
    batch["labels"] = np.zeros([d if isinstance(d, int) else 2 for d in spec["shape"]], dtype=spec["dtype"])
    trainer = PortableTrainer(manifest)
    loss, _ = trainer.train_step(batch)
    gradients = trainer.gradients()
    trainer.optimizer_step()
    after, _ = trainer.eval_step(batch)
    if not (np.isfinite(loss) and np.isfinite(after) and all(np.isfinite(g).all() for g in gradients.values())):
        raise EdgeftError("A training step on the package gave a non-finite loss or gradient.", where=str(manifest.folder),
                          hint="export the package with a profile whose recipe keeps more in fp32 (or mode = \"none\").")
