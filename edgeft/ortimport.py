"""Keep ``import onnxruntime`` from importing torch.

At import, onnxruntime-training-cpu 1.19.2 validates its build
(``onnxruntime/capi/onnxruntime_validation.py``) by trying
``from onnxruntime.training.ortmodule import ORTModule``; the ``onnxruntime.training`` package
``__init__`` imports torch whenever torch is installed. On a host with torch, every
``import onnxruntime`` then costs about 2.8 s and 250 MB of resident memory for a PyTorch
wrapper that edgeft never uses; it was most of a training run's peak memory.

Before the first import, :func:`skip_ortmodule` registers ``onnxruntime.training`` as a bare
package (its submodules, ``api`` and ``artifacts``, still import normally) and
``onnxruntime.training.ortmodule`` as absent, which the validation reads as "no ORTModule".
It does nothing when onnxruntime is already imported or has no training package.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "onnxruntime.training"


def skip_ortmodule() -> None:
    """Register the bare training package so importing onnxruntime does not import torch."""
    if "onnxruntime" in sys.modules or PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec("onnxruntime")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations))) / "training"
    if not (folder / "__init__.py").is_file():
        return
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(folder)]
    package.__package__ = PACKAGE
    package.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    package.__spec__.submodule_search_locations = [str(folder)]
    sys.modules[PACKAGE] = package
    sys.modules[f"{PACKAGE}.ortmodule"] = None  # type: ignore[assignment]
