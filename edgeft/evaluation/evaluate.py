"""Evaluation over a whole example set with the eval model (no gradients, dropout off)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.errors import EdgeftError
from edgeft.manifest import TRAINABLE_KINDS, Manifest, check_fields, load_manifest
from edgeft.evaluation import metrics


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
    """Loss plus the task's metrics (see edgeft.evaluation.metrics)."""
    loss, outputs, labels = predict(trainer, examples, batch_size)
    return {"loss": loss, **metrics.compute(task, outputs, labels, num_labels)}


def checkpoint_parameters(path: Path) -> dict[str, np.ndarray]:
    """Trainable parameters stored in a checkpoint (full or tail artifacts alike): an ORT
    checkpoint file, edgeft's .npz state, or a run checkpoint folder. Needs no training API."""
    from edgeft.backends.state import read_state, resolve_checkpoint

    return read_state(resolve_checkpoint(Path(path))).params


def resolve_model(path: Path, checkpoint: Path | None = None) -> tuple[Manifest, Path | None]:
    """An artifact folder, or a run folder (its artifacts and best, else latest, checkpoint), and
    the checkpoint to use (``checkpoint`` when given: it must exist)."""
    from edgeft.run import checkpoints
    from edgeft.run.record import RUN_FILE, RunRecord

    if checkpoint is not None and not Path(checkpoint).exists():
        raise EdgeftError(f"The checkpoint {checkpoint} does not exist.", where=str(checkpoint),
                          hint="give a checkpoint written by edgeft train: a folder under RUN/checkpoints, RUN/best, "
                               "or a trainable.npz / checkpoint file in one.")

    if (path / RUN_FILE).is_file():
        artifacts = RunRecord.read(path).artifacts()
        if checkpoint is None:
            best = path / checkpoints.BEST
            chosen = best if (best / checkpoints.STATE).is_file() else checkpoints.latest(path)
            if chosen is None:
                raise EdgeftError(f"The run {path} has no checkpoint yet.", where=str(path),
                                  hint="train for at least one epoch (or --checkpoint-every N steps).")
            checkpoint = chosen / checkpoints.ORT_CHECKPOINT
            if not checkpoint.is_file():  # written by the portable backend
                checkpoint = chosen / checkpoints.STATE_NPZ
        return check_fields(load_manifest(artifacts, kind=TRAINABLE_KINDS)), checkpoint
    return check_fields(load_manifest(path, kind=TRAINABLE_KINDS)), checkpoint
