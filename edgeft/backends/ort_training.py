"""The ONNX Runtime Training API backend: train, eval and optimizer sessions over a checkpoint.

A thin, typed layer over ``onnxruntime.training.api`` so the training loop, the export smoke
test and evaluation share one way of opening artifacts and feeding batches.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeft.backends.ort_checkpoint import is_ort_checkpoint, write_ort_checkpoint
from edgeft.backends.state import (ORT_FILE, STATE_FILE, TrainableState, read_state, resolve_checkpoint,
                                   verify_checkpoint, write_state)
from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_bytes
from edgeft.manifest import L2SP_INPUT, Manifest
from edgeft.ortcompat import quiet_runtime, session_options, training_api
from edgeft.ortimport import skip_ortmodule

# Before anything here imports onnxruntime: its training build would otherwise import torch (see
# edgeft.ortimport). A no-op with plain onnxruntime, and once onnxruntime is imported.
skip_ortmodule()


class OrtTrainer:
    """Train / eval / optimizer sessions of one artifact set (``prefix`` selects e.g. the tail).

    ``checkpoint`` is an ORT checkpoint file, edgeft's ``.npz`` state (e.g. written by the
    portable backend) or a run checkpoint folder holding either. Implements
    :class:`edgeft.backends.trainer.Trainer`.
    """

    backend = "ort-training"
    weighted_steps = False  # whole batches only (see train_step)

    def __init__(self, manifest: Manifest, threads: int | None = None, checkpoint: Path | None = None,
                 prefix: str = "", optimizer_model: Path | None = None, l2sp: float | None = None) -> None:
        api = training_api()
        quiet_runtime()
        self.manifest = manifest
        self.l2sp = (manifest.l2sp or 0.0) if l2sp is None else float(l2sp)  # fed to training steps only
        imported = None
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            if checkpoint.is_dir() and (checkpoint / ORT_FILE).is_file():
                checkpoint = checkpoint / ORT_FILE
            if checkpoint.is_dir() or not _is_ort_checkpoint(checkpoint):
                imported = read_state(resolve_checkpoint(checkpoint))  # resolve_checkpoint verifies the hashes
                checkpoint = None
            else:
                verify_checkpoint(checkpoint)
        ckpt = checkpoint or manifest.path(f"{prefix}checkpoint")
        try:
            self._paths = (str(manifest.path(f"{prefix}training_model")), str(manifest.path(f"{prefix}eval_model")),
                           str(optimizer_model or manifest.path(f"{prefix}optimizer_model")))
            self._options = session_options(threads)
            self.state = api.CheckpointState.load_checkpoint(str(ckpt))
            self.module = api.Module(self._paths[0], self.state, self._paths[1], device="cpu",
                                     session_options=self._options)
            self.optimizer = api.Optimizer(self._paths[2], self.module)
        except EdgeftError:
            raise
        except Exception as exc:
            raise EdgeftError(f"ONNX Runtime could not load the training artifacts: {exc}",
                              where=str(manifest.folder), hint="re-export the artifacts with this edgeft version.") from exc
        self.input_names = list(self.module.input_names())
        self.module.eval()
        if list(self.module.input_names()) != self.input_names:  # e.g. a manifest whose file entries were swapped
            raise EdgeftError("The training and eval models of these artifacts take different inputs.",
                              where=str(manifest.folder), hint="the folder does not match its manifest; re-export it.")
        self.module.train()
        if imported is not None:
            self._import(imported, ckpt)

    def _import(self, state: TrainableState, initial: Path) -> None:
        """Continue from edgeft's .npz state: parameters, and the optimizer's moments and step
        through an ORT checkpoint written for them."""
        names = [name for name, param in self.state.parameters if param.requires_grad]
        missing = [n for n in names if n not in state.params]
        if missing:
            raise EdgeftError(f"The checkpoint lacks the trainable tensors {missing[:3]}.", where="checkpoint",
                              hint="use a checkpoint of a run on these artifacts.")
        self.load_parameters(state.params)
        if not state.step:
            return
        api = training_api()
        with tempfile.TemporaryDirectory(prefix="edgeft-ckpt-") as tmp:
            path = Path(tmp) / ORT_FILE
            write_ort_checkpoint(path, initial, state.params, state.moments, state.step)
            self.state = api.CheckpointState.load_checkpoint(str(path))
            self.module = api.Module(self._paths[0], self.state, self._paths[1], device="cpu",
                                     session_options=self._options)
            self.optimizer = api.Optimizer(self._paths[2], self.module)

    def _feed(self, batch: Mapping[str, np.ndarray], training: bool) -> list[np.ndarray]:
        if L2SP_INPUT in self.input_names:
            batch = {**batch, L2SP_INPUT: np.array([self.l2sp if training else 0.0], np.float32)}
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise EdgeftError(f"The batch lacks the model inputs {missing}.", where=str(self.manifest.folder),
                              hint="check that the data matches the model's inputs in the manifest.")
        return [np.ascontiguousarray(batch[n]) for n in self.input_names]

    def train_step(self, batch: Mapping[str, np.ndarray], weight: float = 1.0) -> tuple[float, np.ndarray]:
        """Forward + backward on one batch (gradients accumulate); returns (loss, outputs). ORT's
        training graph cannot scale its gradients, so ``weight`` must be 1 (``weighted_steps``)."""
        if weight != 1.0:
            raise ValueError("ONNX Runtime's training API takes whole batches (weighted_steps is False)")
        self.module.train()
        loss, outputs = self.module(*self._feed(batch, training=True))
        return float(loss), outputs

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients and clear them."""
        self.optimizer.step()
        self.module.lazy_reset_grad()

    def eval_step(self, batch: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """Loss and model outputs without gradients (dropout off)."""
        self.module.eval()
        loss, outputs = self.module(*self._feed(batch, training=False))
        return float(loss), outputs

    def parameters(self) -> dict[str, np.ndarray]:
        """Current values of the trainable parameters, by name."""
        return {name: np.array(param.data) for name, param in self.state.parameters if param.requires_grad}

    def gradients(self) -> dict[str, np.ndarray]:
        """Gradients accumulated since the last optimizer step, by parameter name."""
        return {name: np.array(param.grad) for name, param in self.state.parameters
                if param.requires_grad and param.grad is not None}

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.set_learning_rate(float(value))

    def load_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable parameters by name (e.g. weights trained on the tail graph)."""
        for name, param in self.state.parameters:
            if param.requires_grad and name in values:
                param.data = np.ascontiguousarray(values[name], dtype=np.float32).reshape(param.data.shape)

    def save_checkpoint(self, folder: Path) -> None:
        """Write edgeft's .npz state (parameters, AdamW moments, step) into ``folder``: each tensor
        once, in the format both backends read (ORT's own checkpoint is made again from it on resume)."""
        with tempfile.TemporaryDirectory(prefix="edgeft-ckpt-") as tmp:
            path = Path(tmp) / ORT_FILE
            training_api().CheckpointState.save_checkpoint(self.state, str(path), include_optimizer_state=True)
            state = read_state(path)
        names = list(state.params)
        write_state(Path(folder) / STATE_FILE, names, [state.params[n] for n in names],
                    str(self.manifest.data.get("optimizer", state.optimizer)), state.step,
                    [state.moments[n] for n in names] if state.moments else None)


def _is_ort_checkpoint(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return is_ort_checkpoint(handle.read(8))
    except OSError:
        return False


def with_weight_decay(source: Path, target: Path, weight_decay: float) -> Path:
    """Copy an AdamW optimizer model with another weight decay (ORT bakes it into the graph)."""
    import onnx

    model = onnx.load(str(source))
    for node in model.graph.node:
        if node.op_type == "AdamWOptimizer":
            for attribute in node.attribute:
                if attribute.name == "weight_decay":
                    attribute.f = float(weight_decay)
    atomic_write_bytes(target, model.SerializeToString())
    return target
