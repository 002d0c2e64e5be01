"""An ONNX forward model the user already has.

Its float initializers of rank one or more are its parameters (rank-0 initializers are
constants such as scales and epsilons); their forward order is the order in which the
topologically sorted nodes first read them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from edgeft.errors import EdgeftError
from edgeft.exporting.source import InputSpec, LoadedModel

_FLOAT_TYPES = {onnx.TensorProto.FLOAT}


def parameter_order(model: onnx.ModelProto) -> list[str]:
    """Float initializers with rank >= 1, in the order the graph's nodes first read them."""
    params = {i.name for i in model.graph.initializer if i.data_type in _FLOAT_TYPES and len(i.dims) >= 1}
    order: list[str] = []
    for node in model.graph.node:
        for name in node.input:
            if name in params and name not in order:
                order.append(name)
    return order


def _spec(value: onnx.ValueInfoProto, index: int) -> InputSpec:
    tensor = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape: list[int | str] = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or ("batch" if axis == 0 else f"{value.name}_dim{axis}"))
    return InputSpec(value.name, dtype, shape)


def load_onnx(path: Path, label_names: list[str], num_labels: int | None) -> LoadedModel:
    """Read ``path`` and describe its inputs, output and label count."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise EdgeftError(f"{path} is not a valid ONNX model: {exc}", where=str(path),
                          hint="check the file was fully copied; re-export it from its framework.") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_spec(v, i) for i, v in enumerate(model.graph.input) if v.name not in initializers]
    if not model.graph.output:
        raise EdgeftError(f"{path} has no outputs.", where=str(path), hint="give a model whose output is logits.")
    output = _spec(model.graph.output[0], 0)
    last = output.shape[-1] if output.shape else None
    count = len(label_names) or num_labels or (last if isinstance(last, int) else None)
    if count is None:
        raise EdgeftError(f"The output {output.name!r} has no fixed last dimension, so the label count is unknown.",
                          where=str(path), hint="pass --num-labels N or --labels FILE.")
    if isinstance(last, int) and last != count:
        raise EdgeftError(f"The model's output has {last} values per example but {count} labels were given.",
                          where=str(path), hint="give as many labels as the model has outputs.")
    names = label_names or [f"LABEL_{i}" for i in range(count)]
    return LoadedModel(inputs=inputs, output=output.name, num_outputs=count,
                       source={"kind": "onnx", "producer": model.producer_name or "unknown"},
                       onnx_model=model, label_names=names)
