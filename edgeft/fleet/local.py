"""One device's part of a federated round: fine-tune from the global tensors on local data.

This is edgeft's own training loop (``edgeft.training.loop``: the frozen-prefix cache, length
bucketing, micro-batches, dropout seeded by the step) started from the global values instead of
the exported ones, for a few local epochs, in a scratch run folder that is deleted afterwards:
the device keeps nothing of the round but what it sends. It needs onnxruntime and numpy only
(no Flower), so the same code runs under Flower's ClientApp, in a simulation, and in tests.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.examples import DataOptions
from edgeft.errors import EdgeftError
from edgeft.evaluation.evaluate import checkpoint_parameters
from edgeft.manifest import TRAINABLE_KINDS, Manifest, check_fields, load_manifest
from edgeft.training.loop import METRICS_FILE, TrainConfig, train


@dataclass(frozen=True)
class LocalSettings:
    """How each device trains in a round (sent by the server with every round)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    threads: int | None = None
    text_column: str = "text"
    label_column: str = "label"

    def config(self, seed: int) -> TrainConfig:
        # a constant rate within a round: the decay that helps a single run would restart every round
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, schedule="constant",
                           warmup=0.0, weight_decay=self.weight_decay, seed=seed, val_fraction=0.0, keep=1)


def trainable_names(manifest: Manifest) -> list[str]:
    """The order the tensors travel in (the manifest's, forward order)."""
    return [tensor["name"] for tensor in manifest.data["trainable"]["tensors"]]


def tensor_fingerprint(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> str:
    """The trainable tensors' names and shapes, hashed: what a device's package and the server's
    model must agree on."""
    text = ";".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in zip(names, shapes, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_artifacts(path: Path) -> Manifest:
    """An artifact folder or device package, verified (every file's sha256) once per process use."""
    return check_fields(load_manifest(Path(path), kind=TRAINABLE_KINDS))


def local_update(artifacts: Path, data: Path, start: Sequence[np.ndarray], settings: LocalSettings,
                 seed: int = 0, fingerprint: str | None = None) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """Train from ``start`` (the global tensors, in :func:`trainable_names` order) on ``data``.

    ``fingerprint``: the server's :func:`tensor_fingerprint`; a package that trains other tensors
    refuses the round. Returns the trained tensors in the same order, the number of local examples
    (the weight of this device in FedAvg) and the round's local metrics (training loss, seconds).
    """
    # the names only: the training loop verifies every file's hash before it trains, once
    names = trainable_names(check_fields(load_manifest(Path(artifacts), verify=False, kind=TRAINABLE_KINDS)))
    if len(start) != len(names) or (fingerprint is not None and
                                    tensor_fingerprint(names, [np.shape(s) for s in start]) != fingerprint):
        raise EdgeftError(f"This device's package ({artifacts}) trains other tensors than the federation's model.",
                          where=str(artifacts), hint="give every SuperNode a package exported from the server's "
                                                     "artifacts.")
    initial = dict(zip(names, start, strict=True))
    with tempfile.TemporaryDirectory(prefix="edgeft-round-") as scratch:
        summary = train(Path(artifacts), DataOptions(train=Path(data), text_column=settings.text_column,
                                                     label_column=settings.label_column),
                        Path(scratch) / "run", settings.config(seed), threads=settings.threads, backend="portable",
                        initial=initial)
        trained = checkpoint_parameters(Path(summary["checkpoint"]))
        history = (Path(scratch) / "run" / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    last = json.loads(history[-1]) if history else {}
    metrics = {"train_seconds": round(summary["seconds"] + summary["cache_seconds"], 3), "steps": summary["steps"],
               "train_loss": last.get("train_loss")}
    return [trained[name] for name in names], summary["train_examples"], metrics
