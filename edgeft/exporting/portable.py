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

from edgeft.backends.portable import ADAMW, CHECKPOINT, EVAL, GRAD_SUFFIX, OPTIMIZER, STEP
from edgeft.backends.state import write_state
from edgeft.errors import EdgeftError
from edgeft.exporting.conv_rules import convolution_rules
from edgeft.exporting.graph_tools import Names, const, inferred_shapes, prune
from edgeft.exporting.losses import WithL2SP, add_loss, loss_block
from edgeft.exporting.optimizers import build_optimizer
from edgeft.exporting.rewrites import explicit_conv_pads, global_average_pools, tile_as_expand
from edgeft.exporting.simplify import agree, simplify
from edgeft.manifest import L2SP_INPUT

_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "PRelu"}


# --- the forward graph, prepared for differentiation ----------------------------------------

def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    return {name: len(shape) for name, shape in inferred_shapes(model).items()}


def _flatten_linear(model: onnx.ModelProto, names: Names) -> int:
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
        minus_one = const(graph, names, f"{stem}.minus_one", np.array([-1], np.int64))
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


def _constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors whose values follow from the initializers alone (no graph input reaches them)."""
    known = {i.name for i in graph.initializer} - {i.name for i in graph.input}
    for node in graph.node:
        if all(name in known for name in node.input if name):
            known.update(node.output)
    return known


def _run_time_mode(graph: onnx.GraphProto, names: Names, mode: str) -> tuple[str, list[onnx.NodeProto]]:
    """``mode`` and-ed with a truth the graph only knows when it runs (the first input's size is
    not 0; its batch axis is dynamic), so that onnx-ad's constant folding, which evaluates any node
    whose inputs are all known, cannot fold a live Dropout into one fixed mask."""
    size, zero, nonempty, live = names(f"{mode}.size"), names(f"{mode}.zero"), names(f"{mode}.nonempty"), names(f"{mode}.live")
    graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), zero))
    return live, [helper.make_node("Size", [graph.input[0].name], [size]),
                  helper.make_node("Greater", [size, zero], [nonempty]),
                  helper.make_node("And", [mode, nonempty], [live])]


def _masked_dropout(graph: onnx.GraphProto, names: Names, training: bool) -> int:
    """Dropout(x) -> x * Dropout(ones like x): the same mask and scale, and a product onnx-ad
    differentiates; without ``training`` the Dropout nodes become identities.

    A dropout on values the example does not change (DeBERTa's relative-position embeddings) reads
    only constants, which onnx-ad would fold into one random mask kept for every step (and different
    in every export); its mode is made a run-time value (:func:`_run_time_mode`)."""
    constant = _constant_tensors(graph) if training else set()
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
            const(graph, names, f"{y}.ratio", np.array(0.5, np.float32))
        if x in constant and mode in constant:
            mode, reads_input = _run_time_mode(graph, names, mode)
            nodes += reads_input
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


def prepare(model: onnx.ModelProto, trainable: list[str], loss: str, output: str, num_outputs: int,
            training: bool, l2sp: list[str] | None = None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Forward graph + loss (+ the L2-SP term over ``l2sp``, see :mod:`edgeft.exporting.l2sp`) with
    the trainable tensors as inputs; also returns their values."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    graph = prepared.graph
    names = Names(prepared)
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
        tile_as_expand(prepared, names)
        global_average_pools(prepared, names)
        explicit_conv_pads(prepared)
    block = loss_block(loss, num_outputs)
    add_loss(graph, names, block if l2sp is None else WithL2SP(block, l2sp, values), output)
    return prepared, values


# --- clean-up of the emitted graphs ---------------------------------------------------------

def _full_rank_scalars(model: onnx.ModelProto) -> int:
    """Give single-element operands of elementwise ops the rank of the node's output (exact; see
    the module docstring). Constants are reshaped in place, computed values through a Reshape."""
    graph = model.graph
    shapes = inferred_shapes(model)
    inits = {i.name: i for i in graph.initializer}
    names = Names(model)
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
    prune(model)
    _full_rank_scalars(model)
    prune(model)
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
        with convolution_rules():
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
            simplified, count = simplify(step, _sample_feeds(step, feeds, values, loss, num_outputs, PROBE_SIZES))
            check = _sample_feeds(step, feeds, values, loss, num_outputs, CHECK_SIZES)
            if count and agree(step, simplified, check):
                step = _finish(simplified, ir_version, "portable_step")
        except Exception:  # noqa: BLE001 -- a speed-up only: the unsimplified graph is exact
            pass
    return step, values


def build_eval(model: onnx.ModelProto, trainable: list[str], loss: str, output: str, num_outputs: int,
               ir_version: int, l2sp: list[str] | None = None) -> onnx.ModelProto:
    """Forward + loss with dropout off: inputs as the step graph, outputs loss and the model output."""
    prepared, _ = prepare(model, trainable, loss, output, num_outputs, training=False, l2sp=l2sp)
    outputs = {o.name: o for o in prepared.graph.output}
    del prepared.graph.output[:]
    prepared.graph.output.extend([outputs["loss"], outputs[output]])
    return _finish(prepared, ir_version, "portable_eval")


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
