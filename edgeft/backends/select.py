"""Which training backend runs here: the portable one, or ONNX Runtime's training API.

``auto`` takes the portable backend (standard-ONNX graphs on any onnxruntime) whenever the folder
has its graphs, and ONNX Runtime's training API (the optional ``ort-training`` extra) only for a
folder exported with ``--format ort-training`` alone. Both have the same interface and
checkpoints of either resume in the other.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edgeft.backends.ort_training import OrtTrainer, with_weight_decay
from edgeft.backends.portable import PortableTrainer, available
from edgeft.backends.trainer import Trainer
from edgeft.errors import EdgeftError
from edgeft.manifest import Manifest
from edgeft.ortcompat import TRAINING_INSTALL_HINT

BACKENDS = ("auto", "ort-training", "portable")


@functools.lru_cache(maxsize=1)
def ort_training_importable() -> bool:
    """True when ``edgeft.ortcompat.training_api()`` imports in this environment."""
    from edgeft.ortcompat import training_api

    try:
        training_api()
    except (EdgeftError, ImportError, OSError):
        return False
    return True


def resolve_backend(name: str, manifest: Manifest | None = None) -> str:
    """``ort-training`` or ``portable`` for ``name`` (one of BACKENDS); a clear error when unusable."""
    if name not in BACKENDS:
        raise EdgeftError(f"Unknown backend {name!r}.", where="--backend", hint=f"use one of {', '.join(BACKENDS)}.")
    has_ort_files = manifest is not None and "training_model" in manifest.data.get("files", {})
    if name == "auto":
        if manifest is None or available(manifest):
            return "portable"
        if has_ort_files and ort_training_importable():
            return "ort-training"
        raise EdgeftError("This folder has no portable training graphs"
                          + (" and ONNX Runtime's training API is not installed here." if has_ort_files else "."),
                          where=str(manifest.folder),
                          hint="re-export it with this edgeft version (the portable format trains on any "
                               "onnxruntime)" + (f", or {TRAINING_INSTALL_HINT}" if has_ort_files else "") + ".")
    if name == "ort-training":
        if not ort_training_importable():
            raise EdgeftError("ONNX Runtime's training API is not installed here (plain onnxruntime has none).",
                              where="--backend ort-training",
                              hint=f"use --backend portable (or auto), or {TRAINING_INSTALL_HINT}.")
        if manifest is not None and not has_ort_files:
            raise EdgeftError("This folder holds no ONNX Runtime training artifacts.", where=str(manifest.folder),
                              hint="use --backend portable (or auto), or export with --format ort-training "
                                   "(device packages hold the portable graphs only).")
    return name


def open_trainer(manifest: Manifest, backend: str = "auto", threads: int | None = None,
                 checkpoint: Path | None = None, prefix: str = "", weight_decay: float = 0.0,
                 work_dir: Path | None = None, l2sp: float | None = None) -> Trainer:
    """A trainer of ``backend`` over the artifact set ``prefix``, resumed from ``checkpoint``.

    ``weight_decay`` is AdamW's decoupled decay; the ORT backend bakes it into a copy of the
    optimizer model in ``work_dir``, the portable one feeds it to its optimizer graph.
    ``l2sp`` is the L2-SP strength (None: the export's default; the graphs must have the term).
    """
    check_l2sp(manifest, l2sp)
    chosen = resolve_backend(backend, manifest)
    optimizer = manifest.data["optimizer"]
    if optimizer == "sgd" and weight_decay:
        raise EdgeftError("ONNX Runtime's SGD optimizer has no weight decay.", where="--weight-decay",
                          hint="pass --weight-decay 0, or export with --optimizer adamw.")
    if chosen == "portable":
        return PortableTrainer(manifest, threads=threads, checkpoint=checkpoint, prefix=prefix,
                               weight_decay=weight_decay if optimizer == "adamw" else 0.0, l2sp=l2sp)
    optimizer_model = None
    if optimizer == "adamw" and weight_decay:
        if work_dir is None:
            raise ValueError("work_dir is needed for a weight decay with the ORT backend")
        optimizer_model = with_weight_decay(manifest.path(f"{prefix}optimizer_model"),
                                            Path(work_dir) / f"{prefix}optimizer_model.onnx", weight_decay)
    return OrtTrainer(manifest, threads=threads, checkpoint=checkpoint, prefix=prefix, optimizer_model=optimizer_model,
                      l2sp=l2sp)


def check_l2sp(manifest: Manifest, l2sp: float | None) -> None:
    """Refuse an L2-SP strength the artifacts cannot apply (no term in their graphs, or not >= 0)."""
    if l2sp is None:
        return
    if not l2sp >= 0:
        raise EdgeftError(f"--l2sp {l2sp} is not a strength.", where="--l2sp",
                          hint="give a number >= 0 (0 switches it off).")
    if l2sp and manifest.l2sp is None:
        raise EdgeftError("These artifacts were exported without the L2-SP term.", where=str(manifest.folder),
                          hint="export them again with --l2sp STRENGTH (e.g. 0.01), or train without --l2sp.")
