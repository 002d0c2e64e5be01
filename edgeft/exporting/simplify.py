"""Simplifying a training-step graph from the shapes sample batches show, checked before it is kept.

onnx-ad emits general broadcasting machinery (ReduceSum, Expand, Reshape to a tensor's own
shape; Transposes that only move axes of size 1). Where every sample batch shows such a node
changes nothing, it becomes an Identity (or a Squeeze / Unsqueeze); the caller keeps the result
only when it agrees with the original on batches of other sizes (:func:`agree`).

Maintained graph libraries do not do this job: they prove shapes symbolically, and a dynamic
batch or sequence axis hides exactly what the sample batches show. Measured with
``tools/bench_graph_cleanup.py`` (MiniLM, last:1, full-graph step, batch 16 x 32 tokens, 2
threads): onnx-ad's step 5.37 steps/s; these passes 6.14; onnxslim instead 5.21 (0.85x of these
passes), onnxscript's optimizer 4.60 (0.75x); onnxslim after these passes 6.09 (0.99x, 646
nodes instead of 1,031: ONNX Runtime's own optimizations at session load already remove what it
removes). So edgeft keeps these passes and takes no graph library as a dependency.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeft.exporting.graph_tools import Names, prune


def plain_session(model: onnx.ModelProto):  # -> onnxruntime.InferenceSession, nothing fused or folded
    import onnxruntime as ort

    from edgeft.ortcompat import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(None, "disable"),
                                providers=["CPUExecutionProvider"])


def observed_shapes(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, tuple[int, ...]]]:
    """The shape of every tensor of ``model`` in a run on each feed."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    runner = plain_session(probe)
    names = [o.name for o in runner.get_outputs()]
    return [{n: np.shape(v) for n, v in zip(names, runner.run(None, feed))} for feed in feeds]


def simplify(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, int]:
    observed = observed_shapes(model, feeds)
    simplified = onnx.ModelProto()
    simplified.CopyFrom(model)
    graph = simplified.graph
    names = Names(simplified)
    nodes, count = [], 0

    def same(a: str, b: str) -> bool:
        return all(a in run and b in run and run[a] == run[b] for run in observed)

    for node in graph.node:
        x = node.input[0] if node.input else ""
        if node.op_type in ("ReduceSum", "Expand", "Reshape") and x and same(x, node.output[0]):
            nodes.append(helper.make_node("Identity", [x], [node.output[0]], name=node.name))
            count += 1
            continue
        if node.op_type == "Transpose" and all(x in run for run in observed):
            perm = list(helper.get_attribute_value(node.attribute[0])) if node.attribute else None
            rank = len(observed[0][x])
            perm = perm if perm is not None else list(reversed(range(rank)))
            ones = [axis for axis in range(rank) if all(run[x][axis] == 1 for run in observed)]
            kept = [axis for axis in perm if axis not in ones]
            if ones and kept == sorted(kept):
                squeezed, axes_in, axes_out = names(f"{node.output[0]}.squeezed"), names("axes"), names("axes")
                graph.initializer.append(numpy_helper.from_array(np.array(ones, np.int64), axes_in))
                graph.initializer.append(numpy_helper.from_array(
                    np.array([i for i, axis in enumerate(perm) if axis in ones], np.int64), axes_out))
                nodes += [helper.make_node("Squeeze", [x, axes_in], [squeezed]),
                          helper.make_node("Unsqueeze", [squeezed, axes_out], [node.output[0]], name=node.name)]
                count += 1
                continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune(simplified)
    return simplified, count


def agree(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> bool:
    """Both graphs give the same outputs (ORT's random seed reset before each run: the same
    dropout masks)."""
    import onnxruntime as ort

    first, second = plain_session(a), plain_session(b)
    for feed in feeds:
        ort.set_seed(7)
        x_out = first.run(None, feed)
        ort.set_seed(7)
        y_out = second.run(None, feed)
        for x, y in zip(x_out, y_out):
            if np.shape(x) != np.shape(y) or not np.allclose(x, y, rtol=1e-5, atol=1e-7):
                return False
    return True
