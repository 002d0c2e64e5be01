"""Trainable state files every backend reads: edgeft's ``.npz`` and ONNX Runtime's checkpoint.

edgeft's format (``trainable.npz`` in a run checkpoint, ``portable_checkpoint.npz`` in an
artifact folder) is a plain ``.npz`` read with ``allow_pickle=False``: ``names`` (the
trainable tensors in order), ``optimizer``, ``step`` (optimizer updates done), ``param.<i>``
and, once the optimizer has run, its moments ``m1.<i>`` / ``m2.<i>`` (AdamW).

ONNX Runtime's training checkpoint (a flatbuffer) is read and written by
:mod:`edgeft.backends.ort_checkpoint`; :func:`read_state` takes either kind.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeft.backends.ort_checkpoint import is_ort_checkpoint, read_ort_checkpoint
from edgeft.errors import EdgeftError
from edgeft.fsutil import sha256_file

FORMAT = "edgeft-trainable-1"
STATE_FILE = "trainable.npz"  # inside a run checkpoint folder
ORT_FILE = "checkpoint"  # ONNX Runtime's checkpoint inside a run checkpoint folder
HASHES_FILE = "sha256.json"  # inside a run checkpoint folder: the sha256 of every other file, written last
LOOP_FILE = "state.json"  # inside a run checkpoint folder: the loop position (edgeft.run.checkpoints)
# A key of state.json, written since checkpoints record their hashes (format 2). A run checkpoint
# whose state.json lacks it predates the record (format 1) and is the only kind read without one.
FORMAT_KEY, CHECKPOINT_FORMAT = "checkpoint_format", 2
_noted: set[Path] = set()  # old checkpoints already reported in this process


@dataclass
class TrainableState:
    """Trainable tensors by name (in order), their optimizer moments and the update count."""

    params: dict[str, np.ndarray]
    moments: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> [m1, m2] (AdamW)
    step: int = 0
    optimizer: str = ""


def write_state(path: Path, names: list[str], params: list[np.ndarray], optimizer: str, step: int = 0,
                moments: list[list[np.ndarray]] | None = None) -> None:
    """Write edgeft's ``.npz`` (same arrays -> same bytes)."""
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT), "names": np.array(names, dtype=str),
                                     "optimizer": np.array(optimizer), "step": np.array(int(step), np.int64)}
    for i, value in enumerate(params):
        arrays[f"param.{i}"] = np.ascontiguousarray(value, dtype=np.float32)
        for k, moment in enumerate(moments[i] if moments else []):
            arrays[f"m{k + 1}.{i}"] = np.ascontiguousarray(moment, dtype=np.float32)
    write_npz(path, arrays)


def write_hashes(folder: Path) -> None:
    """Record the sha256 of every file of a checkpoint folder being written (before it is renamed
    into place), so that readers can tell a damaged or edited checkpoint from a good one."""
    hashes = {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != HASHES_FILE}
    (Path(folder) / HASHES_FILE).write_text(json.dumps(hashes, indent=1) + "\n", encoding="utf-8")


def verify_checkpoint(path: Path) -> None:
    """Check the files of a run checkpoint folder (``path``, or the folder of the file ``path``)
    against their recorded sha256.

    A run checkpoint (a folder with a ``state.json``) without its record is refused, so deleting
    the record cannot hide an edited file; only one that predates the record (its state.json has
    no format marker) is read as it is, with a note on stderr. Other folders (an artifact folder,
    whose manifest holds the hashes, or the folder of a state file given by hand) are read as
    they are."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    record = folder / HASHES_FILE
    hint = "remove this checkpoint folder to resume from the one before it (or deploy another one: edgeft deploy RUN --checkpoint FOLDER)."
    if not record.is_file():
        if (folder / LOOP_FILE).is_file() and not _predates_record(folder):
            raise EdgeftError(f"The checkpoint's hash record {HASHES_FILE} is missing, so its files cannot be "
                              "checked.", where=str(record), hint=hint)
        return
    try:
        hashes = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
            raise ValueError("not a table of file names and hashes")
    except (OSError, ValueError, RecursionError) as exc:
        raise EdgeftError(f"The checkpoint's hash record cannot be read: {str(exc)[:200]}.", where=str(record),
                          hint=hint) from exc
    for name, digest in hashes.items():
        path = folder / Path(name).name
        if not path.is_file():
            raise EdgeftError(f"The checkpoint file {path.name} is missing.", where=str(path), hint=hint)
        if sha256_file(path) != digest:
            raise EdgeftError(f"The checkpoint file {path.name} was modified or damaged after it was written "
                              "(sha256 mismatch).", where=str(path), hint=hint)


def _predates_record(folder: Path) -> bool:
    """Whether a run checkpoint without a hash record was written before edgeft recorded them
    (a state.json object without the format marker); says so on stderr, once per folder."""
    try:
        state = json.loads((folder / LOOP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(state, dict) or FORMAT_KEY in state:
        return False
    if folder.resolve() not in _noted:
        _noted.add(folder.resolve())
        print(f"note: the checkpoint {folder} was written by an edgeft older than checkpoint hash records "
              f"({HASHES_FILE}); its files are read unchecked.", file=sys.stderr)
    return True


def resolve_checkpoint(path: Path) -> Path:
    """The state file of a run checkpoint folder (edgeft's .npz, else ORT's), verified against its
    hashes, or ``path`` itself."""
    path = Path(path)
    verify_checkpoint(path)
    if path.is_dir():
        for name in (STATE_FILE, ORT_FILE):
            if (path / name).is_file():
                return path / name
        raise EdgeftError(f"The checkpoint folder {path} holds no trainable state.", where=str(path),
                          hint="remove this checkpoint folder to resume from the one before it.")
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that ``numpy.load(allow_pickle=False)`` reads, with the same bytes for the same arrays
    (``numpy.savez`` stamps the current time into the zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data.getvalue())
    Path(path).write_bytes(buffer.getvalue())


def read_state(path: Path) -> TrainableState:
    """Read edgeft's ``.npz`` or an ONNX Runtime checkpoint file (told apart by their first bytes)."""
    path = Path(path)
    try:
        head = path.read_bytes()[:8]
    except OSError as exc:
        raise EdgeftError(f"The checkpoint {path} cannot be read: {exc.strerror or exc}.", where=str(path),
                          hint="give a checkpoint written by edgeft train.") from exc
    if is_ort_checkpoint(head):
        params, moments, step = read_ort_checkpoint(path)
        optimizer = "adamw" if any(len(m) == 2 for m in moments.values()) else ("sgd" if moments else "")
        return TrainableState(params, moments, step, optimizer)
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise KeyError("format")
            names = [str(n) for n in data["names"]]
            params = {n: np.array(data[f"param.{i}"]) for i, n in enumerate(names)}
            moments = {}
            for i, n in enumerate(names):
                found = [np.array(data[f"m{k}.{i}"]) for k in (1, 2) if f"m{k}.{i}" in data.files]
                if found:
                    moments[n] = found
            return TrainableState(params, moments, int(data["step"]), str(data["optimizer"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgeftError(f"{path} is not an edgeft checkpoint ({exc}).", where=str(path),
                          hint="give a checkpoint written by edgeft train (or re-export the artifacts).") from exc
