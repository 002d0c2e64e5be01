"""Evaluation over a whole example set with the eval model (no gradients, dropout off)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.errors import EdgeftError
from edgeft.manifest import TRAINABLE_KINDS, Manifest, check_fields, load_manifest
from edgeft.training import metrics


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
    """Loss plus the task's metrics (see edgeft.training.metrics)."""
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
    from edgeft.training import checkpoints
    from edgeft.training.record import RUN_FILE, RunRecord

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


def evaluate_folder(path: Path, data: Path, checkpoint: Path | None = None, batch_size: int = 32,
                    threads: int | None = None, text_column: str = "text", label_column: str = "label",
                    strict: bool = False, backend: str = "auto") -> dict[str, Any]:
    """``edgeft evaluate``: metrics of an artifact folder, a trained run or a bundle on a data file."""
    from edgeft.backends.select import open_trainer
    from edgeft.data.records import read_records
    from edgeft.training.examples import ExampleSet

    if _is_bundle(path):
        if checkpoint is not None:
            raise EdgeftError("--checkpoint does not apply to a bundle: it holds one model.", where=str(path),
                              hint="leave out --checkpoint, or evaluate the run folder the bundle was deployed from.")
        stepper, manifest, spec = _bundle_stepper(path, threads)
    else:
        manifest, checkpoint = resolve_model(path, checkpoint)
        spec = manifest.data
        stepper = open_trainer(manifest, backend, threads=threads)
        if checkpoint is not None:
            stepper.load_parameters(checkpoint_parameters(Path(checkpoint)))
    records = read_records(data, spec, text_column=text_column, label_column=label_column, strict=strict)
    result = evaluate(stepper, ExampleSet(records, manifest), manifest.data["task"],
                      len(manifest.data["labels"]["names"]), batch_size)
    return {"model": str(path), "checkpoint": str(checkpoint) if checkpoint else None, "data": str(data),
            "examples": len(records), "skipped": len(records.skipped), "labels": manifest.data["labels"]["names"],
            **result}


def _is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a bundle (a cheap look at its manifest; loading it checks the rest)."""
    from edgeft.manifest import MANIFEST_NAME

    try:
        return json.loads((Path(path) / MANIFEST_NAME).read_text(encoding="utf-8")).get("kind") == "bundle"
    except (OSError, ValueError, AttributeError, RecursionError):
        return False  # not readable as a bundle: resolve_model says what is wrong


def _bundle_stepper(path: Path, threads: int | None) -> tuple[Stepper, Manifest, dict[str, Any]]:
    """The deployed (quantized) model of a bundle as an eval stepper, run by onnxruntime alone (the
    figure a fleet owner checks on the device before trusting a bundle); with its manifest, and
    the manifest's fields completed with the labels tensor, which data reading needs."""
    from edgeft.deployment.bundle import Bundle
    from edgeft.deployment.runtime import InferenceStepper
    from edgeft.tasks import label_input

    bundle = Bundle(path, threads=threads)
    spec = bundle.manifest.data
    width = int(spec["output"]["shape"][-1])
    readable = {**spec, "labels": {**spec["labels"], "input": label_input(spec["loss"], width)}}
    return InferenceStepper(bundle.session, bundle.manifest), bundle.manifest, readable
