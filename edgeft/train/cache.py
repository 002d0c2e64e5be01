"""The frozen-prefix cache: run the frozen part once per example, train the tail on its outputs.

Each boundary tensor is stored per example without padding: one row per example, or one row
per token when it has a sequence axis (rows of a sequence are contiguous, located by offsets).
Batches re-pad with zeros, which the tail's attention and pooling masks ignore, so the tail sees
exactly what the full graph computes. Storage stays in memory up to a budget and is a
memory-mapped file on disk beyond it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.manifest import Manifest
from edgeft.train.examples import ExampleSet


class _Store:
    """Rows of one boundary tensor, in memory or in a memory-mapped file."""

    def __init__(self, spec: dict[str, Any], lengths: np.ndarray, budget: int, spill_dir: Path) -> None:
        self.name = spec["name"]
        self.sequence = len(spec["shape"]) > 1 and spec["shape"][1] == "sequence"
        self.row_shape = tuple(int(d) for d in spec["shape"][2 if self.sequence else 1:])
        self.dtype = np.dtype(spec["dtype"])
        counts = lengths if self.sequence else np.ones_like(lengths)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        shape = (int(self.offsets[-1]), *self.row_shape)
        size = int(np.prod(shape)) * self.dtype.itemsize
        self.spilled = size > budget
        if self.spilled:
            spill_dir.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=spill_dir, prefix="cache-", suffix=".bin", delete=False)
            handle.close()
            self.path: Path | None = Path(handle.name)
            self.rows = np.memmap(self.path, dtype=self.dtype, mode="w+", shape=shape)
        else:
            self.path = None
            self.rows = np.empty(shape, dtype=self.dtype)
        self.bytes = size

    def put(self, index: int, value: np.ndarray, length: int) -> None:
        start = self.offsets[index]
        self.rows[start : start + (length if self.sequence else 1)] = value[:length] if self.sequence else value

    def batch(self, indices: np.ndarray, width: int) -> np.ndarray:
        if not self.sequence:
            return np.ascontiguousarray(self.rows[self.offsets[indices]])
        out = np.zeros((len(indices), width, *self.row_shape), dtype=self.dtype)
        for row, index in enumerate(indices):
            start, stop = self.offsets[index], self.offsets[index + 1]
            out[row, : stop - start] = self.rows[start:stop]
        return out

    def close(self) -> None:
        if self.path is not None:
            del self.rows
            self.path.unlink(missing_ok=True)


class CachedExamples:
    """Tail inputs for an example set: cached boundary tensors plus the raw inputs the tail reads."""

    def __init__(self, examples: ExampleSet, manifest: Manifest, threads: int | None, budget_bytes: int,
                 spill_dir: Path | None = None, batch_size: int = 32) -> None:
        import onnxruntime as ort

        from edgeft.ortcompat import session_options

        self.examples = examples
        self.lengths = examples.lengths
        cache = manifest.data["cache"]
        self.raw_inputs = list(cache["raw_inputs"])
        self.stores: list[_Store] = []
        spill = spill_dir or Path(tempfile.gettempdir())
        remaining = budget_bytes
        for spec in cache["boundary"]:
            store = _Store(spec, examples.lengths, remaining, spill)
            remaining -= 0 if store.spilled else store.bytes
            self.stores.append(store)
        session = ort.InferenceSession(str(manifest.path("prefix_model")), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        order = np.argsort(examples.lengths, kind="stable")  # similar lengths together: little padding
        for chunk in sequential_batches(len(order), batch_size):
            indices = order[chunk]
            inputs = examples.inputs(indices)
            values = dict(zip(outputs, session.run(None, {n: inputs[n] for n in wanted})))
            for store in self.stores:
                for row, index in enumerate(indices):
                    store.put(int(index), values[store.name][row], int(examples.lengths[index]))

    @property
    def nbytes(self) -> int:
        return sum(s.bytes for s in self.stores)

    @property
    def spilled(self) -> bool:
        return any(s.spilled for s in self.stores)

    def __len__(self) -> int:
        return len(self.examples)

    def inputs(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        raw = self.examples.inputs(indices) if self.raw_inputs else {}
        width = int(self.lengths[indices].max()) if len(indices) else 0  # text pads to the longest too
        batch = {store.name: store.batch(indices, width) for store in self.stores}
        batch.update({name: raw[name] for name in self.raw_inputs})
        return batch

    def labels(self, indices: np.ndarray) -> np.ndarray:
        return self.examples.labels(indices)

    def close(self) -> None:
        for store in self.stores:
            store.close()
