"""The frozen-prefix cache: run the frozen part once per example, train the tail on its outputs.

Each boundary tensor is stored per example without padding: one row per example, or one row
per token when it has a sequence axis (rows of a sequence are contiguous, located by offsets).
Batches re-pad with zeros, which the tail's attention and pooling masks ignore, so the tail sees
exactly what the full graph computes. Storage stays in memory up to a budget and is a file on
disk, read back per batch, beyond it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.manifest import Manifest
from edgeft.data.examples import ExampleSet


class _Store:
    """Rows of one boundary tensor, in memory or in a file on disk.

    Examples are laid out in the order the frozen part processes them (``order``), so each
    processed chunk is one contiguous write; ``starts`` / ``stops`` locate an example's rows.
    The file is read with ``pread`` into each batch rather than memory-mapped: its pages then
    live in the kernel's page cache, which keeps them hot while memory is free and reclaims them
    when it is not, instead of counting toward (and pinning) the process's resident memory.
    """

    def __init__(self, spec: dict[str, Any], lengths: np.ndarray, order: np.ndarray, budget: int,
                 spill_dir: Path) -> None:
        self.name = spec["name"]
        self.sequence = len(spec["shape"]) > 1 and spec["shape"][1] == "sequence"
        self.row_shape = tuple(int(d) for d in spec["shape"][2 if self.sequence else 1:])
        self.dtype = np.dtype(spec["dtype"])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        counts = (lengths if self.sequence else np.ones_like(lengths)).astype(np.int64)
        ends = np.cumsum(counts[order])
        self.starts = np.empty_like(counts)
        self.starts[order] = ends - counts[order]
        self.stops = self.starts + counts
        total = int(ends[-1]) if len(ends) else 0
        self.bytes = total * self.row_bytes
        self.spilled = self.bytes > budget
        self.path: Path | None = None
        self.fd = -1
        if self.spilled:
            spill_dir.mkdir(parents=True, exist_ok=True)
            self.fd, name = tempfile.mkstemp(dir=spill_dir, prefix="cache-", suffix=".bin")
            self.path = Path(name)
            self.rows = np.empty((0, *self.row_shape), dtype=self.dtype)
        else:
            self.rows = np.empty((total, *self.row_shape), dtype=self.dtype)

    def put(self, indices: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> None:
        """Store the frozen part's output ``values`` for ``indices``, consecutive in ``order``."""
        rows = np.concatenate([values[row, :length] for row, length in enumerate(lengths)]) if self.sequence \
            else values
        start = int(self.starts[indices[0]])
        if self.fd >= 0:
            data = np.ascontiguousarray(rows, dtype=self.dtype).data
            written = os.pwrite(self.fd, data, start * self.row_bytes)
            if written != data.nbytes:
                raise OSError(errno.ENOSPC, "short write to the activation cache file", str(self.path))
        else:
            self.rows[start : start + len(rows)] = rows

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``start:stop`` of the file into ``out`` (contiguous, that many rows)."""
        view = memoryview(out.reshape(-1).view(np.uint8))
        offset, done = start * self.row_bytes, 0
        while done < view.nbytes:
            count = os.preadv(self.fd, [view[done:]], offset + done) if hasattr(os, "preadv") else \
                _pread_into(self.fd, view[done:], offset + done)
            if count <= 0:
                raise OSError(errno.EIO, "the activation cache file ended early", str(self.path))
            done += count

    def batch(self, indices: np.ndarray, width: int) -> np.ndarray:
        if not self.sequence and self.fd < 0:
            return np.ascontiguousarray(self.rows[self.starts[indices]])
        out = np.zeros((len(indices), width, *self.row_shape) if self.sequence else (len(indices), *self.row_shape),
                       dtype=self.dtype)
        for row, index in enumerate(indices):
            start, stop = int(self.starts[index]), int(self.stops[index])
            target = out[row, : stop - start] if self.sequence else out[row : row + 1]
            if self.fd >= 0:
                self._read(start, stop, target)
            else:
                target[...] = self.rows[start:stop]
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, view.nbytes, offset)
    view[: len(data)] = data
    return len(data)


class CachedExamples:
    """Tail inputs for an example set: cached boundary tensors plus the raw inputs the tail reads."""

    def __init__(self, examples: ExampleSet, manifest: Manifest, threads: int | None, budget_bytes: int,
                 spill_dir: Path | None = None, batch_size: int = 32) -> None:
        import onnxruntime as ort

        from edgeft.ortcompat import prefix_session_options

        self.examples = examples
        self.lengths = examples.lengths
        cache = manifest.data["cache"]
        self.raw_inputs = list(cache["raw_inputs"])
        self.stores: list[_Store] = []
        spill = spill_dir or Path(tempfile.gettempdir())
        remaining = budget_bytes
        order = np.argsort(examples.lengths, kind="stable")  # similar lengths together: little padding
        for spec in cache["boundary"]:
            store = _Store(spec, examples.lengths, order, remaining, spill)
            remaining -= 0 if store.spilled else store.bytes
            self.stores.append(store)
        session = ort.InferenceSession(str(manifest.path("prefix_model")), sess_options=prefix_session_options(manifest.data, threads),
                                       providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        for chunk in sequential_batches(len(order), batch_size):
            indices = order[chunk]
            inputs = examples.inputs(indices)
            values = dict(zip(outputs, session.run(None, {n: inputs[n] for n in wanted})))
            for store in self.stores:
                store.put(indices, values[store.name], examples.lengths[indices])

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
