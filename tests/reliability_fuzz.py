"""Property-based fuzzing of every file edgeft reads, shared by tests/test_fuzz_inputs.py (a few
dozen inputs per file type in CI) and tools/reliability.py (thousands, for the reliability report).

For each file type there is a hypothesis strategy that produces file contents (well-formed,
subtly wrong and plain garbage alike, images up to and past Pillow's decompression-bomb limit)
and a ``Target`` that writes one generated input where edgeft expects it and runs the code the
device runs on it. Some inputs are valid files written from known content (rows, arrays,
pixels, profile values, a manifest reformatted); those must be read back exactly. ``classify``
sorts the outcome:

- ``verified``: a file of known content, read back exactly (what the model gets is what was written);
- ``accepted``: read without complaint (and the result is consistent);
- ``refused``: an :class:`EdgeftError` that names the file, the place (``where``) and what to do
  (``hint``), which the CLI prints as one message;
- ``wrong``: a file of known content refused, or read back differently;
- ``unclear``: an EdgeftError missing one of those three;
- ``crash``: any other exception, i.e. a Python traceback for the user.

The seed varies from run to run (``run_seed``: ``EDGEFT_SEED``, else drawn and exported once per
run) and is printed, so a failure is reproduced with ``EDGEFT_SEED=N``.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import csv
import datetime
import io
import json
import math
import os
import random
import re
import shutil
import traceback
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeft.errors import EdgeftError
from test_data import manifest as data_manifest
from test_data import write_tokenizer

OUTCOMES = ("verified", "accepted", "refused", "wrong", "unclear", "crash")
PROBLEMS = ("wrong", "unclear", "crash")
SEED_ENV = "EDGEFT_SEED"


def run_seed() -> int:
    """This run's fuzzing seed: ``$EDGEFT_SEED``, else a random one, exported so that every part of
    the run (and any subprocess) uses the same one."""
    if not os.environ.get(SEED_ENV, "").strip().isdigit():
        os.environ[SEED_ENV] = str(random.SystemRandom().randrange(2**32))
    return int(os.environ[SEED_ENV])
LABELS = ["lights_on", "lights_off", "music"]  # the names of test_data.manifest()


@dataclass
class Outcome:
    kind: str  # one of OUTCOMES
    detail: str = ""


@dataclass
class Tally:
    """Outcome counts of one file type, with the first few problems kept for the report."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    problems: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        if outcome.kind in PROBLEMS and len(self.problems) < 5:
            self.problems.append(outcome.detail)

    @property
    def tried(self) -> int:
        return sum(self.counts.values())


def classify(run: Callable[[], Any], names: tuple[str, ...]) -> Outcome:
    """Run one read; an EdgeftError must mention one of ``names`` (the file or folder given)."""
    try:
        problem = run()
    except EdgeftError as exc:
        text = exc.message()
        if not exc.where or not exc.hint:
            return Outcome("unclear", f"EdgeftError without where or hint: {text}")
        if not any(name in text for name in names):
            return Outcome("unclear", f"EdgeftError that does not name {names[0]}: {text}")
        return Outcome("refused", text)
    except Exception:  # noqa: BLE001 - anything else would be a traceback for the user
        return Outcome("crash", traceback.format_exc(limit=-6))
    if problem:
        return Outcome("crash", f"accepted an inconsistent result: {problem}")
    return Outcome("accepted")


def round_trip(run: Callable[[], str], names: tuple[str, ...]) -> Outcome:
    """Read a valid file of known content: ``run`` returns how what was read differs ('' if not)."""
    outcome = classify(run, names)
    if outcome.kind == "refused":
        return Outcome("wrong", f"a valid file was refused: {outcome.detail}")
    if outcome.kind == "crash" and outcome.detail.startswith("accepted an inconsistent result: "):
        return Outcome("wrong", "read back differently: " + outcome.detail.split(": ", 1)[1])
    return Outcome("verified") if outcome.kind == "accepted" else outcome


# ---- building blocks ----------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
NUMBER_WORDS = ["NaN", "nan", "inf", "-inf", "Infinity", "1e309", "-1e400", "0", "1", "2", "3", "-1", "0.5",
                "1e-45", "99999999999999999999", "0x10", "1_000", "١"]
LABEL_WORDS = [*LABELS, "LABEL_0", "LABEL_2", "lights_on|music", "music;lights_off", "|", ";", "unknown", "Lights_On",
               " music ", "", " ", '"', '""', "\t", ",", "\n", "\r\n", "\x00", "\ufeff", "0 1", "0,1,2", "1 2 3"]
CELL = st.one_of(st.sampled_from(LABEL_WORDS + NUMBER_WORDS), TEXT)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63),
                        st.floats(), TEXT, st.sampled_from(LABEL_WORDS + NUMBER_WORDS))
JSON_VALUE = st.recursive(JSON_SCALAR, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                          max_leaves=6)
ENCODINGS = ["utf-8"] * 12 + ["utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32"]


@st.composite
def encoded(draw, text: str) -> bytes:
    """``text`` in a drawn encoding (mostly UTF-8), sometimes with a stray byte, a cut or a BOM."""
    raw = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    damage = draw(st.sampled_from(["none"] * 9 + ["insert", "truncate", "bom"]))
    if damage == "insert" and raw:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    elif damage == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "bom":
        raw = draw(st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE])) + raw
    return raw


def _special_file(draw) -> bytes | None:
    """Empty, garbage and huge-line files, for every text format."""
    kind = draw(st.sampled_from(["normal"] * 8 + ["empty", "garbage", "huge", "blank"]))
    if kind == "empty":
        return b""
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "blank":
        return draw(st.sampled_from([b"\n", b"\n\n\r\n", b"   \n\t\n", b"\xef\xbb\xbf"]))
    if kind == "huge":  # one line of up to 2 MB, in a field or across the whole row
        size = draw(st.integers(100_000, 2_000_000))
        return draw(st.sampled_from([b"text,label\n" + b"a" * size + b",music\n", b"x" * size,
                                     b'{"text": "' + b"b " * (size // 2) + b'", "label": "music"}\n',
                                     b"text\tlabel\n" + b"c" * size + b"\tmusic\n"]))
    return None


# ---- the tasks a data file is read for, and labels each accepts ------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One manifest variant (test_data.manifest arguments) and label cells that are valid for it."""

    task: str
    names: tuple[str, ...] | None
    width: int | None
    valid: tuple[str, ...]  # label cells as written in CSV / TSV / JSONL strings

    def manifest(self, modality: str) -> dict[str, Any]:
        return data_manifest(self.task, list(self.names) if self.names else None, modality, self.width)


TASKS = (
    Task("classification", None, None, tuple(LABELS)),
    Task("classification", tuple(f"LABEL_{i}" for i in range(3)), None, ("LABEL_0", "LABEL_2", "0", "1", "2")),
    Task("multi-label", None, None, (*LABELS, "lights_on|music", "music;lights_off", "")),
    Task("regression", ("LABEL_0",), 1, ("0.5", "-3", "1e3", "2")),
    Task("regression", None, 3, ("1 2 3", "0.5,1,2", "-1 0 1e-3")),
)


def label_cell(task: Task, clean: bool) -> st.SearchStrategy:
    """A label this task accepts; unless ``clean``, sometimes anything."""
    return st.sampled_from(task.valid) if clean else st.one_of(st.sampled_from(task.valid), CELL)


# ---- valid files of known content (read back, they must give exactly this) -----------------------------------


@dataclass
class Known:
    """What a valid data file holds: texts (or input arrays, or image pixels) and the labels tensor."""

    labels: np.ndarray
    texts: list[str] | None = None
    arrays: dict[str, np.ndarray] | None = None  # npz inputs, or "pixel_values" as the model gets them


def _names(task: Task) -> list[str]:
    return list(task.names or LABELS)


def _width(task: Task) -> int:
    return task.width or len(_names(task))


FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def label_value(draw, task: Task) -> Any:
    """One example's label as the loss takes it: a class, a set of classes, or float32 targets."""
    if task.task == "classification":
        return draw(st.integers(0, len(_names(task)) - 1))
    if task.task == "multi-label":
        return tuple(draw(st.lists(st.integers(0, len(_names(task)) - 1), min_size=1, unique=True)))
    return tuple(draw(st.lists(FLOAT32, min_size=_width(task), max_size=_width(task))))


def label_tensor(task: Task, values: list[Any]) -> np.ndarray:
    if task.task == "classification":
        return np.array(values, dtype=np.int64)
    out = np.zeros((len(values), _width(task)), dtype=np.float32)
    for row, value in enumerate(values):
        if task.task == "multi-label":
            out[row, list(value)] = 1.0
        else:
            out[row] = value
    return out


@st.composite
def label_text(draw, task: Task, value: Any) -> str:
    """``value`` written as a CSV / TSV cell, in one of the ways the reader documents."""
    names = _names(task)
    if task.task == "classification":
        numbered = names == [f"LABEL_{i}" for i in range(len(names))]
        text = str(value) if numbered and draw(st.booleans()) else names[value]
    elif task.task == "multi-label":
        text = draw(st.sampled_from(["|", ";"])).join(names[i] for i in value)
    else:
        text = draw(st.sampled_from([" ", ",", ", "])).join(repr(float(v)) for v in value)
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " "]))


@st.composite
def label_json(draw, task: Task, value: Any) -> Any:
    """``value`` as a JSONL label: a name or class number, a list of names, a number or list of numbers."""
    if draw(st.integers(0, 3)) == 0:
        return draw(label_text(task, value))
    names = _names(task)
    if task.task == "classification":
        numbered = names == [f"LABEL_{i}" for i in range(len(names))]
        return value if numbered and draw(st.booleans()) else names[value]
    if task.task == "multi-label":
        return [names[i] for i in value]
    floats = [float(v) for v in value]
    return floats[0] if len(floats) == 1 and draw(st.booleans()) else floats


def _text(kind: str) -> st.SearchStrategy:
    """A text a user could write: not blank (a blank one is a missing value); no tab or line break in TSV."""
    texts = TEXT.filter(lambda t: bool(t.strip()))
    return texts.filter(lambda t: not set(t) & set("\t\n\r")) if kind == "tsv" else texts


@st.composite
def known_text_file(draw, kind: str, task: Task) -> tuple[bytes, Known, dict[str, Any]]:
    """A valid CSV, TSV or JSONL file of known rows (columns in a drawn order, maybe renamed or with
    an extra column), the content it holds and the column options to read it with."""
    rows = draw(st.lists(st.tuples(_text(kind), label_value(task)), min_size=1, max_size=8))
    text_column, label_column = draw(st.sampled_from([("text", "label"), ("utterance", "intent")]))
    columns = draw(st.permutations([text_column, label_column, "id"]))[: draw(st.sampled_from([2, 3]))]
    if text_column not in columns or label_column not in columns:
        columns = [text_column, label_column]
    if kind == "jsonl":
        lines = []
        for index, (text, value) in enumerate(rows):
            cells = {text_column: text, label_column: draw(label_json(task, value)), "id": index}
            lines.append(json.dumps({c: cells[c] for c in columns}, ensure_ascii=draw(st.booleans())))
        body = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))
    else:
        end = draw(st.sampled_from(["\n", "\r\n"]))
        lines = [list(columns)]
        for index, (text, value) in enumerate(rows):
            cells = {text_column: text, label_column: draw(label_text(task, value)), "id": str(index)}
            lines.append([cells[c] for c in columns])
        if kind == "csv":  # quoted where needed
            if any("\r" in text for text, _ in rows):  # csv quotes a lone CR only when it ends lines (RFC 4180)
                end = "\r\n"
            out = io.StringIO()
            csv.writer(out, lineterminator=end).writerows(lines)
            body = out.getvalue()
        else:  # TSV has no quoting: cells are written as they are
            body = "".join("\t".join(line) + end for line in lines)
    raw = (codecs.BOM_UTF8 if draw(st.integers(0, 4)) == 0 else b"") + body.encode("utf-8")
    options = {"text_column": text_column, "label_column": label_column, "strict": draw(st.booleans())}
    return raw, Known(label_tensor(task, [v for _, v in rows]), texts=[t for t, _ in rows]), options


@st.composite
def known_npz(draw, task: Task) -> tuple[bytes, Known, dict[str, Any]]:
    """A valid .npz (x: [N, 4] in a dtype that converts to float32, labels as the task stores them)."""
    count = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(["float32", "float64", "int32", "int8", "uint8", "float16"]))
    elements = {"float32": FLOAT32, "float64": FLOAT32, "float16": st.floats(width=16, allow_nan=False,
                                                                              allow_infinity=False)}.get(dtype)
    x = draw(hnp.arrays(np.dtype(dtype), (count, 4), elements=elements))
    values = [draw(label_value(task)) for _ in range(count)]
    labels = label_tensor(task, values)
    if task.task == "regression" and labels.shape[1] == 1 and draw(st.booleans()):
        stored = labels[:, 0]  # a plain target vector for a single-output regressor
    else:
        stored = labels.astype(draw(st.sampled_from(["int64", "int32"]))) if task.task == "classification" else labels
    raw = _npz_bytes({"x": x, "labels": stored}, draw(st.booleans()))
    return raw, Known(labels, arrays={"x": x.astype(np.float32)}), {}


# ---- CSV and TSV --------------------------------------------------------------------------------------------


@st.composite
def table_file(draw, delimiter: str, task: Task) -> bytes:
    """A CSV (``,``) or TSV (``\\t``) file: header and rows, quoted in a drawn way, or not a table at all."""
    special = _special_file(draw)
    if special is not None:
        return special
    if draw(st.booleans()):  # well-formed rows for this task (texts drawn freely)
        rows = draw(st.lists(st.tuples(TEXT, label_cell(task, draw(st.booleans()))), min_size=1, max_size=8))
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE,
                            escapechar="\\")
        writer.writerow(["text", "label"])
        for text, label in rows:
            try:
                writer.writerow([text, label])
            except csv.Error:
                out.write(f"{text}{delimiter}{label}\n")
        return draw(encoded(out.getvalue()))
    header = draw(st.one_of(st.just(["text", "label"]), st.just(["label", "text"]), st.just(["id", "text", "label"]),
                            st.lists(st.sampled_from(["text", "label", "Text", " label ", "", "id"]), max_size=4),
                            st.lists(CELL, max_size=4)))
    rows = draw(st.lists(st.lists(CELL, max_size=5), max_size=8))
    style = draw(st.sampled_from(["minimal", "all", "none", "raw", "broken"]))
    out = io.StringIO()
    lines = [header, *rows]
    if style in ("raw", "broken"):  # joined by hand: quotes and delimiters inside cells stay unbalanced
        for line in lines:
            cells = [('"' + c if style == "broken" and i == 0 else c) for i, c in enumerate(line)]
            out.write(delimiter.join(cells) + draw(st.sampled_from(["\n", "\r\n", "\r"])))
    else:
        quoting = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "none": csv.QUOTE_NONE}[style]
        writer = csv.writer(out, delimiter=delimiter, quoting=quoting, escapechar="\\")
        for line in lines:
            try:
                writer.writerow(line)
            except csv.Error:  # e.g. a lone empty field without quoting: write it as it is
                out.write(delimiter.join(line) + "\n")
    return draw(encoded(out.getvalue()))


# ---- JSONL --------------------------------------------------------------------------------------------------


@st.composite
def jsonl_line(draw, task: Task, clean: bool = False) -> str:
    kind = "valid" if clean else draw(st.sampled_from(
        ["valid"] * 6 + ["object"] * 4 + ["value", "garbage", "blank", "bigint", "nan", "deep"]))
    if kind == "valid":
        numbers = st.lists(st.floats(), min_size=task.width or 1, max_size=task.width or 1)
        label = draw(label_cell(task, True) | (numbers if task.task == "regression" else st.integers(0, 2)))
        return json.dumps({"text": draw(TEXT), "label": label}, ensure_ascii=draw(st.booleans()))
    if kind == "deep":  # nesting deeper than the JSON parser's recursion limit
        depth = draw(st.integers(10, 200_000))
        return '{"text": "a", "label": ' + "[" * depth + "]" * depth + "}"
    if kind == "object":
        record = draw(st.dictionaries(st.sampled_from(["text", "label", "Text", "id", ""]) | TEXT,
                                      JSON_VALUE | st.sampled_from(LABEL_WORDS), max_size=4))
        if draw(st.booleans()):
            record["text"] = draw(TEXT | JSON_VALUE)
        if draw(st.booleans()):
            record["label"] = draw(st.sampled_from(LABEL_WORDS) | JSON_VALUE | st.lists(st.sampled_from(LABELS)))
        return json.dumps(record, ensure_ascii=draw(st.booleans()))
    if kind == "value":
        return json.dumps(draw(JSON_VALUE))
    if kind == "bigint":  # more digits than Python converts by default
        return '{"text": "a", "label": ' + "7" * draw(st.integers(4300, 6000)) + "}"
    if kind == "nan":
        return draw(st.sampled_from(['{"text": "a", "label": NaN}', '{"text": "a", "label": [Infinity, 1, 2]}',
                                     '{"text": NaN, "label": "music"}', '{"text": "a", "label": -Infinity}']))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t"]))
    return draw(TEXT)


@st.composite
def jsonl_file(draw, task: Task) -> bytes:
    special = _special_file(draw)
    if special is not None:
        return special
    lines = draw(st.lists(jsonl_line(task, clean=draw(st.booleans())), max_size=8))
    return draw(encoded(draw(st.sampled_from(["\n", "\r\n"])).join(lines)))


# ---- npz ----------------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int8", "uint8", "uint64", "bool", "complex64", "U3",
          "S2", "datetime64[s]", "timedelta64[s]"]


@st.composite
def any_array(draw) -> np.ndarray:
    kind = draw(st.sampled_from(["plain"] * 6 + ["object", "structured"]))
    if kind == "object":
        return np.array([draw(JSON_SCALAR) for _ in range(draw(st.integers(0, 3)))] + [None], dtype=object)
    if kind == "structured":
        return np.zeros(draw(st.integers(0, 3)), dtype=[("a", "f4"), ("b", "i8")])
    shape = draw(st.one_of(st.sampled_from([(3, 4), (3,), (2, 4), (3, 3), (0, 4), (3, 4, 1), (), (1, 4)]),
                           hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    return draw(hnp.arrays(dtype, shape))


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@st.composite
def valid_arrays(draw, task: Task) -> dict[str, np.ndarray]:
    """x [n, 4] and labels that fit the task, with NaN, infinity or extreme values sometimes mixed in."""
    n = draw(st.integers(1, 6))
    floats = st.floats(width=32) if draw(st.integers(0, 3)) == 0 else st.floats(-1e3, 1e3, width=32)
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "float16"]))
    x = draw(hnp.arrays(dtype, (n, 4), elements=floats if dtype == "float32" else None))
    width = task.width or len(LABELS)
    if task.task == "classification":
        clean = draw(st.booleans())
        labels = draw(hnp.arrays(draw(st.sampled_from(["int64", "int32", "uint8"] if clean else ["int64", "int32"])),
                                 (n,), elements=st.integers(0, 2) if clean else st.integers(-1, 3)))
    elif task.task == "multi-label":
        labels = draw(hnp.arrays("float32", (n, width), elements=st.sampled_from([0.0, 1.0, 0.5, 2.0, float("nan")])))
    else:
        shape = draw(st.sampled_from([(n, width), (n,)]))
        labels = draw(hnp.arrays("float32", shape, elements=floats))
    return {"x": x, "labels": labels}


@st.composite
def npz_file(draw, task: Task) -> bytes:
    kind = draw(st.sampled_from(["valid"] * 6 + ["arrays"] * 4 + ["damaged", "garbage", "empty", "members", "npy"]))
    if kind == "valid":
        return _npz_bytes(draw(valid_arrays(task)), draw(st.booleans()))
    if kind == "npy":  # a single .npy array saved under an .npz name
        buffer = io.BytesIO()
        np.save(buffer, draw(any_array()), allow_pickle=True)
        return buffer.getvalue()
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "empty":
        return b""
    if kind == "members":  # a zip whose members are not .npy arrays
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in draw(st.lists(st.sampled_from(["x.npy", "labels.npy", "x", "../x.npy", "a/b.npy"]), unique=True,
                                      max_size=3)):
                archive.writestr(name, draw(st.binary(max_size=100)))
        return buffer.getvalue()
    names = draw(st.lists(st.sampled_from(["x", "labels", "y", "X", "input_ids", "attention_mask"]), unique=True,
                          max_size=4))
    if draw(st.booleans()):
        names = ["x", "labels"]
    arrays = {name: draw(any_array()) for name in names}
    raw = _npz_bytes(arrays, draw(st.booleans()))
    if kind == "damaged" and raw:
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(1, len(raw)))])
    return raw


# ---- image folders ------------------------------------------------------------------------------------------


def png_header(width: int, height: int, data: bytes = b"") -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels but holds only ``data`` (cheap to write
    at any size: Pillow checks the size against its decompression-bomb limit when it opens the file)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


@st.composite
def huge_image(draw) -> bytes:
    """An image at Pillow's size limits: just under or over MAX_IMAGE_PIXELS (a warning, then the
    decoder finds the data missing) or twice that (DecompressionBombError), or beyond any sane size."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS or 89_478_485
    pixels = draw(st.sampled_from([limit - 1, limit + 1, 2 * limit, 2 * limit + 1, 2**31 - 1, 2**40]))
    pixels += draw(st.integers(0, 10))
    height = draw(st.sampled_from([1, 7, 1000, 10_000, 2**16]))
    width = max(1, min(pixels // height, 2**31 - 1))
    return png_header(width, height, draw(st.binary(max_size=64)))

IMAGE_MODES = ["RGB", "L", "RGBA", "P", "1", "I", "F", "CMYK", "LA", "I;16"]
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}
IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".PNG")  # suffixes the generated files get


@st.composite
def image_bytes(draw) -> tuple[str, bytes]:
    """(suffix, content): a real image in some mode and size, a damaged one, or not an image at all."""
    from PIL import Image

    kind = draw(st.sampled_from(["image"] * 12 + ["damaged", "damaged", "garbage", "empty", "text", "huge"]))
    suffix = draw(st.sampled_from(list(IMAGE_NAMES) * 3 + [".txt", ""]))
    if kind == "huge":
        return ".png", draw(huge_image())
    if kind == "garbage":
        return suffix, draw(st.binary(max_size=200))
    if kind == "empty":
        return suffix, b""
    if kind == "text":
        return suffix, b"not an image\n"
    mode = draw(st.sampled_from(IMAGE_MODES))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    pixels = np.frombuffer(draw(st.binary(min_size=size[0] * size[1] * 4, max_size=size[0] * size[1] * 4)),
                           dtype=np.uint8).reshape(size[1], size[0], 4)
    image = Image.fromarray(pixels[:, :, :3].copy())
    try:
        image = image.convert(mode)
    except ValueError:  # no direct conversion from RGB to this mode
        pass
    fmt = draw(st.sampled_from(list(IMAGE_FORMATS)))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):  # this format cannot store this mode
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    raw = buffer.getvalue()
    if kind == "damaged":
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(1, len(raw)))])
    if draw(st.integers(0, 4)) == 0:
        suffix = IMAGE_FORMATS[fmt]
    return suffix, raw


@st.composite
def image_folder(draw, task: Task) -> list[tuple[str, bytes]]:
    """(relative path, content) of each file in a folder of class subfolders."""
    known = list(task.names or LABELS)
    odd = ["unknown", ".hidden", "Music", f"{known[0]}/nested", " ", "0"]
    classes = draw(st.lists(st.sampled_from(known * 4 + odd), unique=True, max_size=4))
    files = []
    for name in classes:
        for index in range(draw(st.integers(0, 3))):
            suffix, raw = draw(image_bytes())
            files.append((f"{name}/{index}{suffix}", raw))
    if draw(st.integers(0, 5)) == 0:  # a stray file next to the class folders
        suffix, raw = draw(image_bytes())
        files.append((f"stray{suffix}", raw))
    return files


IMAGE_SIZE = (3, 2)  # width, height of test_data.manifest(modality="image"): no resizing, exact pixels back
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


@st.composite
def known_image_folder(draw, task: Task) -> tuple[list[tuple[str, bytes]], Known, dict[str, Any]]:
    """Class subfolders of lossless images of known pixels, and what the model must get from them."""
    from PIL import Image

    names = _names(task)
    classes = draw(st.lists(st.integers(0, len(names) - 1), min_size=1, max_size=3, unique=True))
    files, pixels, values = [], [], []
    width, height = IMAGE_SIZE
    for label in sorted(classes, key=lambda i: names[i]):  # the reader goes through class folders by name
        for index in range(draw(st.integers(1, 3))):
            mode = draw(st.sampled_from(["RGB", "L", "RGBA"]))
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            array = draw(hnp.arrays(np.uint8, (height, width, channels)))
            rgb = np.repeat(array, 3, axis=2) if mode == "L" else array[:, :, :3]  # grey repeats, alpha drops
            fmt, suffix = draw(st.sampled_from([("PNG", ".png"), ("BMP", ".bmp"), ("PNG", ".PNG"), ("BMP", ".BMP")]))
            buffer = io.BytesIO()
            Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(buffer, format=fmt)
            files.append((f"{names[label]}/{index}{suffix}", buffer.getvalue()))
            pixels.append(((rgb.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
            values.append(label)
    return files, Known(label_tensor(task, values), arrays={"pixel_values": np.stack(pixels)}), {}


# ---- manifests and device profiles: a valid document, mutated -------------------------------------------------

MANIFEST_VALUES = [2, 99, 0, -1, "1", 1.0, True, None, [], {}, "../outside.bin", "/etc/passwd", "sub/../../x", "",
                   ".", "labels.txt", "tokenizer.json", "manifest.json", "0" * 64, "classification", "regression",
                   "multi-label", "text", "image", "tensor", "bundle", "artifacts", "cross-entropy", "mse", "sgd",
                   "adamw", ["batch"], ["batch", 0], [-1], 1e308, float("nan"), float("inf"), 10**30, "int64",
                   "float32", "object", "no-such-dtype"]
PROFILE_VALUES = ["arm64", "x86_64", "neon", "avx2", "dynamic", "static", "int4", "qdq", "all", "none", 2, 0, -1,
                  10**20, 2**63, 10**400, float("inf"), float("nan"), -0.0, "", "MatMul", "Matmul", "([", True, [], {},
                  [1, 2], ["neon", "neon"], datetime.date(2024, 1, 1), datetime.time(12, 0), 1e-300, 100.5]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key and index path in a JSON-like tree."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@st.composite
def mutated(draw, base: dict[str, Any], specials: list[Any], extra_values=JSON_VALUE) -> dict[str, Any]:
    """``base`` with one to four fields deleted, retyped or set to a telling value; sometimes a new field."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["delete", "replace", "special", "special"]))
        if op == "delete":
            del parent[path[-1]]
        else:
            value = draw(extra_values) if op == "replace" else draw(st.sampled_from(specials))
            parent[path[-1]] = copy.deepcopy(value)  # never share (and later mutate) a constant
    if draw(st.integers(0, 5)) == 0:
        data[draw(TEXT)] = copy.deepcopy(draw(extra_values))
    return data


HOSTILE_JSON = ['{"format_version": 1, "files": {}, "x": ' + "7" * 5000 + "}",
                '{"format_version": 1, "files": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                '{"format_version": 1e999, "files": {}}', '{"format_version": NaN, "files": {}}']


@st.composite
def manifest_file(draw, base: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 8 + ["encoding", "garbage", "truncated", "other-json", "hostile"]))
    text = json.dumps(base, indent=2)
    if kind == "hostile":  # numbers with thousands of digits, nesting deeper than any parser's stack
        return draw(st.sampled_from(HOSTILE_JSON)).encode()
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if kind == "other-json":
        return json.dumps(draw(JSON_VALUE)).encode()
    if kind == "encoding":
        return draw(encoded(text))
    data = draw(mutated(base, MANIFEST_VALUES))
    files = data.get("files")
    if isinstance(files, dict) and len(files) >= 2 and draw(st.integers(0, 3)) == 0:
        a, b = draw(st.lists(st.sampled_from(sorted(files)), min_size=2, max_size=2, unique=True))
        files[a], files[b] = files[b], files[a]  # every hash still matches, but the roles are swapped
    return json.dumps(data, indent=1).encode()


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, datetime.date, datetime.time)):
        return str(value) if isinstance(value, int) else value.isoformat()
    if isinstance(value, str):  # TOML wants DEL escaped too, which JSON leaves as it is
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '"?"'


def toml_text(data: dict[str, Any]) -> str:
    """A small TOML writer: top-level values, then one [table] per dict (None means: leave the key out)."""
    lines = [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_toml_key(str(name))}]")
            lines += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


@st.composite
def profile_file(draw, base: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 8 + ["encoding", "garbage", "truncated", "syntax"]))
    text = toml_text(base)
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if kind == "syntax":  # a line of the file replaced by something else
        lines = text.splitlines()
        lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(
            ["[hardware", "cores = ", "x = [1,", "name = 'a", "[hardware]", "a.b.c = 1", "= 3", "\x00",
             "cores = " + "9" * 5000, "isa = " + "[" * 50_000 + "]" * 50_000]) | TEXT)
        return "\n".join(lines).encode()
    if kind == "encoding":
        return draw(encoded(text))
    values = JSON_VALUE | st.sampled_from(PROFILE_VALUES) | st.datetimes().map(lambda d: d.date())
    return toml_text(draw(mutated(base, PROFILE_VALUES, values))).encode()


# ---- targets: where an input is written and what reads it ----------------------------------------------------


def _reset(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _consistent(records: Any) -> str:
    """Invariants of a successful read: one label and one place per example, finite float labels."""
    count = len(records.labels)
    examples = records.texts if records.texts is not None else records.files
    if examples is not None and len(examples) != count or len(records.places) != count or count == 0:
        return f"{count} labels for {len(examples or [])} examples and {len(records.places)} places"
    if records.labels.dtype.kind == "f" and not np.isfinite(records.labels).all():
        return "non-finite labels were accepted"
    return ""


class DataTarget:
    """CSV, TSV, JSONL, npz and image folders, read like ``edgeft train`` reads its data."""

    def __init__(self, root: Path) -> None:
        from edgeft.manifest import Manifest

        self.root = _reset(Path(root))
        self.tokenizer = write_tokenizer(self.root / "artifacts")
        self._manifest = Manifest

    def strategy(self, kind: str) -> st.SearchStrategy:
        content = {"csv": lambda t: table_file(",", t), "tsv": lambda t: table_file("\t", t), "jsonl": jsonl_file,
                   "npz": npz_file, "images": image_folder}[kind]
        known = {"npz": known_npz, "images": known_image_folder}.get(kind, lambda t: known_text_file(kind, t))
        tasks = TASKS[:2] if kind == "images" else TASKS  # image folders are for classification only
        options = st.fixed_dictionaries({"text_column": st.sampled_from(["text"] * 8 + ["Text", "label"]),
                                         "label_column": st.sampled_from(["label"] * 8 + ["id"]),
                                         "strict": st.booleans()})
        hostile = st.sampled_from(tasks).flatmap(lambda task: st.tuples(content(task), st.just(task), options,
                                                                        st.none()))
        valid = st.sampled_from(tasks).flatmap(lambda task: known(task).map(
            lambda made: (made[0], task, made[2], made[1])))
        return st.one_of(hostile, hostile, hostile, valid)  # a quarter: valid files of known content

    def check(self, kind: str, example: tuple) -> Outcome:
        from edgeft.data.records import read_records
        from edgeft.data.examples import ExampleSet

        content, task, options, expected = example
        data = task.manifest({"npz": "tensor", "images": "image"}.get(kind, "text"))
        if kind == "images":
            path = _reset(self.root / "images")
            for rel, raw in content:
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                (path / rel).write_bytes(raw)
        else:
            path = self.root / f"data.{kind}"
            path.write_bytes(content)
        manifest = self._manifest(folder=self.tokenizer, data=data)

        def run() -> str:
            records = read_records(path, data, **options)
            problem = _consistent(records)
            if not problem:
                examples = ExampleSet(records, manifest)  # tokenizes the text or decodes every image
                if expected is not None:
                    return _differences(expected, records, examples)
            return problem

        return (round_trip if expected is not None else classify)(run, (str(path),))


def _differences(expected: Known, records: Any, examples: Any) -> str:
    """How what was read (the records, and the inputs and labels the model gets) differs from ``expected``."""
    everything = np.arange(len(records))
    if records.skipped:
        return f"skipped {records.skipped[:2]}"
    labels = examples.labels(everything)
    if labels.dtype != expected.labels.dtype or not np.array_equal(labels, expected.labels):
        return f"labels {labels.tolist()} ({labels.dtype}) instead of {expected.labels.tolist()} ({expected.labels.dtype})"
    if expected.texts is not None and records.texts != expected.texts:
        return f"texts {records.texts!r} instead of {expected.texts!r}"
    for name, want in (expected.arrays or {}).items():
        got = examples.inputs(everything)[name]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=1e-6):
            return f"input {name} {got.tolist()} instead of {want.tolist()}"
    return ""


class ManifestTarget:
    """manifest.json of an artifact folder and of a bundle, used as train and predict use them."""

    def __init__(self, root: Path, artifacts: Path, bundle: Path, data_csv: Path) -> None:
        self.root = _reset(Path(root))
        self.folders = {"artifacts": self.root / "artifacts", "bundle": self.root / "bundle"}
        shutil.copytree(artifacts, self.folders["artifacts"])
        shutil.copytree(bundle, self.folders["bundle"])
        self.base = {kind: json.loads((folder / "manifest.json").read_text()) for kind, folder in self.folders.items()}
        self.data_csv = data_csv
        self.reference = {kind: self._outputs(kind, folder) for kind, folder in self.folders.items()}

    def strategy(self, kind: str) -> st.SearchStrategy:
        hostile = st.sampled_from(["artifacts", "bundle"]).flatmap(
            lambda which: st.tuples(st.just(which), manifest_file(self.base[which]), st.just(False)))
        valid = st.sampled_from(["artifacts", "bundle"]).flatmap(
            lambda which: st.tuples(st.just(which), reformatted(self.base[which]), st.just(True)))
        return st.one_of(hostile, hostile, hostile, valid)

    def check(self, kind: str, example: tuple) -> Outcome:
        which, raw, known = example
        folder = self.folders[which]
        (folder / "manifest.json").write_bytes(raw)
        names = (str(folder), str(self.data_csv))
        if known:  # the same manifest, written differently: the same model, the same results
            return round_trip(lambda: self._same(which, folder), names)
        return classify(lambda: self._use(which, folder), names)

    def _outputs(self, which: str, folder: Path) -> list[np.ndarray]:
        """What the folder computes: a bundle's scores for two texts; the artifacts' loss before and
        after one training step (dropout seeded)."""
        import onnxruntime as ort

        if which == "bundle":
            from edgeft.deployment.bundle import Bundle

            return [Bundle(folder).scores(["turn on the lights", "play some music"])]
        from edgeft.backends.select import open_trainer
        from edgeft.data.records import read_records
        from edgeft.manifest import check_fields, load_manifest
        from edgeft.data.examples import ExampleSet

        manifest = check_fields(load_manifest(folder, kind="artifacts"))
        examples = ExampleSet(read_records(self.data_csv, manifest.data), manifest)
        trainer = open_trainer(manifest, "auto", threads=1)
        batch = examples.inputs(np.arange(2))
        batch["labels"] = examples.labels(np.arange(2))
        before = trainer.eval_step(batch)[0]
        ort.set_seed(0)
        trained = trainer.train_step(batch)[0]  # one step of training, as edgeft train takes it
        trainer.optimizer_step()
        return [np.array([before, trained, trainer.eval_step(batch)[0]])]

    def _use(self, which: str, folder: Path) -> str:
        _inspect(folder)
        outputs = self._outputs(which, folder)
        if which == "bundle" and len(outputs[0]) != 2:
            return f"{len(outputs[0])} predictions for 2 texts"
        return ""

    def _same(self, which: str, folder: Path) -> str:
        from edgeft.manifest import load_manifest

        if load_manifest(folder).data != self.base[which]:
            return "the manifest read differs from the one written"
        got = self._outputs(which, folder)
        if any(not np.array_equal(a, b) for a, b in zip(got, self.reference[which])):
            return f"results {[a.tolist() for a in got]} instead of {[b.tolist() for b in self.reference[which]]}"
        return ""


@st.composite
def reformatted(draw, base: dict[str, Any]) -> bytes:
    """``base`` as another JSON writer might lay it out: indentation, key order, escapes."""
    data = copy.deepcopy(base)
    if draw(st.booleans()):  # keys in another order, at every level
        def shuffled(value: Any) -> Any:
            if isinstance(value, dict):
                keys = draw(st.permutations(list(value)))
                return {key: shuffled(value[key]) for key in keys}
            return [shuffled(item) for item in value] if isinstance(value, list) else value
        data = shuffled(data)
    indent = draw(st.sampled_from([None, 0, 1, 2, 4, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (", ", ": ")]))
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))
    return (text + draw(st.sampled_from(["", "\n", "\r\n", "  \n"]))).encode("utf-8")


def _inspect(folder: Path) -> None:
    """``edgeft inspect FOLDER`` in this process: it may exit 0 or 1, but must not raise."""
    from edgeft.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["inspect", str(folder)])
        except SystemExit as exc:
            if exc.code not in (0, 1, None):
                raise AssertionError(f"edgeft inspect exited with {exc.code}") from exc


class ProfileTarget:
    """A user's device profile (``--device my-board.toml``)."""

    def __init__(self, root: Path, base_profile: Path) -> None:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]

        self.root = _reset(Path(root))
        self.base = tomllib.loads(base_profile.read_text(encoding="utf-8"))
        self.path = self.root / "my-board.toml"

    def strategy(self, kind: str) -> st.SearchStrategy:
        hostile = profile_file(self.base).map(lambda raw: (raw, None))
        return st.one_of(hostile, hostile, hostile, known_profile(self.base))

    def check(self, kind: str, example: tuple) -> Outcome:
        from edgeft.devices import load_profile

        raw, expected = example
        self.path.write_bytes(raw)
        if expected is None:
            return classify(lambda: load_profile(self.path) and "", (str(self.path),))

        def same() -> str:
            got = load_profile(self.path).as_dict()
            got.pop("path")
            return "" if got == expected else f"read {got} instead of {expected}"

        return round_trip(same, (str(self.path),))


@st.composite
def known_profile(draw, base: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """A valid profile: ``base`` with every number, flag and choice drawn from its allowed values,
    and what ``load_profile(...).as_dict()`` must give for it."""
    from edgeft.devices import FORMAT_VERSION
    from edgeft.ortcompat import GRAPH_OPTIMIZATIONS

    data = copy.deepcopy(base)
    data["description"] = draw(TEXT.filter(lambda t: bool(t.strip())))  # a blank one is refused
    hardware, quantization, runtime, targets = (data[k] for k in ("hardware", "quantization", "runtime", "targets"))
    hardware["cores"] = draw(st.integers(1, 1024))
    hardware["threads"] = draw(st.integers(1, hardware["cores"]))  # more threads than cores is refused
    hardware["memory_mb"] = draw(st.integers(16, 16 * 2**20))
    hardware["storage_mb"] = draw(st.integers(1, 1024 * 2**20))
    for flag in ("per_channel", "reduce_range", "quantize_embeddings"):
        quantization[flag] = draw(st.booleans())
    quantization["calibration_examples"] = draw(st.integers(1, 100_000))
    runtime["graph_optimization"] = draw(st.sampled_from(GRAPH_OPTIMIZATIONS))
    runtime["fuse_transformer"] = draw(st.booleans())
    targets["max_accuracy_drop"] = draw(st.floats(0, 100) | st.integers(0, 100))
    for optional in ("latency_ms_p50", "max_model_mb"):
        targets[optional] = draw(st.none() | st.floats(0, 1e12) | st.integers(0, 10**6))
    expected = {"format_version": FORMAT_VERSION, **copy.deepcopy(data)}
    for key in ("max_accuracy_drop", "latency_ms_p50", "max_model_mb"):  # numbers are read as floats;
        value = expected["targets"][key]  # an optional target of 0 means none
        expected["targets"][key] = None if value is None or (key != "max_accuracy_drop" and value == 0) else float(value)
    return toml_text(data).encode("utf-8"), expected


FILE_TYPES = ("csv", "tsv", "jsonl", "npz", "images", "manifests", "profiles")


def run_fuzz(target: Any, kind: str, examples: int, seed: int | None = None, tally: Tally | None = None,
             stop_on_problem: bool = False) -> Tally:
    """Feed ``examples`` generated inputs of one file type to ``target``; count the outcomes.

    With ``stop_on_problem`` a crash or unclear message fails at once (hypothesis then shrinks it to
    a minimal input and reports it, as a test wants); otherwise every input is tried and counted.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as with_seed

    tally = tally if tally is not None else Tally()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(target.strategy(kind))
    def one(example: Any) -> None:
        outcome = target.check(kind, example)
        if stop_on_problem:
            assert outcome.kind not in PROBLEMS, f"{kind} (seed {seed}): {outcome.kind}\n{outcome.detail}"
        tally.add(outcome)

    if seed is not None:
        one = with_seed(seed)(one)
    try:
        one()
    except Exception:  # noqa: BLE001 - e.g. hypothesis finding the generator itself flaky: count, keep going
        if stop_on_problem:
            raise
        tally.add(Outcome("crash", "the fuzzing run stopped: " + traceback.format_exc(limit=-3)))
    return tally
