"""Trainable state files every backend reads: edgeft's ``.npz`` and ONNX Runtime's checkpoint.

edgeft's format (``trainable.npz`` in a run checkpoint, ``portable_checkpoint.npz`` in an
artifact folder) is a plain ``.npz`` read with ``allow_pickle=False``: ``names`` (the
trainable tensors in order), ``optimizer``, ``step`` (optimizer updates done), ``param.<i>``
and, once the optimizer has run, its moments ``m1.<i>`` / ``m2.<i>`` (AdamW).

ONNX Runtime's training checkpoint is a flatbuffer (schema ``ort_training_checkpoint.fbs``
of onnxruntime 1.19: parameters, and per parameter the optimizer's momentums and step). It
is read here in pure Python, so a checkpoint written by the ORT training backend resumes in
the portable backend, moments included, on a device whose onnxruntime has no training API.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    if head[4:8] == b"ODTC":
        return read_ort_checkpoint(path)
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


# --- ONNX Runtime's checkpoint flatbuffer ----------------------------------------------------

_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64}


class _Table:
    """A flatbuffer table: fields by slot (vtable index)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        size = struct.unpack_from("<H", buf, vtable)[0]
        self.slots = [struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0] for i in range((size - 4) // 2)]

    def _at(self, slot: int) -> int | None:
        off = self.slots[slot] if slot < len(self.slots) else 0
        return self.pos + off if off else None

    def scalar(self, slot: int, fmt: str, default=0):
        at = self._at(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _ref(self, slot: int) -> int | None:
        at = self._at(slot)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, slot: int) -> _Table | None:
        ref = self._ref(slot)
        return None if ref is None else _Table(self.buf, ref)

    def string(self, slot: int) -> str:
        ref = self._ref(slot)
        if ref is None:
            return ""
        length = struct.unpack_from("<I", self.buf, ref)[0]
        return self.buf[ref + 4 : ref + 4 + length].decode("utf-8")

    def vector(self, slot: int) -> tuple[int, int]:
        """(start of the elements, count)."""
        ref = self._ref(slot)
        return (0, 0) if ref is None else (ref + 4, struct.unpack_from("<I", self.buf, ref)[0])

    def tables(self, slot: int) -> list[_Table]:
        start, count = self.vector(slot)
        out = []
        for i in range(count):
            at = start + 4 * i
            out.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return out


def _tensor(table: _Table) -> tuple[str, np.ndarray]:
    # Tensor: name 0, doc_string 1, dims 2, data_type 3, raw_data 4, string_data 5, external_data_offset 6
    name = table.string(0)
    start, count = table.vector(2)
    dims = list(struct.unpack_from(f"<{count}q", table.buf, start)) if count else []
    dtype = _NUMPY.get(table.scalar(3, "i"))
    if dtype is None or table.scalar(6, "q", -1) != -1:
        raise ValueError(f"tensor {name}: unsupported data type or external data")
    start, size = table.vector(4)
    return name, np.frombuffer(table.buf, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                               offset=start).reshape(dims).copy()


def read_ort_checkpoint(path: Path) -> TrainableState:
    """Trainable parameters, momentums and step of an ONNX Runtime 1.19 training checkpoint."""
    buf = Path(path).read_bytes()
    try:
        if buf[4:8] != b"ODTC":
            raise ValueError("no ODTC identifier")
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        # Checkpoint: version 0, module_state 1, optimizer_groups 2, property_bag 3
        module = root.table(1)
        if module is None:
            raise ValueError("no module state")
        if module.scalar(3, "?", False):  # has_external_data
            raise ValueError("parameters stored in an external data file")
        params = dict(_tensor(t) for t in module.tables(0))  # requires_grad_params
        moments: dict[str, list[np.ndarray]] = {}
        step = 0
        for group in root.tables(2):  # OptimizerGroup: group_name 0, step 1, initial_learning_rate 2, states 3
            step = int(group.scalar(1, "q", 0))
            for state in group.tables(3):  # ParameterOptimizerState: param_name 0, momentums 1
                moments[state.string(0)] = [_tensor(t)[1] for t in state.tables(1)]
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise EdgeftError(f"{path} is not a readable ONNX Runtime checkpoint ({exc}).", where=str(path),
                          hint="give a checkpoint written by edgeft train.") from exc
    optimizer = "adamw" if any(len(m) == 2 for m in moments.values()) else ("sgd" if moments else "")
    return TrainableState(params, {k: v for k, v in moments.items() if v}, step, optimizer)


def _module_tensors(path: Path) -> tuple[int, list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    buf = Path(path).read_bytes()
    root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    module = root.table(1)
    if module is None or module.scalar(3, "?", False):
        raise EdgeftError(f"{path} cannot be used as a template checkpoint.", where=str(path),
                          hint="re-export the artifacts with this edgeft version.")
    return (root.scalar(0, "i", 1), [_tensor(t) for t in module.tables(0)], [_tensor(t) for t in module.tables(1)])


def write_ort_checkpoint(path: Path, template: Path, state: TrainableState) -> None:
    """An ONNX Runtime checkpoint holding ``state`` (parameters, AdamW momentums, step), with the
    frozen tensors of ``template`` (the artifacts' own checkpoint): how edgeft's .npz state
    resumes in the ORT training backend exactly. Needs the ``flatbuffers`` package, which the
    onnxruntime training build depends on."""
    import flatbuffers

    version, trainable, frozen = _module_tensors(template)
    builder = flatbuffers.Builder(1 << 20)
    inverse = {np.dtype(v): k for k, v in _NUMPY.items()}

    def tensor(name: str, value: np.ndarray) -> int:
        value = np.ascontiguousarray(value)
        raw = builder.CreateByteVector(value.tobytes())
        builder.StartVector(8, value.ndim, 8)
        for dim in reversed(value.shape):
            builder.PrependInt64(int(dim))
        dims = builder.EndVector()
        label = builder.CreateString(name)
        builder.StartObject(7)
        builder.PrependUOffsetTRelativeSlot(0, label, 0)
        builder.PrependUOffsetTRelativeSlot(2, dims, 0)
        builder.PrependInt32Slot(3, inverse[value.dtype], 0)
        builder.PrependUOffsetTRelativeSlot(4, raw, 0)
        return builder.EndObject()

    def vector(offsets: list[int]) -> int:
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    params = [tensor(name, np.asarray(state.params.get(name, value), dtype=value.dtype).reshape(value.shape))
              for name, value in trainable]
    frozen_offsets = [tensor(name, value) for name, value in frozen]
    requires_grad, frozen_vector = vector(params), vector(frozen_offsets)
    builder.StartObject(4)
    builder.PrependUOffsetTRelativeSlot(0, requires_grad, 0)
    builder.PrependUOffsetTRelativeSlot(1, frozen_vector, 0)
    module = builder.EndObject()
    groups = []
    if state.moments:
        states = []
        for name, value in trainable:
            moments = state.moments.get(name)
            if not moments:
                continue
            tensors = [tensor(f"momentum{k}", np.asarray(m, dtype=np.float32).reshape(value.shape))
                       for k, m in enumerate(moments)]
            momentums = vector(tensors)
            label = builder.CreateString(name)
            builder.StartObject(2)
            builder.PrependUOffsetTRelativeSlot(0, label, 0)
            builder.PrependUOffsetTRelativeSlot(1, momentums, 0)
            states.append(builder.EndObject())
        state_vector = vector(states)
        group_name = builder.CreateString("group0")
        builder.StartObject(4)
        builder.PrependUOffsetTRelativeSlot(0, group_name, 0)
        builder.PrependInt64Slot(1, int(state.step), 0)
        builder.PrependFloat32Slot(2, 1e-3, 0.0)
        builder.PrependUOffsetTRelativeSlot(3, state_vector, 0)
        groups.append(builder.EndObject())
    group_vector = vector(groups) if groups else None
    builder.StartObject(4)
    builder.PrependInt32Slot(0, version, 0)
    builder.PrependUOffsetTRelativeSlot(1, module, 0)
    if group_vector is not None:
        builder.PrependUOffsetTRelativeSlot(2, group_vector, 0)
    root = builder.EndObject()
    builder.Finish(root, file_identifier=b"ODTC")
    Path(path).write_bytes(bytes(builder.Output()))
