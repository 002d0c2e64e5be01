"""Small helpers for writing ONNX graphs by hand: fresh names, constants, inferred shapes, dead-node pruning."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


class Names:
    """Fresh tensor names that cannot collide with the graph's own (of a model or a graph)."""

    def __init__(self, model: onnx.ModelProto | onnx.GraphProto) -> None:
        g = model.graph if isinstance(model, onnx.ModelProto) else model
        self.taken = {i.name for i in g.input} | {i.name for i in g.initializer} | {o.name for o in g.output}
        self.taken |= {o for n in g.node for o in n.output} | {i for n in g.node for i in n.input}

    def __call__(self, stem: str) -> str:
        name, count = stem, 0
        while name in self.taken:
            count += 1
            name = f"{stem}_{count}"
        self.taken.add(name)
        return name


def const(graph: onnx.GraphProto, names: Names, stem: str, value: np.ndarray) -> str:
    name = names(stem)
    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes no output needs, then initializers and inputs nothing reads (inputs a user
    feeds are kept: the model inputs, labels and the trainable tensors)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs read outer names
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    needed.update(i for n in sub.node for i in n.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's inferred shape (None for a symbolic dimension), where its rank is known."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, list[int | None]] = {i.name: list(i.dims) for i in model.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
    return shapes
