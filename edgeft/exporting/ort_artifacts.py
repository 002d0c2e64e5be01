"""ONNX Runtime's artifact generator, wrapped: graph repairs first, quiet logs, clear failures.

``generate`` turns a forward graph into training / eval / optimizer models and a checkpoint,
then lowers IR versions to what the installed runtime loads and gives the loss's target input
the one name ``labels``. A gradient the runtime cannot build is explained by operator and node.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import onnx

from edgeft.errors import EdgeftError
from edgeft.exporting.repairs import declare_optional_outputs, lower_ir_versions, rename_label_input
from edgeft.ortcompat import captured_native_output, max_ir_version, quiet_runtime

ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx")


def _gradient_failed(model: onnx.ModelProto, exc: Exception, log: str) -> EdgeftError:
    """Explain a gradient-builder failure: which op and node, and what to try instead."""
    text = f"{exc}\n{log}"
    match = re.search(r"not been registered: (\w+) for node ?(\S*)", text)
    if match:
        op, node = match.group(1), match.group(2)
        if not node:  # unnamed node: name it by its first output
            node = next((n.output[0] for n in model.graph.node if n.op_type == op), "?")
        return EdgeftError(
            f"ONNX Runtime has no gradient for the operator {op} (node {node}), "
            "which lies between the loss and a trainable parameter.",
            where=f"operator {op}, node {node}",
            hint="train only parameters that come after that node (e.g. --train head, or a smaller last:N).")
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return EdgeftError(f"ONNX Runtime could not build the training graph: {last}",
                       where="onnxruntime.training.artifacts.generate_artifacts",
                       hint="try a smaller trainable set (--train head).")


def _width(model: onnx.ModelProto, output: str) -> int:
    """The size of the last axis of the graph output ``output`` (the labels' width of a per-output loss)."""
    for value in model.graph.output:
        if value.name == output:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[-1].HasField("dim_value"):
                return dims[-1].dim_value
    raise EdgeftError(f"The model output {output!r} has no fixed last dimension.", where="forward graph",
                      hint="export a model whose output has a fixed number of values per example.")


def generate(model: onnx.ModelProto, trainable: list[str], frozen: list[str], loss_name: str, optimizer: str,
             output: str, stage: Path, prefix: str = "", l2sp: list[str] | None = None) -> list[str]:
    """Repair ``model``, build its ORT training artifacts in ``stage``; returns the repairs made.

    ``l2sp`` names the tensors the L2-SP term pulls toward their values in ``model`` (None: no term)."""
    from onnxruntime.training import artifacts
    from onnxruntime.training.onnxblock import _graph_utils

    from edgeft.exporting.losses import WithL2SP, as_onnxblock, loss_block

    # onnxblock numbers the names it generates with a process-wide counter; restart it so the
    # same model always gives the same bytes, however many exports ran before in this process
    _graph_utils._GRAPH_TOKEN = 0

    block = loss_block(loss_name, _width(model, output))
    loss = as_onnxblock(block if l2sp is None else WithL2SP(block, l2sp))  # the portable graphs' own loss
    optim = {"adamw": artifacts.OptimType.AdamW, "sgd": artifacts.OptimType.SGD}[optimizer]
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    repairs = declare_optional_outputs(graph)
    quiet_runtime()
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with captured_native_output() as native:
            try:
                artifacts.generate_artifacts(graph, requires_grad=trainable, frozen_params=frozen, loss=loss,
                                             optimizer=optim, artifact_directory=str(stage), prefix=prefix,
                                             additional_output_names=[output])
            except OSError:  # writing the models failed (e.g. a full disk): the caller reports the folder
                raise
            except Exception as exc:  # the gradient builder raises RuntimeError / Fail with a C++ message
                failure = exc
            else:
                failure = None
        if failure is not None:
            raise _gradient_failed(model, failure, "".join(native)) from failure
    finally:
        logger.setLevel(level)
    files = [f"{prefix}{name}" for name in ARTIFACT_FILES]
    repairs += lower_ir_versions(stage, files, max_ir_version())
    rename_label_input(stage, files[:2], [i.name for i in model.graph.input])
    return repairs


ORT_FORMAT = "ort-training"


def require_training_api(where: str) -> None:
    """A clear error when ONNX Runtime's training API (onnxruntime-training-cpu) is not installed."""
    from edgeft.ortcompat import TRAINING_INSTALL_HINT, has_training_api

    if not has_training_api():
        raise EdgeftError("ONNX Runtime's training API is not installed here (plain onnxruntime has none).",
                          where=where,
                          hint=TRAINING_INSTALL_HINT + "; or leave it out: the portable format trains everywhere.")


def write_ort_training(forward: onnx.ModelProto, tail: onnx.ModelProto | None, trainable: list[str],
                       frozen: list[str], loss: str, optimizer: str, output: str, stage: Path,
                       l2sp: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """ORT training artifacts of the full graph and, with a frozen-prefix split, of the tail;
    returns (manifest file keys, repairs made)."""
    from edgeft.manifest import TAIL_PREFIX

    require_training_api("--format ort-training")
    repairs = generate(forward, trainable, frozen, loss, optimizer, output, stage, l2sp=l2sp)
    files = {"training_model": "training_model.onnx", "eval_model": "eval_model.onnx",
             "optimizer_model": "optimizer_model.onnx", "checkpoint": "checkpoint"}
    if tail is not None:
        tail_params = {i.name for i in tail.graph.initializer}
        generate(tail, trainable, [n for n in frozen if n in tail_params], loss, optimizer, output, stage,
                 prefix=TAIL_PREFIX, l2sp=l2sp)
        files.update({f"{TAIL_PREFIX}{key}": f"{TAIL_PREFIX}{path}" for key, path in files.items()})
    return files, repairs
