"""Operators rewritten into ones onnx-ad differentiates, before the portable step is built.

Each rewrite computes exactly what the operator computes, in operators whose reverse rules
hold at the shapes the graph has: DeBERTa's run-time ``Tile`` as a broadcast, EfficientNet's
pooling (an ``AveragePool`` with ``ceil_mode`` whose window covers the whole map) as a mean, and
its "same"-padded convolutions with the explicit pads that padding means.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeft.exporting.graph_tools import Names, const, inferred_shapes

def tile_as_expand(model: onnx.ModelProto, names: Names) -> int:
    """Tile(x, repeats) with repeats computed at run time (DeBERTa tiles its relative-position
    keys over the batch) -> the same copies as a broadcast: x gets a size-1 axis before each of
    its axes, is expanded to (repeat, size) pairs and reshaped to the products. onnx-ad
    differentiates Expand and Reshape at any shape, and Tile only with constant repeats."""
    graph = model.graph
    if not any(node.op_type == "Tile" for node in graph.node):
        return 0  # spares the shape inference below
    constant = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shapes = inferred_shapes(model)
    nodes, count = [], 0
    for node in graph.node:
        counted = shapes.get(node.input[1]) if node.op_type == "Tile" else None  # repeats: one per axis of x
        rank = counted[0] if counted and len(counted) == 1 else None
        if rank is None or node.input[1] in constant:
            nodes.append(node)
            continue
        x, repeats, y = node.input[0], node.input[1], node.output[0]
        stem = y.replace("/", "_").strip("_") or "tile"
        shape, spaced, pairs, pair_shape, target, sizes = (names(f"{stem}.{s}") for s in (
            "shape", "spaced", "pairs", "pair_shape", "expanded", "sizes"))
        columns = [names(f"{stem}.repeats_column"), names(f"{stem}.shape_column")]
        axes = const(graph, names, f"{stem}.axes", np.arange(0, 2 * rank, 2, dtype=np.int64))
        one = const(graph, names, f"{stem}.one", np.array([1], np.int64))
        flat = const(graph, names, f"{stem}.flat", np.array([-1], np.int64))
        nodes += [helper.make_node("Shape", [x], [shape]),
                  helper.make_node("Unsqueeze", [x, axes], [spaced]),
                  helper.make_node("Unsqueeze", [repeats, one], [columns[0]]),
                  helper.make_node("Unsqueeze", [shape, one], [columns[1]]),
                  helper.make_node("Concat", columns, [pairs], axis=1),
                  helper.make_node("Reshape", [pairs, flat], [pair_shape]),
                  helper.make_node("Expand", [spaced, pair_shape], [target]),
                  helper.make_node("Mul", [repeats, shape], [sizes]),
                  helper.make_node("Reshape", [target, sizes], [y], name=node.name)]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def global_average_pools(model: onnx.ModelProto, names: Names) -> int:
    """AveragePool whose single window covers the whole (static) map, as ceil_mode lets a kernel
    larger than the map do (EfficientNet pools with a kernel of its hidden size) -> ReduceMean
    over the spatial axes. onnx-ad refuses ceil_mode pooling, whose windows may overhang; here
    the one window holds every value, so the mean is exact (no padding is counted)."""
    graph = model.graph
    if not any(node.op_type == "AveragePool" for node in graph.node):
        return 0
    shapes = inferred_shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if node.op_type == "AveragePool" else {}
        shape = shapes.get(node.input[0]) if attrs else None
        spatial = shape[2:] if shape else None
        kernel = list(attrs.get("kernel_shape", []))
        ceil = bool(attrs.get("ceil_mode", 0))
        # one window from the first value: a kernel as large as the map, or with ceil_mode larger
        # (a valid graph then has one output per axis: no second window starts inside the map)
        whole = bool(spatial) and None not in spatial and len(kernel) == len(spatial) and all(
            k == d or ceil and k > d for k, d in zip(kernel, spatial))
        if not whole or any(attrs.get("pads", [])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            nodes.append(node)
            continue
        axes = list(range(2, 2 + len(spatial)))
        if opset >= 18:  # axes became an input in opset 18
            stem = node.output[0].replace("/", "_").strip("_")
            mean = helper.make_node("ReduceMean", [node.input[0], const(graph, names, f"{stem}.axes",
                                                                        np.array(axes, dtype=np.int64))],
                                    list(node.output), name=node.name, keepdims=1)
        else:
            mean = helper.make_node("ReduceMean", [node.input[0]], list(node.output), name=node.name, axes=axes,
                                    keepdims=1)
        nodes.append(mean)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def explicit_conv_pads(model: onnx.ModelProto) -> int:
    """Conv with auto_pad SAME_UPPER / SAME_LOWER (EfficientNet's "same" depthwise convolutions)
    -> the explicit pads those settings mean at the input's static size: the total padding that
    keeps ceil(size / stride) outputs, its odd unit at the end (UPPER) or the start (LOWER)."""
    graph = model.graph
    if not any(node.op_type == "Conv" and any(a.name == "auto_pad" for a in node.attribute) for node in graph.node):
        return 0
    shapes = inferred_shapes(model)
    count = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if node.op_type == "Conv" else {}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        shape, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not shape or not weight or None in shape[2:] + weight[2:]:
            continue
        spatial, kernel = shape[2:], weight[2:]
        strides = list(attrs.get("strides", [1] * len(spatial)))
        dilations = list(attrs.get("dilations", [1] * len(spatial)))
        begins, ends = [], []
        for d, k, s, r in zip(spatial, kernel, strides, dilations):
            total = max((-(-d // s) - 1) * s + (k - 1) * r + 1 - d, 0)
            small = total // 2
            begins.append(small if mode == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("pads", begins + ends)])
        count += 1
    return count
