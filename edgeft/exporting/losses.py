"""The training losses as graph blocks, written as ONNX Runtime's loss blocks define them
(mean reduction), in primitive operators so onnx-ad can differentiate them (ORT's
``SoftmaxCrossEntropyLoss`` function body slices a dynamic shape, which onnx-ad cannot invert).

The contrastive loss of the embedding task has no ORT block: :func:`add_contrastive` writes it
into a graph once, and both the portable step graphs and ONNX Runtime's training graphs (through
:func:`ort_contrastive_block`) use it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeft.exporting.graph_tools import Names, const
from edgeft.tasks import TEMPERATURE


def add_contrastive(graph: onnx.GraphProto, names, output: str, loss: str = "loss",
                    temperature: float = TEMPERATURE) -> None:
    """``loss`` from the L2-normalised embeddings ``output`` [batch, dim] and ``labels`` [batch]
    (int64 group ids): multiple-negatives ranking with in-batch negatives, generalised to groups.

    For each example i, the candidates are every other example of the batch and the positives
    those of its group: ``loss_i = -log(sum_pos exp(s_ij / t) / sum_(j != i) exp(s_ij / t))`` with
    ``s`` the cosine similarity, averaged over the examples that have a positive (one without
    one still serves as a negative for the others). With (query, positive) pairs as two-example
    groups this is SimCLR's NT-Xent, the symmetric form of sentence-transformers'
    MultipleNegativesRankingLoss. Similarities are shifted by the largest possible one (1) so
    every exponent is <= 0; the shift cancels in the ratio. ``names``: a fresh-name function."""
    graph.input.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"]))
    n = {s: names(f"contrastive.{s}") for s in (
        "transposed", "cosine", "shifted", "scaled", "exp", "count", "size", "range", "row", "column", "eye",
        "others", "group_row", "group_column", "same", "positive", "positive_f", "others_f", "masked_all",
        "masked_pos", "denominator", "numerator", "positives", "has_positive", "no_positive", "den_safe",
        "num_safe", "log_den", "log_num", "difference", "weighted", "total", "examples", "examples_safe")}
    one = const(graph, names, "contrastive.one", np.array(1.0, np.float32))
    inverse = const(graph, names, "contrastive.inverse_temperature", np.array(1.0 / temperature, np.float32))
    zero_i, one_i = (const(graph, names, f"contrastive.{k}", np.array(v, np.int64)) for k, v in (("start", 0), ("step", 1)))
    axis0, axis1 = (const(graph, names, f"contrastive.axis{a}", np.array([a], np.int64)) for a in (0, 1))
    graph.node.extend([
        helper.make_node("Transpose", [output], [n["transposed"]], perm=[1, 0]),
        helper.make_node("MatMul", [output, n["transposed"]], [n["cosine"]]),
        helper.make_node("Sub", [n["cosine"], one], [n["shifted"]]),
        helper.make_node("Mul", [n["shifted"], inverse], [n["scaled"]]),
        helper.make_node("Exp", [n["scaled"]], [n["exp"]]),
        # masks from the labels alone (no gradient flows through them)
        helper.make_node("Shape", ["labels"], [n["count"]]),
        helper.make_node("Squeeze", [n["count"], axis0], [n["size"]]),
        helper.make_node("Range", [zero_i, n["size"], one_i], [n["range"]]),
        helper.make_node("Unsqueeze", [n["range"], axis1], [n["row"]]),
        helper.make_node("Unsqueeze", [n["range"], axis0], [n["column"]]),
        helper.make_node("Equal", [n["row"], n["column"]], [n["eye"]]),
        helper.make_node("Not", [n["eye"]], [n["others"]]),
        helper.make_node("Unsqueeze", ["labels", axis1], [n["group_row"]]),
        helper.make_node("Unsqueeze", ["labels", axis0], [n["group_column"]]),
        helper.make_node("Equal", [n["group_row"], n["group_column"]], [n["same"]]),
        helper.make_node("And", [n["same"], n["others"]], [n["positive"]]),
        helper.make_node("Cast", [n["positive"]], [n["positive_f"]], to=TensorProto.FLOAT),
        helper.make_node("Cast", [n["others"]], [n["others_f"]], to=TensorProto.FLOAT),
        helper.make_node("Mul", [n["exp"], n["others_f"]], [n["masked_all"]]),
        helper.make_node("Mul", [n["exp"], n["positive_f"]], [n["masked_pos"]]),
        helper.make_node("ReduceSum", [n["masked_all"], axis1], [n["denominator"]], keepdims=0),
        helper.make_node("ReduceSum", [n["masked_pos"], axis1], [n["numerator"]], keepdims=0),
        # 1 for an example with a positive, else 0; such rows get 1 added inside the logs (log 1 = 0)
        helper.make_node("ReduceSum", [n["positive_f"], axis1], [n["positives"]], keepdims=0),
        helper.make_node("Min", [n["positives"], one], [n["has_positive"]]),
        helper.make_node("Sub", [one, n["has_positive"]], [n["no_positive"]]),
        helper.make_node("Add", [n["denominator"], n["no_positive"]], [n["den_safe"]]),
        helper.make_node("Add", [n["numerator"], n["no_positive"]], [n["num_safe"]]),
        helper.make_node("Log", [n["den_safe"]], [n["log_den"]]),
        helper.make_node("Log", [n["num_safe"]], [n["log_num"]]),
        helper.make_node("Sub", [n["log_den"], n["log_num"]], [n["difference"]]),
        helper.make_node("Mul", [n["difference"], n["has_positive"]], [n["weighted"]]),
        helper.make_node("ReduceSum", [n["weighted"]], [n["total"]], keepdims=0),
        helper.make_node("ReduceSum", [n["has_positive"]], [n["examples"]], keepdims=0),
        helper.make_node("Max", [n["examples"], one], [n["examples_safe"]]),
        helper.make_node("Div", [n["total"], n["examples_safe"]], [loss]),
    ])


def ort_contrastive_block():  # -> onnxruntime.training.onnxblock.Block
    """:func:`add_contrastive` as an ``onnxblock`` loss, for ONNX Runtime's artifact generator."""
    from onnxruntime.training import onnxblock

    class ContrastiveLoss(onnxblock.Block):
        def build(self, output: str) -> str:
            graph = self.base.graph
            fresh = Names(graph)
            loss = fresh("loss")
            add_contrastive(graph, fresh, output, loss)
            return loss

    return ContrastiveLoss()


def add_loss(graph: onnx.GraphProto, names: Names, loss: str, output: str, num_outputs: int) -> None:
    """``loss`` (a scalar) from ``output`` and ``labels``, as ORT's loss blocks define it (mean reduction)."""
    if loss == "contrastive":
        add_contrastive(graph, names, output)
    elif loss == "cross-entropy":
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
