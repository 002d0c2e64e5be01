"""What every model source hands to the exporter, whatever it was loaded from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx


@dataclass
class InputSpec:
    """One model input: name, numpy dtype name, and shape (ints, or names for dynamic axes)."""

    name: str
    dtype: str
    shape: list[int | str]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


SAMPLE_DIM = 2


def sample_array(spec: InputSpec, seed: int, sizes: dict[str, int] | None = None) -> np.ndarray:
    """A small sample of an input: named dims get ``sizes[name]`` or 2; normal floats, ones for integers.

    Ones are valid token ids and a valid attention mask, so text models see a real batch.
    """
    sizes = sizes or {}
    shape = [d if isinstance(d, int) else sizes.get(d, SAMPLE_DIM) for d in spec.shape]
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return np.ones(shape, dtype=dtype)


@dataclass
class Preprocessing:
    """How raw data becomes model inputs on the device, and which files it needs."""

    kind: str  # "tokenizer", "image" or "none"
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # name in the artifact folder -> content


@dataclass
class LoadedModel:
    """A model ready for export: a PyTorch module with a sample input, or an ONNX forward graph.

    Exactly one of ``module`` (with ``sample``, a dict of torch tensors) and ``onnx_model`` is
    set. ``output`` names the graph output the loss consumes (logits or predictions).
    """

    inputs: list[InputSpec]
    output: str
    num_outputs: int
    source: dict[str, Any]
    module: Any = None
    sample: dict[str, Any] | None = None
    onnx_model: onnx.ModelProto | None = None
    task_hint: str | None = None
    label_names: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing("none"))
    notes: list[str] = field(default_factory=list)
    new_parameters: list[str] = field(default_factory=list)
