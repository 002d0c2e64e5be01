"""The interface both training backends implement (the portable one and ONNX Runtime's training
API), so the loop, evaluation and checkpoints work with either and a run resumes in the other."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np


class Trainer(Protocol):
    """One model's trainable tensors, optimizer state and steps."""

    backend: str  # "portable" or "ort-training"
    l2sp: float  # the L2-SP strength fed to training steps (0: off)
    weighted_steps: bool  # train_step takes a weight, so a long batch may run in pieces

    def train_step(self, batch: Mapping[str, np.ndarray], weight: float = 1.0) -> tuple[float, np.ndarray]:
        """Forward and backward on one batch, gradients (scaled by ``weight``) accumulated; (loss, outputs)."""

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients and clear them."""

    def eval_step(self, batch: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """Forward only, dropout off; (loss, outputs)."""

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable tensors by name."""

    def gradients(self) -> dict[str, np.ndarray]:
        """The accumulated gradients by name."""

    def set_learning_rate(self, value: float) -> None:
        """The rate of the next optimizer step."""

    def load_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Replace the trainable tensors (e.g. from a checkpoint), optimizer state kept."""

    def save_checkpoint(self, folder: Path) -> None:
        """Write the trainable tensors and optimizer state (``trainable.npz``) into ``folder``."""
