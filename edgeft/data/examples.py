"""Examples turned into model inputs: tokenized text, decoded images, audio features or npz arrays.

Encoding happens once when the set is built; batches are then cut from it in any order, which
is what shuffling, bucketing and the frozen-prefix cache need.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft.data.encode import TextEncoder, file_encoder
from edgeft.data.records import Records, read_records
from edgeft.data.split import grouped_split, stratified_split
from edgeft.errors import EdgeftError
from edgeft.manifest import Manifest
from edgeft.reporter import Reporter

KEPT_DATA = "data"  # a run folder's own copy of data given in memory


class ExampleSet:
    """Model inputs and labels of one data source, addressable by example index."""

    def __init__(self, records: Records, manifest: Manifest) -> None:
        self.records = records
        self.manifest = manifest
        modality = manifest.data["modality"]
        self._ids: list[np.ndarray] | None = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._text: TextEncoder | None = None
        if records.arrays is not None:
            self._arrays = records.arrays
            self.lengths = np.ones(len(records), dtype=np.int64)
        elif records.texts is not None:
            if modality != "text":
                raise EdgeftError(f"{records.source} holds text, but the model takes {modality} inputs.",
                                  where=records.source, hint="give data that matches the model (see edgeft inspect).")
            self._text = TextEncoder(manifest.folder, manifest.data)
            self._ids = self._text.encode(records.texts)
            self.lengths = np.array([len(ids) for ids in self._ids], dtype=np.int64)
        elif records.files is not None:
            if modality not in ("image", "audio"):
                raise EdgeftError(f"{records.source} holds image or audio files, but the model takes {modality} inputs.",
                                  where=records.source, hint="give data that matches the model (see edgeft inspect).")
            self._arrays = file_encoder(manifest.folder, manifest.data).inputs(records.files)
            self.lengths = np.ones(len(records), dtype=np.int64)
        else:
            raise EdgeftError(f"{records.source} holds no examples.", where=records.source, hint="check the file.")

    def __len__(self) -> int:
        return len(self.records)

    def inputs(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs for these examples (text padded to the longest among them)."""
        if self._ids is not None and self._text is not None:
            return self._text.pad([self._ids[i] for i in indices])
        assert self._arrays is not None
        return {name: np.ascontiguousarray(values[indices]) for name, values in self._arrays.items()}

    def labels(self, indices: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.records.labels[indices])


@dataclass
class DataOptions:
    """Where the data is and how to read it."""

    train: Path
    val: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    strict: bool = False
    keep_in_run: bool = False  # copy the files into the run folder's data/ (data given in memory through the API)

    def __post_init__(self) -> None:  # str paths too
        self.train = Path(self.train)
        self.val = Path(self.val) if self.val is not None else None

    def kept(self, run_dir: Path) -> DataOptions:
        """Where the run keeps its copies of the files (``keep_in_run``), named as the run refers to them."""
        return dataclasses.replace(self, train=run_dir / KEPT_DATA / f"train{self.train.suffix}",
                                   val=run_dir / KEPT_DATA / f"val{self.val.suffix}" if self.val is not None else None,
                                   keep_in_run=False)


def _read(path: Path, manifest: Manifest, data: DataOptions, reporter: Reporter) -> Records:
    records = read_records(path, manifest.data, text_column=data.text_column, label_column=data.label_column,
                           strict=data.strict)
    if records.skipped:
        reporter.message(f"skipped {len(records.skipped)} row(s) of {path} with missing values:")
        for place in records.skipped[:5]:
            reporter.message(f"  {place}")
        if len(records.skipped) > 5:
            reporter.message(f"  ... and {len(records.skipped) - 5} more (use --strict to refuse them)")
    return records


def load_examples(manifest: Manifest, data: DataOptions, val_fraction: float, seed: int,
                  reporter: Reporter) -> tuple[ExampleSet, ExampleSet | None]:
    """Training and validation examples: validation from ``data.val``, else a stratified (embedding:
    grouped) split of ``val_fraction`` of the training data seeded with ``seed`` (training and deployment make the
    same split of a run's data)."""
    records = _read(data.train, manifest, data, reporter)
    if data.val is not None:
        val_records: Records | None = _read(data.val, manifest, data, reporter)
    elif val_fraction > 0 and len(records) >= 10:
        split = grouped_split if manifest.data["task"] == "embedding" else stratified_split
        train_idx, val_idx = split(records.labels, val_fraction, seed)
        if not len(val_idx):
            reporter.message("validation: nothing to hold out (every class or group has too few examples); "
                             "training without validation (give --val FILE)")
            return ExampleSet(records, manifest), None
        skipped = records.skipped
        records, val_records = records.subset(train_idx), records.subset(val_idx)
        records.skipped = skipped  # the file's skipped rows, listed once, with the training part
        reporter.message(f"validation: {len(val_records)} examples split from the training data (seed {seed})")
    else:
        val_records = None
    return ExampleSet(records, manifest), (ExampleSet(val_records, manifest) if val_records is not None else None)
