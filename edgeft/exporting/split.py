"""Split a forward graph at the frozen boundary: a frozen *prefix* and a trainable *tail*.

A node belongs to the tail when it depends on a trainable parameter, to the prefix when it
depends on a frozen parameter, no trainable one, and the example; nodes that depend on neither
parameter kind or not on the example (mask arithmetic, shapes, constants, values of frozen
parameters alone) are copied to whichever side reads them, so the tail rebuilds
them from the raw inputs. The boundary is then only what the frozen parameters produced
(hidden states, or the pooled vector for head-only training): the prefix runs once per example
as plain inference and the tail trains on its cached outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper


_SHAPE_ONLY = {"Shape", "Size"}


@dataclass
class Split:
    prefix: onnx.ModelProto  # graph inputs -> boundary tensors (frozen parameters as initializers)
    tail: onnx.ModelProto  # boundary tensors + raw inputs it reads -> the forward output
    boundary: list[str]  # tensors the prefix produces and the tail reads
    raw_inputs: list[str]  # graph inputs the tail reads directly


def _ancestors(nodes: list[onnx.NodeProto], wanted: set[int], producer: dict[str, int]) -> set[int]:
    """``wanted`` plus every node they transitively read from."""
    result, stack = set(wanted), list(wanted)
    while stack:
        for name in nodes[stack.pop()].input:
            index = producer.get(name)
            if index is not None and index not in result:
                result.add(index)
                stack.append(index)
    return result


def split_forward(model: onnx.ModelProto, trainable: set[str], frozen: set[str]) -> Split | None:
    """The prefix / tail split, or None when no frozen parameter feeds the tail."""
    graph = model.graph
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    tainted_t: set[str] = set(trainable)
    tainted_p: set[str] = set(frozen)
    data: set[str] = {i.name for i in graph.input}  # what varies with the example
    kind: list[str] = []
    for node in nodes:  # nodes are topologically sorted in a valid ONNX graph
        t = any(i in tainted_t for i in node.input)
        # a shape does not depend on the values behind it: rebuild it in the tail from the boundary
        p = any(i in tainted_p for i in node.input) and node.op_type not in _SHAPE_ONLY
        varies = any(i in data for i in node.input)
        # frozen values the example does not change (DeBERTa's relative-position embeddings) are
        # constants to the tail: rebuilt on the side that reads them, not cached per example
        kind.append("tail" if t else "prefix" if p and varies else "free")
        if varies:
            data.update(node.output)
        if t:
            tainted_t.update(node.output)
        elif p:
            tainted_p.update(node.output)
    outputs = {o.name for o in graph.output}
    tail_core = {i for i, k in enumerate(kind) if k == "tail"}
    if not any(k == "prefix" for k in kind) or not tail_core:
        return None
    # everything the tail reads that is not itself prefix-made is rebuilt on the tail side
    tail_nodes: set[int] = set()
    boundary: list[str] = []
    stack = sorted(tail_core | {producer[o] for o in outputs if o in producer})
    while stack:
        index = stack.pop()
        if index in tail_nodes:
            continue
        tail_nodes.add(index)
        for name in nodes[index].input:
            source = producer.get(name)
            if source is None:
                continue
            if kind[source] == "prefix":
                if name not in boundary:
                    boundary.append(name)
            elif source not in tail_nodes:
                stack.append(source)
    if not boundary:
        return None
    prefix_nodes = _ancestors(nodes, {producer[b] for b in boundary}, producer)
    if prefix_nodes & tail_core:
        return None
    graph_inputs = [i for i in graph.input]
    initializers = {i.name: i for i in graph.initializer}

    def reads(selected: set[int]) -> set[str]:
        return {name for i in selected for name in nodes[i].input}

    tail_reads = reads(tail_nodes)
    raw_inputs = [i.name for i in graph_inputs if i.name in tail_reads]
    prefix_reads = reads(prefix_nodes)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    boundary_infos = [helper.make_tensor_value_info(b, elem.get(b) or onnx.TensorProto.FLOAT, None) for b in boundary]

    def build(selected: set[int], inputs: list[onnx.ValueInfoProto], outs: list[onnx.ValueInfoProto],
              name: str, used: set[str]) -> onnx.ModelProto:
        body = [nodes[i] for i in sorted(selected)]
        inits = [initializers[n] for n in sorted(used) if n in initializers]
        sub = helper.make_graph(body, name, inputs, outs, inits)
        out = helper.make_model(sub, opset_imports=list(model.opset_import), producer_name="edgeft")
        out.ir_version = model.ir_version
        return out

    prefix = build(prefix_nodes, [i for i in graph_inputs if i.name in prefix_reads], boundary_infos,
                   "prefix", prefix_reads)
    tail_inputs = boundary_infos + [i for i in graph_inputs if i.name in raw_inputs]
    tail = build(tail_nodes, tail_inputs, list(graph.output), "tail", tail_reads)
    return Split(prefix=prefix, tail=tail, boundary=boundary, raw_inputs=raw_inputs)
