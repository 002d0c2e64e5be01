"""The training losses as composable graph blocks, written once for both training backends.

A :class:`Block` writes a scalar loss into an existing graph from the model's output and the
``labels`` input it declares, in primitive operators so onnx-ad can differentiate it (ONNX
Runtime's own ``SoftmaxCrossEntropyLoss`` function body slices a dynamic shape, which onnx-ad
cannot invert). Blocks compose like ONNX Runtime's ``onnxblock`` losses: :class:`WithL2SP` adds
the L2-SP term of :mod:`edgeft.exporting.l2sp` to any task loss. The portable step graphs write
a block before onnx-ad differentiates them (:func:`add_loss`); :func:`as_onnxblock` hands the
same block to ONNX Runtime's artifact generator, so both backends train the same loss graph.

The losses compute what ONNX Runtime's loss blocks compute (mean reduction); the contrastive
loss of the embedding task has no ONNX Runtime block.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeft.errors import EdgeftError
from edgeft.exporting.graph_tools import Names, const
from edgeft.exporting.l2sp import append_penalty
from edgeft.tasks import TEMPERATURE


def add_contrastive(graph: onnx.GraphProto, names: Names, output: str, loss: str = "loss",
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


class Block:
    """A loss block: ``write(graph, names, output, loss)`` reads the model output ``output`` and
    the ``labels`` input it declares, and writes the scalar ``loss``. ``names``: fresh names."""

    def write(self, graph: onnx.GraphProto, names: Names, output: str, loss: str) -> None:
        raise NotImplementedError


class CrossEntropy(Block):
    """Softmax cross-entropy over the classes, with int64 class ids [batch]."""

    def write(self, graph: onnx.GraphProto, names: Names, output: str, loss: str) -> None:
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"]))
        axis = const(graph, names, "loss.axis", np.array([1], np.int64))
        logp, target, picked, mean = (names(f"loss.{s}") for s in ("log_prob", "target", "picked", "mean"))
        graph.node.extend([helper.make_node("LogSoftmax", [output], [logp], axis=1),
                           helper.make_node("Unsqueeze", ["labels", axis], [target]),
                           helper.make_node("GatherElements", [logp, target], [picked], axis=1),
                           helper.make_node("ReduceMean", [picked], [mean], keepdims=0),
                           helper.make_node("Neg", [mean], [loss])])


class _PerOutput(Block):
    """A loss of float labels [batch, outputs], averaged over every element."""

    def __init__(self, num_outputs: int) -> None:
        self.num_outputs = num_outputs

    def write(self, graph: onnx.GraphProto, names: Names, output: str, loss: str) -> None:
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["batch", self.num_outputs]))
        elementwise = self.elementwise(graph, names, output)
        graph.node.append(helper.make_node("ReduceMean", [elementwise], [loss], keepdims=0))

    def elementwise(self, graph: onnx.GraphProto, names: Names, output: str) -> str:
        raise NotImplementedError


class BinaryCrossEntropy(_PerOutput):
    """Sigmoid then binary cross-entropy per output (multi-label), as ORT's
    ``BCEWithLogitsLoss``: ``-(log(sigmoid(x)) y + log(1 - sigmoid(x)) (1 - y))``."""

    def elementwise(self, graph: onnx.GraphProto, names: Names, output: str) -> str:
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
        return elem


class MeanSquaredError(_PerOutput):
    def elementwise(self, graph: onnx.GraphProto, names: Names, output: str) -> str:
        diff, elem = names("loss.difference"), names("loss.elementwise")
        graph.node.extend([helper.make_node("Sub", [output, "labels"], [diff]),
                           helper.make_node("Mul", [diff, diff], [elem])])
        return elem


class MeanAbsoluteError(_PerOutput):
    def elementwise(self, graph: onnx.GraphProto, names: Names, output: str) -> str:
        diff, elem = names("loss.difference"), names("loss.elementwise")
        graph.node.extend([helper.make_node("Sub", [output, "labels"], [diff]),
                           helper.make_node("Abs", [diff], [elem])])
        return elem


class Contrastive(Block):
    """The embedding task's loss over L2-normalised embeddings and int64 group ids (:func:`add_contrastive`)."""

    def __init__(self, temperature: float = TEMPERATURE) -> None:
        self.temperature = temperature

    def write(self, graph: onnx.GraphProto, names: Names, output: str, loss: str) -> None:
        add_contrastive(graph, names, output, loss, self.temperature)


class WithL2SP(Block):
    """``task`` plus the L2-SP term over ``tensors`` (:func:`edgeft.exporting.l2sp.append_penalty`),
    pulled toward ``values``, or toward their initializers in the graph when ``values`` is None."""

    def __init__(self, task: Block, tensors: list[str], values: Mapping[str, np.ndarray] | None = None) -> None:
        self.task, self.tensors, self.values = task, tensors, values

    def write(self, graph: onnx.GraphProto, names: Names, output: str, loss: str) -> None:
        self.task.write(graph, names, output, loss)
        task = names("loss.task")
        for node in graph.node:
            node.output[:] = [task if o == loss else o for o in node.output]
        wanted = set(self.tensors)
        values = self.values if self.values is not None else {
            i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in wanted}
        append_penalty(graph, task, self.tensors, values, loss, names)


def loss_block(loss: str, num_outputs: int) -> Block:
    """The block of a loss named as the CLI names it."""
    blocks = {"cross-entropy": CrossEntropy, "contrastive": Contrastive, "bce": lambda: BinaryCrossEntropy(num_outputs),
              "mse": lambda: MeanSquaredError(num_outputs), "l1": lambda: MeanAbsoluteError(num_outputs)}
    if loss not in blocks:
        raise EdgeftError(f"Unknown loss {loss!r}.", where="--loss", hint=f"use one of: {', '.join(blocks)}.")
    return blocks[loss]()


def add_loss(graph: onnx.GraphProto, names: Names, block: Block, output: str) -> None:
    """The portable graphs' loss: ``block`` writes the graph output ``loss`` from ``output``."""
    block.write(graph, names, output, "loss")
    graph.output.insert(0, helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))


def as_onnxblock(block: Block):  # -> onnxruntime.training.onnxblock.Block
    """``block`` as an ``onnxblock`` loss, for ONNX Runtime's artifact generator."""
    from onnxruntime.training import onnxblock

    class EdgeftLoss(onnxblock.Block):
        def build(self, output: str) -> str:
            graph = self.base.graph
            names = Names(graph)
            loss = names("loss")
            block.write(graph, names, output, loss)
            return loss

    return EdgeftLoss()
