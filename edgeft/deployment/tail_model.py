"""The trained tail as an inference model, and one bundle model from a package's prefix and that tail.

A device package ships its frozen prefix already prepared (folded, fused, quantized) and the
tail's portable eval graph, whose trainable tensors are inputs. Deploying it quantizes only the
tail: the eval graph gets the trained values as initializers, loses its loss (and ``labels``),
is folded, quantized by the guard's ladder, and is finally joined behind the package's prefix into
the one ``model.onnx`` a bundle ships, so the device runs what the tail was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeft.errors import EdgeftError

TAIL_NAMESPACE = "tail/"


def tail_inference_model(eval_graph: Path, trained: dict[str, np.ndarray], inputs: list[str], output: str,
                         out: Path) -> onnx.ModelProto:
    """The tail's forward graph from ``inputs`` (the boundary tensors and raw inputs it reads) to
    ``output``, with ``trained`` values as initializers in place of the trainable inputs."""
    model = onnx.load(str(eval_graph))
    graph = model.graph
    declared = {i.name: i for i in graph.input}
    unknown = sorted(set(trained) - set(declared))
    if unknown:
        raise EdgeftError(f"The checkpoint holds tensors the tail does not take: {unknown[:3]}.", where=str(eval_graph),
                          hint="deploy a run trained from this package.")
    for name, value in trained.items():
        shape = [d.dim_value for d in declared[name].type.tensor_type.shape.dim]
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32).reshape(shape), name))
    extracted = onnx.utils.Extractor(model).extract_model([n for n in inputs if n in declared], [output])
    extracted.ir_version = model.ir_version
    onnx.save(extracted, str(out))
    return extracted


def join_prefix_and_tail(prefix_path: Path, tail_path: Path, out: Path) -> onnx.ModelProto:
    """One model: the prefix's inputs in, the tail's output out; the tail's tensors are renamed
    into ``tail/`` except the boundary and raw inputs it shares with the prefix."""
    prefix, tail = onnx.load(str(prefix_path)), onnx.load(str(tail_path))
    shared = {i.name for i in tail.graph.input} | {o.name for o in tail.graph.output}
    prefix_names = {n for node in prefix.graph.node for n in [*node.input, *node.output]} | \
        {i.name for i in prefix.graph.initializer} | {i.name for i in prefix.graph.input}

    def rename(name: str) -> str:
        return name if not name or name in shared else TAIL_NAMESPACE + name

    for init in tail.graph.initializer:
        init.name = rename(init.name)
    for node in tail.graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = TAIL_NAMESPACE + node.name if node.name else node.name
    clashes = ({i.name for i in tail.graph.initializer} | {o for n in tail.graph.node for o in n.output}) & prefix_names
    if clashes:
        raise EdgeftError(f"The prefix and the tail both define {sorted(clashes)[:3]}.", where=str(tail_path),
                          hint="report this model; deploy from the artifact folder meanwhile.")
    made = {o.name for o in prefix.graph.output} | {i.name for i in prefix.graph.input}
    unmet = [i.name for i in tail.graph.input if i.name not in made]
    if unmet:
        raise EdgeftError(f"The tail reads {unmet[:3]}, which the package's prefix neither takes nor computes.",
                          where=str(tail_path), hint="the run does not belong to this package; re-export it.")
    opsets: dict[str, int] = {}
    for entry in [*prefix.opset_import, *tail.opset_import]:
        opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    graph = helper.make_graph([*prefix.graph.node, *tail.graph.node], "edgeft-bundle", list(prefix.graph.input),
                              list(tail.graph.output), [*prefix.graph.initializer, *tail.graph.initializer])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              producer_name="edgeft")
    model.ir_version = max(prefix.ir_version, tail.ir_version)
    onnx.save(model, str(out))
    return model
