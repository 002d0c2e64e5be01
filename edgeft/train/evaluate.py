"""Evaluation over a whole example set with the eval model (no gradients, dropout off)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.train import metrics


class Examples(Protocol):
    """What evaluation and training read: inputs and labels by example index."""

    lengths: np.ndarray

    def __len__(self) -> int: ...
    def inputs(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...
    def labels(self, indices: np.ndarray) -> np.ndarray: ...


class Stepper(Protocol):
    def eval_step(self, batch: dict[str, np.ndarray]) -> tuple[float, np.ndarray]: ...


def predict(trainer: Stepper, examples: Examples, batch_size: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, stacked outputs and labels over every example, in order.

    Examples are evaluated in length-sorted batches (less padding) and put back in order.
    """
    order = np.argsort(examples.lengths, kind="stable")
    outputs: list[np.ndarray] = []
    total = 0.0
    for chunk in sequential_batches(len(order), batch_size):
        indices = order[chunk]
        batch = examples.inputs(indices)
        batch["labels"] = examples.labels(indices)
        loss, out = trainer.eval_step(batch)
        total += loss * len(indices)
        outputs.append(np.asarray(out))
    stacked = np.concatenate(outputs) if outputs else np.zeros((0,))
    restored = np.empty_like(stacked)
    restored[order] = stacked
    return total / max(len(order), 1), restored, examples.labels(np.arange(len(order)))


def evaluate(trainer: Stepper, examples: Examples, task: str, num_labels: int, batch_size: int) -> dict[str, Any]:
    """Loss plus the task's metrics (see edgeft.train.metrics)."""
    loss, outputs, labels = predict(trainer, examples, batch_size)
    return {"loss": loss, **metrics.compute(task, outputs, labels, num_labels)}
