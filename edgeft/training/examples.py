"""Examples turned into model inputs: tokenized text, decoded images or npz arrays.

Encoding happens once when the set is built; batches are then cut from it in any order, which
is what shuffling, bucketing and the frozen-prefix cache need.
"""

from __future__ import annotations

import numpy as np

from edgeft.data.encode import ImageEncoder, TextEncoder
from edgeft.data.records import Records
from edgeft.errors import EdgeftError
from edgeft.manifest import Manifest


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
        elif records.images is not None:
            if modality != "image":
                raise EdgeftError(f"{records.source} is an image folder, but the model takes {modality} inputs.",
                                  where=records.source, hint="give data that matches the model (see edgeft inspect).")
            encoder = ImageEncoder(manifest.data)
            self._arrays = {manifest.data["inputs"][0]["name"]: np.stack([encoder.load(p) for p in records.images])}
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


def label_batch(examples: ExampleSet, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs plus labels: one training or evaluation batch."""
    batch = examples.inputs(indices)
    batch["labels"] = examples.labels(indices)
    return batch
