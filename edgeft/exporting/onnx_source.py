"""An ONNX forward model the user already has.

Its float initializers of rank one or more are its parameters (rank-0 initializers are
constants such as scales and epsilons); their forward order is the order in which the
topologically sorted nodes first read them. Parameters the PyTorch exporter folded (a Conv
with its BatchNorm becomes ``onnx::Conv_157``) are renamed after the module of the node that
reads them (``blocks.2.expand.0.weight``), so ``last:N`` finds the blocks they belong to.
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


_SLOTS = {"Conv": {1: "weight", 2: "bias"}, "ConvTranspose": {1: "weight", 2: "bias"}, "Gemm": {1: "weight", 2: "bias"},
          "MatMul": {1: "weight"}}


def _module_path(node_name: str) -> str | None:
    """The module a PyTorch-exported node belongs to: ``/blocks/blocks.2/expand/expand.0/Conv``
    -> ``blocks.2.expand.0`` (a scope repeats its parent's name for list items)."""
    parts = node_name.strip("/").split("/")[:-1] if node_name.startswith("/") else []
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path) or None


def name_folded_parameters(model: onnx.ModelProto) -> int:
    """Rename parameters named ``onnx::...`` after the module of their first reader; returns how
    many were renamed (names already taken are left as they are)."""
    params = {i.name for i in model.graph.initializer if i.name.startswith("onnx::")}
    taken = {i.name for i in model.graph.initializer} | {v.name for v in model.graph.input} | \
        {o for n in model.graph.node for o in n.output}
    renames: dict[str, str] = {}
    for node in model.graph.node:
        module = _module_path(node.name)
        for slot, name in enumerate(node.input):
            if name in params and name not in renames and module:
                new = f"{module}.{_SLOTS.get(node.op_type, {}).get(slot, f'{node.op_type}_input{slot}')}"
                if new not in taken:
                    renames[name] = new
                    taken.add(new)
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for value in model.graph.input:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    return len(renames)


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
    renamed = name_folded_parameters(model)
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
                       onnx_model=model, label_names=names,
                       notes=[f"named {renamed} folded parameter(s) (onnx::...) after the modules that read them"]
                       if renamed else [])
