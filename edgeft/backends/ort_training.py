"""The ONNX Runtime Training API backend: train, eval and optimizer sessions over a checkpoint.

A thin, typed layer over ``onnxruntime.training.api`` so the training loop, the export smoke
test and evaluation share one way of opening artifacts and feeding batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_bytes
from edgeft.manifest import Manifest
from edgeft.ortcompat import quiet_runtime, training_api


def session_options(threads: int | None):  # -> onnxruntime.SessionOptions
    """Session options with a fixed thread count (None lets ORT choose)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


class OrtTrainer:
    """Train / eval / optimizer sessions of one artifact set (``prefix`` selects e.g. the tail)."""

    def __init__(self, manifest: Manifest, threads: int | None = None, checkpoint: Path | None = None,
                 prefix: str = "", optimizer_model: Path | None = None) -> None:
        api = training_api()
        quiet_runtime()
        self.manifest = manifest
        ckpt = checkpoint or manifest.path(f"{prefix}checkpoint")
        try:
            self.state = api.CheckpointState.load_checkpoint(str(ckpt))
            self.module = api.Module(str(manifest.path(f"{prefix}training_model")), self.state,
                                 str(manifest.path(f"{prefix}eval_model")), device="cpu",
                                 session_options=session_options(threads))
            self.optimizer = api.Optimizer(str(optimizer_model or manifest.path(f"{prefix}optimizer_model")), self.module)
        except EdgeftError:
            raise
        except Exception as exc:
            raise EdgeftError(f"ONNX Runtime could not load the training artifacts: {exc}",
                              where=str(manifest.folder), hint="re-export the artifacts with this edgeft version.") from exc
        self.input_names = list(self.module.input_names())

    def _feed(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise EdgeftError(f"The batch lacks the model inputs {missing}.", where=str(self.manifest.folder),
                              hint="check that the data matches the model's inputs in the manifest.")
        return [np.ascontiguousarray(batch[n]) for n in self.input_names]

    def train_step(self, batch: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """Forward + backward on one batch (gradients accumulate); returns (loss, outputs)."""
        self.module.train()
        loss, outputs = self.module(*self._feed(batch))
        return float(loss), outputs

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients and clear them."""
        self.optimizer.step()
        self.module.lazy_reset_grad()

    def eval_step(self, batch: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """Loss and model outputs without gradients (dropout off)."""
        self.module.eval()
        loss, outputs = self.module(*self._feed(batch))
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
                param.data = np.ascontiguousarray(values[name], dtype=np.float32)


def with_weight_decay(source: Path, target: Path, weight_decay: float) -> Path:
    """Copy an AdamW optimizer model with another weight decay (ORT bakes it into the graph)."""
    model = onnx.load(str(source))
    for node in model.graph.node:
        if node.op_type == "AdamWOptimizer":
            for attribute in node.attribute:
                if attribute.name == "weight_decay":
                    attribute.f = float(weight_decay)
    atomic_write_bytes(target, model.SerializeToString())
    return target
