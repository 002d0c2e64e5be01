"""The portable training backend's graphs: a training step made of standard ONNX operators only.

ONNX Runtime's training API (and its gradient builder) exists only in the training builds,
which stopped at 1.19.2 and never shipped for Linux aarch64. Plain onnxruntime runs on every
platform, so export also writes, next to the ORT training artifacts:

- ``{prefix}portable_step.onnx``: inputs are the model inputs the graph reads, ``labels`` and
  the trainable tensors; outputs are ``loss``, the model output and one ``<name>_grad`` per
  trainable tensor (forward, loss and reverse-mode gradients, dropout active);
- ``{prefix}portable_eval.onnx``: the same inputs, outputs ``loss`` and the model output
  (dropout off);
- ``portable_optimizer.onnx``: one update of every trainable tensor (AdamW exactly as ORT's
  ``AdamWOptimizer`` in its transformers mode, or SGD), parameters, gradients and moments in,
  new parameters and moments out, with ``learning_rate``, ``step`` and ``weight_decay`` fed;
- ``portable_checkpoint.npz``: the initial values of the trainable tensors.

Gradients come from ``onnx-ad`` (reverse mode over the ONNX graph, every rule emitting
standard operators). The forward graph is prepared first so that what onnx-ad emits runs
fast and is exact: Linear layers on 3-D activations are flattened to 2-D products (a single
GEMM for the weight gradient instead of a batched product and a reduction), the loss is
written with primitive operators (``SoftmaxCrossEntropyLoss``'s function body slices a
dynamic shape, which onnx-ad cannot invert), and training-mode Dropout becomes a product with
a mask that Dropout makes from ones (onnx-ad refuses to differentiate training-mode Dropout,
and the mask carries no gradient; ``onnxruntime.set_seed`` still decides the masks). Afterwards
the single seed is made a constant, the trailing seed axis of each gradient is dropped, scalar
constants get the rank of the tensors they scale (ONNX Runtime's CPU broadcasting is ~20x
slower for ``[..., 1] * [1]`` than for equal ranks), the run-time broadcasting machinery is
removed where sample batches show it does nothing (checked on other batch sizes before it is
kept), and dead nodes, identities and unused initializers are removed. Every name is derived
from the graph, so the same model always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeft.backends.portable import ADAMW, CHECKPOINT, EVAL, GRAD_SUFFIX, OPTIMIZER, STEP, optimizer_io
from edgeft.backends.state import write_state
from edgeft.errors import EdgeftError
from edgeft.exporting.l2sp import append_penalty
from edgeft.manifest import L2SP_INPUT

_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "PRelu"}


# --- the forward graph, prepared for differentiation ----------------------------------------

class _Names:
    """Fresh tensor names that cannot collide with the graph's own."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.taken = {i.name for i in g.input} | {i.name for i in g.initializer} | {o.name for o in g.output}
        self.taken |= {o for n in g.node for o in n.output} | {i for n in g.node for i in n.input}

    def __call__(self, stem: str) -> str:
        name, count = stem, 0
        while name in self.taken:
            count += 1
            name = f"{stem}_{count}"
        self.taken.add(name)
        return name


def _const(graph: onnx.GraphProto, names: _Names, stem: str, value: np.ndarray) -> str:
    name = names(stem)
    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's inferred shape (None for a symbolic dimension), where its rank is known."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, list[int | None]] = {i.name: list(i.dims) for i in model.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
    return shapes


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    return {name: len(shape) for name, shape in _shapes(model).items()}


def _flatten_linear(model: onnx.ModelProto, names: _Names) -> int:
    """MatMul(X[..., K], W[K, N]) -> Reshape(MatMul(Reshape(X, [-1, K]), W), [..., N]).

    The values do not change; the reverse rule of the 2-D product is one GEMM per gradient.
    """
    graph = model.graph
    ranks = _ranks(model)
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "MatMul" or ranks.get(node.input[1]) != 2 or ranks.get(node.input[0], 0) < 3:
            nodes.append(node)
            continue
        x, w, out = node.input[0], node.input[1], node.output[0]
        stem = out.replace("/", "_").strip("_") or "matmul"
        k_dim, n_dim = names(f"{stem}.k"), names(f"{stem}.n")
        lead, flat_shape, out_shape = names(f"{stem}.lead"), names(f"{stem}.flat_shape"), names(f"{stem}.shape")
        flat, product = names(f"{stem}.flat"), names(f"{stem}.2d")
        minus_one = _const(graph, names, f"{stem}.minus_one", np.array([-1], np.int64))
        nodes += [
            helper.make_node("Shape", [w], [k_dim], start=0, end=1),
            helper.make_node("Shape", [w], [n_dim], start=1),
            helper.make_node("Shape", [x], [lead], end=-1),
            helper.make_node("Concat", [minus_one, k_dim], [flat_shape], axis=0),
            helper.make_node("Reshape", [x, flat_shape], [flat]),
            helper.make_node("MatMul", [flat, w], [product], name=node.name),
            helper.make_node("Concat", [lead, n_dim], [out_shape], axis=0),
            helper.make_node("Reshape", [product, out_shape], [out]),
        ]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _masked_dropout(graph: onnx.GraphProto, names: _Names, training: bool) -> int:
    """Dropout(x) -> x * Dropout(ones like x): the same mask and scale, and a product onnx-ad
    differentiates; without ``training`` the Dropout nodes become identities."""
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "Dropout":
            nodes.append(node)
            continue
        count += 1
        x, y = node.input[0], node.output[0]
        mode = node.input[2] if len(node.input) > 2 and node.input[2] else None  # absent: inference
        if not training or mode is None:
            nodes.append(helper.make_node("Identity", [x], [y], name=node.name))
            if len(node.output) > 1 and node.output[1]:
                shape = names(f"{y}.shape")
                nodes += [helper.make_node("Shape", [x], [shape]),
                          helper.make_node("ConstantOfShape", [shape], [node.output[1]],
                                           value=helper.make_tensor("v", TensorProto.BOOL, [1], [True]))]
            continue
        ratio = node.input[1] if len(node.input) > 1 and node.input[1] else \
            _const(graph, names, f"{y}.ratio", np.array(0.5, np.float32))
        shape, ones, scale = names(f"{y}.shape"), names(f"{y}.ones"), names(f"{y}.scale")
        outputs = [scale] + ([node.output[1]] if len(node.output) > 1 and node.output[1] else [])
        seed = [a for a in node.attribute if a.name == "seed"]
        nodes += [helper.make_node("Shape", [x], [shape]),
                  helper.make_node("ConstantOfShape", [shape], [ones],
                                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
                  helper.make_node("Dropout", [ones, ratio, mode], outputs, name=node.name),
                  helper.make_node("Mul", [x, scale], [y])]
        nodes[-2].attribute.extend(seed)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _add_loss(graph: onnx.GraphProto, names: _Names, loss: str, output: str, num_outputs: int) -> None:
    """``loss`` (a scalar) from ``output`` and ``labels``, as ORT's loss blocks define it (mean reduction)."""
    if loss == "cross-entropy":
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"]))
        axis = _const(graph, names, "loss.axis", np.array([1], np.int64))
        logp, target, picked, mean = (names(f"loss.{s}") for s in ("log_prob", "target", "picked", "mean"))
        graph.node.extend([helper.make_node("LogSoftmax", [output], [logp], axis=1),
                           helper.make_node("Unsqueeze", ["labels", axis], [target]),
                           helper.make_node("GatherElements", [logp, target], [picked], axis=1),
                           helper.make_node("ReduceMean", [picked], [mean], keepdims=0),
                           helper.make_node("Neg", [mean], ["loss"])])
    else:
        graph.input.append(helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["batch", num_outputs]))
        if loss == "bce":  # ORT: -(log(sigmoid(x)) * y + log(1 - sigmoid(x)) * (1 - y))
            one = _const(graph, names, "loss.one", np.array(1.0, np.float32))
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


def prepare(model: onnx.ModelProto, trainable: list[str], loss: str, output: str, num_outputs: int,
            training: bool, l2sp: list[str] | None = None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Forward graph + loss (+ the L2-SP term over ``l2sp``, see :mod:`edgeft.exporting.l2sp`) with
    the trainable tensors as inputs; also returns their values."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    graph = prepared.graph
    names = _Names(prepared)
    if "loss" in names.taken or "labels" in names.taken:
        raise EdgeftError("The model already has a tensor named 'loss' or 'labels'.", where="forward graph",
                          hint="rename that tensor in the model.")
    wanted = set(trainable)
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in wanted}
    missing = [n for n in trainable if n not in values]
    if missing:
        raise EdgeftError(f"The trainable tensors {missing[:3]} are not initializers of the graph.",
                          where="forward graph", hint="re-export the model.")
    kept = [i for i in graph.initializer if i.name not in wanted]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for name in trainable:
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(values[name].shape)))
    _masked_dropout(graph, names, training)
    if training:
        _flatten_linear(prepared, names)
    _add_loss(graph, names, loss, output, num_outputs)
    if l2sp is not None:
        task = names("loss.task")
        for node in graph.node:
            node.output[:] = [task if o == "loss" else o for o in node.output]
        append_penalty(graph, task, l2sp, values, "loss", names)
    return prepared, values


# --- clean-up of the emitted graphs ---------------------------------------------------------

def _prune(model: onnx.ModelProto) -> None:
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


def _full_rank_scalars(model: onnx.ModelProto) -> int:
    """Give single-element operands of elementwise ops the rank of the node's output (exact; see
    the module docstring). Constants are reshaped in place, computed values through a Reshape."""
    graph = model.graph
    shapes = _shapes(model)
    inits = {i.name: i for i in graph.initializer}
    names = _Names(model)
    reshaped: dict[tuple[str, int], str] = {}
    nodes, count = [], 0
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in _ELEMENTWISE and out is not None:
            rank = len(out)
            for index, name in enumerate(node.input):
                shape = shapes.get(name)
                if shape is None or len(shape) >= rank or any(d != 1 for d in shape):
                    continue
                key = (name, rank)
                if key not in reshaped:
                    new = names(f"{name}.rank{rank}")
                    if name in inits:
                        value = numpy_helper.to_array(inits[name]).reshape([1] * rank)
                        graph.initializer.append(numpy_helper.from_array(value, new))
                    else:
                        target = names(f"{name}.rank{rank}.shape")
                        graph.initializer.append(numpy_helper.from_array(np.ones(rank, np.int64), target))
                        nodes.append(helper.make_node("Reshape", [name, target], [new]))
                    reshaped[key] = new
                node.input[index] = reshaped[key]
                count += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _skip_identities(model: onnx.ModelProto) -> None:
    """Let readers of an Identity's output read its input (graph outputs keep their Identity)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _finish(model: onnx.ModelProto, ir_version: int, stem: str) -> onnx.ModelProto:
    _skip_identities(model)
    _prune(model)
    _full_rank_scalars(model)
    _prune(model)
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{stem}/{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    del model.graph.value_info[:]
    model.ir_version = ir_version
    model.producer_name = "edgeft"
    model.graph.name = stem
    return model


# --- simplification from observed shapes ------------------------------------------------------
# onnx-ad cannot know a symbolic dimension's value, so it emits run-time machinery for the
# general case: reductions over the axes where an operand was broadcast (found with
# Shape/Equal/NonZero), Expands to the full shape, and Transposes that move the seed axis of
# size 1. Run on sample batches of different sizes (every dynamic axis >= 2), a node whose
# output shape equals its input shape in every run did not broadcast or reduce (a dimension
# that follows the data differs from 1 in the samples, so it cannot be a broadcast 1), and a
# Transpose that keeps the order of every axis but those of size 1 only relabels them. Those
# become Identity / Squeeze+Unsqueeze; the simplified graph is then checked against the
# original on batches of other sizes (batch 1 included) and kept only when they agree.

Feeds = Callable[[dict[str, int]], dict[str, np.ndarray]]
PROBE_SIZES = ({"batch": 2, "*": 5}, {"batch": 3, "*": 7})
CHECK_SIZES = ({"batch": 1, "*": 3}, {"batch": 4, "*": 2})


def _session(model: onnx.ModelProto):  # -> onnxruntime.InferenceSession, nothing fused or folded
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _observed_shapes(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, tuple[int, ...]]]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = _session(probe)
    names = [o.name for o in session.get_outputs()]
    return [{n: np.shape(v) for n, v in zip(names, session.run(None, feed))} for feed in feeds]


def _simplify(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, int]:
    observed = _observed_shapes(model, feeds)
    simplified = onnx.ModelProto()
    simplified.CopyFrom(model)
    graph = simplified.graph
    names = _Names(simplified)
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
    _prune(simplified)
    return simplified, count


def _sample_feeds(model: onnx.ModelProto, feeds: Feeds, values: dict[str, np.ndarray], loss: str,
                  num_outputs: int, sizes: tuple[dict[str, int], ...]) -> list[dict[str, np.ndarray]]:
    wanted = {i.name for i in model.graph.input}
    out = []
    for index, size in enumerate(sizes):
        feed = {k: v for k, v in feeds(size).items() if k in wanted}
        batch = next(iter(feed.values())).shape[0] if feed else size["batch"]
        rng = np.random.default_rng(index)
        feed["labels"] = (rng.integers(0, num_outputs, batch).astype(np.int64) if loss == "cross-entropy" else
                          rng.integers(0, 2, (batch, num_outputs)).astype(np.float32) if loss == "bce" else
                          rng.standard_normal((batch, num_outputs)).astype(np.float32))
        feed.update({k: v for k, v in values.items() if k in wanted})
        if L2SP_INPUT in wanted:  # pulls toward the values, so they are moved off them first
            feed[L2SP_INPUT] = np.array([0.5], np.float32)
            feed.update({k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.1
                         for k, v in values.items() if k in wanted})
        out.append(feed)
    return out


def _squeeze_seed(graph: onnx.GraphProto, adjoint: str, name: str, shape: list[int]) -> None:
    target = f"{name}{GRAD_SUFFIX}.shape"
    graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), target))
    graph.node.append(helper.make_node("Reshape", [adjoint, target], [f"{name}{GRAD_SUFFIX}"]))


def build_step(model: onnx.ModelProto, trainable: list[str], loss: str, output: str, num_outputs: int,
               ir_version: int, feeds: Feeds | None = None,
               l2sp: list[str] | None = None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The training-step graph and the trainable tensors' values (see the module docstring).

    ``feeds`` gives sample model inputs for axis sizes (``{"batch": 2, "*": 5}``: ``*`` for every
    other dynamic axis); with it the graph is simplified from observed shapes (see above)."""
    import onnx_ad

    prepared, values = prepare(model, trainable, loss, output, num_outputs, training=True, l2sp=l2sp)
    prefix = "portable.adjoint."
    try:
        derived = onnx_ad.reverse(prepared, inputs=trainable, outputs=["loss"], prefix=prefix, layout="onnx")
    except onnx_ad.UnsupportedOperator as exc:
        raise EdgeftError(f"The portable training step cannot be built: {exc}.", where="onnx-ad",
                          hint="train fewer layers (e.g. --train head), or report the operator.") from exc
    graph = derived.graph
    seeds = [i for i in graph.input if i.name == f"{prefix}loss"]
    graph.input.remove(seeds[0])
    graph.initializer.append(numpy_helper.from_array(np.ones([1], np.float32), f"{prefix}loss"))
    outputs = {o.name: o for o in graph.output}
    del graph.output[:]
    graph.output.extend([outputs["loss"], outputs[output]])
    for name in trainable:
        _squeeze_seed(graph, f"{prefix}{name}", name, list(values[name].shape))
        graph.output.append(helper.make_tensor_value_info(f"{name}{GRAD_SUFFIX}", TensorProto.FLOAT,
                                                          list(values[name].shape)))
    step = _finish(derived, ir_version, "portable_step")
    if feeds is not None:
        try:
            simplified, count = _simplify(step, _sample_feeds(step, feeds, values, loss, num_outputs, PROBE_SIZES))
            check = _sample_feeds(step, feeds, values, loss, num_outputs, CHECK_SIZES)
            if count and _agree(step, simplified, check):
                step = _finish(simplified, ir_version, "portable_step")
        except Exception:  # noqa: BLE001 -- a speed-up only: the unsimplified graph is exact
            pass
    return step, values


def _agree(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> bool:
    """Both graphs give the same outputs (ORT's random seed reset before each run: the same
    dropout masks)."""
    import onnxruntime as ort

    first, second = _session(a), _session(b)
    for feed in feeds:
        ort.set_seed(7)
        x_out = first.run(None, feed)
        ort.set_seed(7)
        y_out = second.run(None, feed)
        for x, y in zip(x_out, y_out):
            if np.shape(x) != np.shape(y) or not np.allclose(x, y, rtol=1e-5, atol=1e-7):
                return False
    return True


def build_eval(model: onnx.ModelProto, trainable: list[str], loss: str, output: str, num_outputs: int,
               ir_version: int, l2sp: list[str] | None = None) -> onnx.ModelProto:
    """Forward + loss with dropout off: inputs as the step graph, outputs loss and the model output."""
    prepared, _ = prepare(model, trainable, loss, output, num_outputs, training=False, l2sp=l2sp)
    outputs = {o.name: o for o in prepared.graph.output}
    del prepared.graph.output[:]
    prepared.graph.output.extend([outputs["loss"], outputs[output]])
    return _finish(prepared, ir_version, "portable_eval")


# --- the optimizer -------------------------------------------------------------------------

def build_optimizer(optimizer: str, shapes: list[list[int]], ir_version: int, opset: int = 17) -> onnx.ModelProto:
    """One optimizer step over every trainable tensor, as ORT's optimizers compute it.

    AdamW (ORT ``AdamWOptimizer``, ``adam_mode=1``, bias correction on): ``m1 = b1 m1 + (1-b1) g``,
    ``m2 = b2 m2 + (1-b2) g^2``, ``p -= lr sqrt(1-b2^t)/(1-b1^t) m1 / (sqrt(m2) + eps)``, then
    ``p -= lr wd p`` (one pass: ``p *= 1 - lr wd``). SGD: ``p -= lr g``. ``step`` is the 1-based number of this update.
    """
    names = [f"{i}" for i in range(len(shapes))]
    inputs, outputs = optimizer_io(optimizer, names)
    value_infos = [helper.make_tensor_value_info("learning_rate", TensorProto.FLOAT, []),
                   helper.make_tensor_value_info("step", TensorProto.INT64, []),
                   helper.make_tensor_value_info("weight_decay", TensorProto.FLOAT, [])]
    for name in inputs[3:]:
        value_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[int(name.split(".")[1])]))
    out_infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[int(n.split(".")[1])]) for n in outputs]
    inits, nodes = [], []

    def const(name: str, value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    if optimizer == "adamw":
        b1, b2 = const("beta1", ADAMW["beta1"]), const("beta2", ADAMW["beta2"])
        one, eps = const("one", 1.0), const("epsilon", ADAMW["epsilon"])
        c1, c2 = const("one_minus_beta1", 1.0 - ADAMW["beta1"]), const("one_minus_beta2", 1.0 - ADAMW["beta2"])
        nodes += [helper.make_node("Cast", ["step"], ["step_f"], to=TensorProto.FLOAT),
                  helper.make_node("Pow", [b1, "step_f"], ["b1_t"]),
                  helper.make_node("Pow", [b2, "step_f"], ["b2_t"]),
                  helper.make_node("Sub", [one, "b1_t"], ["correction1"]),
                  helper.make_node("Sub", [one, "b2_t"], ["correction2"]),
                  helper.make_node("Sqrt", ["correction2"], ["sqrt_correction2"]),
                  helper.make_node("Mul", ["learning_rate", "sqrt_correction2"], ["lr_scaled"]),
                  helper.make_node("Div", ["lr_scaled", "correction1"], ["lr_corrected"]),
                  helper.make_node("Mul", ["learning_rate", "weight_decay"], ["decay"]),
                  helper.make_node("Sub", [one, "decay"], ["keep"])]
        for i in names:
            p, g, m1, m2 = f"param.{i}", f"grad.{i}", f"m1.{i}", f"m2.{i}"
            nodes += [helper.make_node("Mul", [b1, m1], [f"a.{i}"]),
                      helper.make_node("Mul", [c1, g], [f"b.{i}"]),
                      helper.make_node("Add", [f"a.{i}", f"b.{i}"], [f"new_m1.{i}"]),
                      helper.make_node("Mul", [g, g], [f"g2.{i}"]),
                      helper.make_node("Mul", [b2, m2], [f"c.{i}"]),
                      helper.make_node("Mul", [c2, f"g2.{i}"], [f"d.{i}"]),
                      helper.make_node("Add", [f"c.{i}", f"d.{i}"], [f"new_m2.{i}"]),
                      helper.make_node("Sqrt", [f"new_m2.{i}"], [f"root.{i}"]),
                      helper.make_node("Add", [f"root.{i}", eps], [f"denom.{i}"]),
                      helper.make_node("Div", [f"new_m1.{i}", f"denom.{i}"], [f"ratio.{i}"]),
                      helper.make_node("Mul", ["lr_corrected", f"ratio.{i}"], [f"update.{i}"]),
                      helper.make_node("Sub", [p, f"update.{i}"], [f"stepped.{i}"]),
                      # p - lr wd p after the update, as one pass over the tensor: p (1 - lr wd)
                      helper.make_node("Mul", [f"stepped.{i}", "keep"], [f"new_param.{i}"])]
    elif optimizer == "sgd":
        for i in names:
            nodes += [helper.make_node("Mul", ["learning_rate", f"grad.{i}"], [f"update.{i}"]),
                      helper.make_node("Sub", [f"param.{i}", f"update.{i}"], [f"new_param.{i}"])]
    else:
        raise EdgeftError(f"Unknown optimizer {optimizer!r}.", where="--optimizer", hint="use adamw or sgd.")
    for index, node in enumerate(nodes):
        node.name = f"optimizer/{node.op_type}_{index}"
    graph = helper.make_graph(nodes, f"portable_{optimizer}", value_infos, out_infos, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeft")
    model.ir_version = ir_version
    return model


# --- files ---------------------------------------------------------------------------------

def write_portable(model: onnx.ModelProto, trainable: list[str], loss: str, optimizer: str, output: str,
                   num_outputs: int, stage: Path, prefix: str, ir_version: int, shared: bool = True,
                   feeds: Feeds | None = None,
                   l2sp: list[str] | None = None) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Write the step and eval graphs of ``model`` (with ``prefix``) and, with ``shared``, the
    optimizer graph and initial checkpoint; returns (manifest file keys, trainable values)."""
    step, values = build_step(model, trainable, loss, output, num_outputs, ir_version, feeds, l2sp)
    onnx.save(step, str(stage / f"{prefix}{STEP}"))
    evaluation = build_eval(model, trainable, loss, output, num_outputs, ir_version, l2sp)
    onnx.save(evaluation, str(stage / f"{prefix}{EVAL}"))
    files = {f"{prefix}portable_step": f"{prefix}{STEP}", f"{prefix}portable_eval": f"{prefix}{EVAL}"}
    if shared:
        opt = build_optimizer(optimizer, [list(values[n].shape) for n in trainable], ir_version)
        onnx.save(opt, str(stage / OPTIMIZER))
        write_state(stage / CHECKPOINT, trainable, [values[n] for n in trainable], optimizer)
        files.update({"portable_optimizer": OPTIMIZER, "portable_checkpoint": CHECKPOINT})
    return files, values


def export_portable(model: onnx.ModelProto, trainable: list[str], loss: str, optimizer: str, output: str,
                    num_outputs: int, stage: Path, prefix: str, feeds: Feeds | None = None,
                    l2sp: list[str] | None = None) -> tuple[dict[str, str], dict]:
    """Write the portable set for ``model`` (the tail with ``prefix`` tail_, else the full graph);
    returns (manifest file keys, manifest section). A graph onnx-ad cannot differentiate is an
    export error naming what is missing: the portable graphs are how edgeft trains everywhere."""
    import onnx_ad

    from edgeft.ortcompat import max_ir_version

    hint = ("train fewer layers (e.g. --train head), or, on Linux x86_64 / macOS arm64, write ONNX Runtime's "
            "training artifacts instead (--format ort-training, see the README).")
    try:
        files, _ = write_portable(model, trainable, loss, optimizer, output, num_outputs, stage, prefix,
                                  min(model.ir_version, max_ir_version()), feeds=feeds, l2sp=l2sp)
    except EdgeftError as exc:
        raise EdgeftError(exc.what, where=exc.where, hint=hint) from exc
    except Exception as exc:  # noqa: BLE001 -- onnx-ad's own failures: name them
        raise EdgeftError(f"The portable training graphs cannot be built: onnx-ad failed on this graph "
                          f"({type(exc).__name__}: {str(exc)[:300]}).", where="onnx-ad", hint=hint) from exc
    section = {"available": True, "graphs": "tail" if prefix else "full", "optimizer": optimizer,
               "gradients": f"onnx-ad {onnx_ad.__version__}"}
    if optimizer == "adamw":
        section["adamw"] = {**ADAMW, "bias_correction": True, "weight_decay": "after the update (ORT adam_mode 1)"}
    return files, section
