"""Split one labelled dataset into the local datasets of N simulated devices.

IID (a seeded shuffle dealt round-robin) or non-IID by label: each class is divided among the
devices in proportions drawn from a Dirichlet distribution with concentration ``alpha`` (small
alpha: each device sees few classes; large alpha: close to IID), the scheme of Hsu et al. 2019
that Flower Datasets' DirichletPartitioner implements. It is written here in a few lines of numpy
because Flower Datasets needs Hugging Face ``datasets`` (and pyarrow) for what is an index split.
Every device gets at least ``min_size`` examples: draws leaving one short are repeated (as
Flower's partitioner does), so no virtual device trains on nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.records import Records
from edgeft.errors import EdgeftError

SCHEMES = ("iid", "dirichlet")
DEVICE_FILE = "device-{:04d}.jsonl"  # device N's data in a split folder (the ClientApp reads it)


@dataclass(frozen=True)
class Partition:
    """Which examples each device holds (indices into the records), and how it was drawn."""

    indices: list[np.ndarray]
    scheme: str
    alpha: float | None
    seed: int

    def sizes(self) -> list[int]:
        return [len(part) for part in self.indices]

    def label_counts(self, labels: np.ndarray, num_labels: int) -> list[list[int]]:
        """Examples per label on each device (rows: devices): how non-IID the split is."""
        return [np.bincount(labels[part], minlength=num_labels).tolist() for part in self.indices]


def partition(labels: np.ndarray, clients: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0,
              min_size: int = 2, attempts: int = 100) -> Partition:
    """Deal the examples with ``labels`` (class indices) to ``clients`` devices."""
    labels = np.asarray(labels)
    if scheme not in SCHEMES:
        raise EdgeftError(f"Unknown partition scheme {scheme!r}.", where="--partition", hint=f"use one of {', '.join(SCHEMES)}.")
    if clients < 1 or len(labels) < clients * min_size:
        raise EdgeftError(f"{len(labels)} examples cannot give {clients} devices {min_size} examples each.",
                          where="--clients", hint=f"use at most {len(labels) // min_size} devices, or more data.")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        order = rng.permutation(len(labels))
        return Partition([np.sort(order[i::clients]) for i in range(clients)], scheme, None, seed)
    if not alpha > 0:
        raise EdgeftError(f"The Dirichlet concentration {alpha} is not positive.", where="--alpha",
                          hint="give a number > 0 (0.1: very skewed, 0.5: skewed, 100: nearly IID).")
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, piece in zip(parts, np.split(members, cuts)):
                part.extend(piece.tolist())
        if min(len(part) for part in parts) >= min_size:
            return Partition([np.sort(np.asarray(part, dtype=np.int64)) for part in parts], scheme, alpha, seed)
    raise EdgeftError(f"No Dirichlet split (alpha {alpha}) gave each of {clients} devices {min_size} examples "
                      f"in {attempts} draws.", where="--alpha", hint="raise --alpha, or use fewer --clients.")


def write_parts(records: Records, label_names: list[str] | None, parts: Partition, folder: Path,
                text_column: str = "text", label_column: str = "label") -> list[Path]:
    """Each device's examples as its own JSONL file, with the source's column names (the devices
    read them as the source is read), as a real device would hold them."""
    if records.texts is None:
        raise EdgeftError(f"{records.source} is not text data; fleet simulation splits text datasets.",
                          where=records.source, hint="give a .csv, .tsv or .jsonl file with text and label columns.")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, part in enumerate(parts.indices):
        lines = []
        for index in part:
            value = records.labels[index]
            label = label_names[int(value)] if label_names is not None else np.asarray(value).tolist()
            lines.append(json.dumps({text_column: records.texts[index], label_column: label}, ensure_ascii=False))
        path = folder / DEVICE_FILE.format(number)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def split_data(settings: Any, data: Path, clients: int, scheme: str, alpha: float,
               folder: Path) -> tuple[Partition, list[list[int]]]:
    """Read ``data`` for the artifacts of ``settings`` (a FleetSettings), split it, and write each
    device's file into ``folder``; the partition and its examples per label on each device."""
    from edgeft.data.records import read_records
    from edgeft.fleet.local import open_artifacts

    manifest = open_artifacts(Path(settings.artifacts))
    records = read_records(data, manifest.data, settings.text_column, settings.label_column)
    classes = manifest.task == "classification"
    if scheme == "dirichlet" and not classes:
        raise EdgeftError("A Dirichlet split by label needs single-label classification.", where="--partition",
                          hint="use --partition iid for this task.")
    labels = records.labels if classes else np.zeros(len(records), dtype=np.int64)  # IID needs only the count
    parts = partition(labels, clients, scheme, alpha, settings.seed)
    write_parts(records, manifest.label_names if classes else None, parts, folder, settings.text_column,
                settings.label_column)
    counts = parts.label_counts(records.labels, len(manifest.label_names)) if classes else []
    return parts, counts
