"""The frozen-prefix split at export: ``prefix.onnx`` and the tail graph its training graphs are built on.

The split (see :mod:`edgeft.exporting.split`) is checked on sample batches: every boundary tensor
must have the batch on axis 0 and at most one dynamic axis (the sequence, on axis 1) that
follows the input's sequence length, so cached rows can be stored per example and re-padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeft.exporting.source import InputSpec, sample_array
from edgeft.exporting.split import Split, split_forward
from edgeft.ortcompat import session_options

PREFIX_FILE = "prefix.onnx"


def _run_prefix(prefix: onnx.ModelProto, inputs: list[InputSpec], sizes: dict[str, int], seed: int) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(prefix.SerializeToString(), session_options(None), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {spec.name: sample_array(spec, seed, sizes) for spec in inputs if spec.name in names}
    return session.run(None, feed)


def boundary_spec(split: Split, inputs: list[InputSpec], seed: int) -> tuple[list[dict[str, Any]] | None, str]:
    """Shapes of the boundary tensors with "batch" / "sequence" axes, or None and the reason."""
    dynamic = sorted({d for spec in inputs for d in spec.shape if isinstance(d, str) and d != "batch"})
    small = {"batch": 2, **{d: 5 for d in dynamic}}
    large = {"batch": 3, **{d: 7 for d in dynamic}}
    first = _run_prefix(split.prefix, inputs, small, seed)
    second = _run_prefix(split.prefix, inputs, large, seed)
    specs = []
    for name, a, b in zip(split.boundary, first, second):
        if a.ndim < 1 or a.shape[0] != 2 or b.shape[0] != 3 or a.ndim != b.ndim:
            return None, f"the frozen part's output {name} has no batch axis"
        shape: list[int | str] = ["batch"]
        for axis in range(1, a.ndim):
            if a.shape[axis] == b.shape[axis]:
                shape.append(int(a.shape[axis]))
            elif axis == 1 and a.shape[axis] == 5 and b.shape[axis] == 7 and len(dynamic) == 1:
                shape.append("sequence")
            else:
                return None, f"the frozen part's output {name} has a dynamic axis {axis} that cannot be cached"
        specs.append({"name": name, "dtype": a.dtype.name, "shape": shape})
    return specs, ""


def _declare_shape(value: onnx.ValueInfoProto, shape: list[int | str]) -> None:
    dims = value.type.tensor_type.shape
    del dims.dim[:]
    for size in shape:
        dim = dims.dim.add()
        if isinstance(size, int):
            dim.dim_value = size
        else:
            dim.dim_param = size


def build_tail(forward: onnx.ModelProto, trainable: list[str], frozen: list[str], inputs: list[InputSpec],
               stage: Path, seed: int) -> tuple[dict[str, Any], dict[str, str], list[str], onnx.ModelProto | None]:
    """Write prefix.onnx; returns (manifest section, files, notes, tail graph or None without a split).

    The training graphs of the tail (portable, and ORT's when asked) are built by the caller."""
    split = split_forward(forward, set(trainable), set(frozen))
    if split is None:
        return {"available": False, "reason": "no frozen part ahead of the trainable layers"}, {}, [], None
    boundary, reason = boundary_spec(split, inputs, seed)
    if boundary is None:
        return {"available": False, "reason": reason}, {}, [f"frozen-prefix cache not available: {reason}"], None
    shapes = {b["name"]: b["shape"] for b in boundary}
    for value in [*split.tail.graph.input, *split.prefix.graph.output]:
        if value.name in shapes:
            _declare_shape(value, shapes[value.name])
    onnx.save(split.prefix, str(stage / PREFIX_FILE))
    per_example = sum(int(np.prod([d for d in b["shape"][1:] if isinstance(d, int)])) * 4 for b in boundary)
    section = {"available": True, "boundary": boundary, "raw_inputs": split.raw_inputs,
               "bytes_per_example_row": per_example}
    notes = [f"frozen-prefix cache: the tail reads {len(boundary)} cached tensor(s) "
             f"({per_example:,} bytes per example{' per token' if any('sequence' in b['shape'] for b in boundary) else ''})"]
    return section, {"prefix_model": PREFIX_FILE}, notes, split.tail
