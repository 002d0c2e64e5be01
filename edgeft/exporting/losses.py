"""The training losses as graph blocks, written as ONNX Runtime's loss blocks define them
(mean reduction), in primitive operators so onnx-ad can differentiate them (ORT's
``SoftmaxCrossEntropyLoss`` function body slices a dynamic shape, which onnx-ad cannot invert)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeft.exporting.graph_tools import Names, const


def add_loss(graph: onnx.GraphProto, names: Names, loss: str, output: str, num_outputs: int) -> None:
    """``loss`` (a scalar) from ``output`` and ``labels``, as ORT's loss blocks define it (mean reduction)."""
    if loss == "cross-entropy":
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"]))
        axis = const(graph, names, "loss.axis", np.array([1], np.int64))
        logp, target, picked, mean = (names(f"loss.{s}") for s in ("log_prob", "target", "picked", "mean"))
        graph.node.extend([helper.make_node("LogSoftmax", [output], [logp], axis=1),
                           helper.make_node("Unsqueeze", ["labels", axis], [target]),
                           helper.make_node("GatherElements", [logp, target], [picked], axis=1),
                           helper.make_node("ReduceMean", [picked], [mean], keepdims=0),
                           helper.make_node("Neg", [mean], ["loss"])])
    else:
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["batch", num_outputs]))
        if loss == "bce":  # ORT: -(log(sigmoid(x)) * y + log(1 - sigmoid(x)) * (1 - y))
            one = const(graph, names, "loss.one", np.array(1.0, np.float32))
            sig, lsig, pos, rest, lrest, neg_y, negs, total, elem = (names(f"loss.{s}") for s in (
                "sigmoid", "log_sigmoid", "positive", "one_minus_sigmoid", "log_rest", "one_minus_y", "negative",
                "sum", "elementwise"))
            graph.node.extend([helper.make_node("Sigmoid", [output], [sig]),
                               helper.make_node("Log", [sig], [lsig]),
                               helper.make_node("Mul", [lsig, "labels"], [pos]),
                               helper.make_node("Sub", [one, sig], [rest]),
                               helper.make_node("Log", [rest], [lrest]),
                               helper.make_node("Sub", [one, "labels"], [neg_y]),
                               helper.make_node("Mul", [lrest, neg_y], [negs]),
                               helper.make_node("Add", [pos, negs], [total]),
                               helper.make_node("Neg", [total], [elem])])
        else:
            diff, elem = names("loss.difference"), names("loss.elementwise")
            graph.node.append(helper.make_node("Sub", [output, "labels"], [diff]))
            graph.node.append(helper.make_node("Mul", [diff, diff], [elem]) if loss == "mse"
                              else helper.make_node("Abs", [diff], [elem]))
        graph.node.append(helper.make_node("ReduceMean", [elem], ["loss"], keepdims=0))
    graph.output.insert(0, helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
