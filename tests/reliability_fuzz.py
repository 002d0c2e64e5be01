"""Property-based fuzzing of every file edgeft reads, shared by tests/test_fuzz_inputs.py (a few
dozen inputs per file type in CI) and tools/reliability.py (thousands, for the reliability report).

For each file type there is a hypothesis strategy that produces file contents (well-formed,
subtly wrong and plain garbage alike) and a ``Target`` that writes one generated input where
edgeft expects it and runs the code the device runs on it. ``classify`` sorts the outcome:

- ``accepted``: read without complaint (and the result is consistent);
- ``refused``: an :class:`EdgeftError` that names the file, the place (``where``) and what to do
  (``hint``), which the CLI prints as one message;
- ``unclear``: an EdgeftError missing one of those three;
- ``crash``: any other exception, i.e. a Python traceback for the user.
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
import re
import shutil
import traceback
import zipfile
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

OUTCOMES = ("accepted", "refused", "unclear", "crash")
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
        if outcome.kind in ("unclear", "crash") and len(self.problems) < 5:
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

IMAGE_MODES = ["RGB", "L", "RGBA", "P", "1", "I", "F", "CMYK", "LA", "I;16"]
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


@st.composite
def image_bytes(draw) -> tuple[str, bytes]:
    """(suffix, content): a real image in some mode and size, a damaged one, or not an image at all."""
    from PIL import Image

    kind = draw(st.sampled_from(["image"] * 12 + ["damaged", "damaged", "garbage", "empty", "text"]))
    suffix = draw(st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".PNG"] * 3 + [".txt", ""]))
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
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
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
    examples = records.texts if records.texts is not None else records.images
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
        tasks = TASKS[:2] if kind == "images" else TASKS  # image folders are for classification only
        options = st.fixed_dictionaries({"text_column": st.sampled_from(["text"] * 8 + ["Text", "label"]),
                                         "label_column": st.sampled_from(["label"] * 8 + ["id"]),
                                         "strict": st.booleans()})
        return st.sampled_from(tasks).flatmap(lambda task: st.tuples(content(task), st.just(task), options))

    def check(self, kind: str, example: tuple) -> Outcome:
        from edgeft.data.records import read_records
        from edgeft.train.examples import ExampleSet

        content, task, options = example
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
                ExampleSet(records, manifest)  # tokenizes the text or decodes every image
            return problem

        return classify(run, (str(path),))


class ManifestTarget:
    """manifest.json of an artifact folder and of a bundle, used as train and predict use them."""

    def __init__(self, root: Path, artifacts: Path, bundle: Path, data_csv: Path) -> None:
        self.root = _reset(Path(root))
        self.folders = {"artifacts": self.root / "artifacts", "bundle": self.root / "bundle"}
        shutil.copytree(artifacts, self.folders["artifacts"])
        shutil.copytree(bundle, self.folders["bundle"])
        self.base = {kind: json.loads((folder / "manifest.json").read_text()) for kind, folder in self.folders.items()}
        self.data_csv = data_csv

    def strategy(self, kind: str) -> st.SearchStrategy:
        return st.sampled_from(["artifacts", "bundle"]).flatmap(
            lambda which: st.tuples(st.just(which), manifest_file(self.base[which])))

    def check(self, kind: str, example: tuple) -> Outcome:
        which, raw = example
        folder = self.folders[which]
        (folder / "manifest.json").write_bytes(raw)
        return classify(lambda: self._use(which, folder), (str(folder),  str(self.data_csv)))

    def _use(self, which: str, folder: Path) -> str:
        from edgeft.manifest import check_fields, load_manifest

        _inspect(folder)
        if which == "bundle":
            from edgeft.deploy.bundle import Bundle

            bundle = Bundle(folder)
            scores = bundle.predict(["turn on the lights", "play some music"])
            return "" if len(scores) == 2 else f"{len(scores)} predictions for 2 texts"
        from edgeft.backends.select import open_trainer
        from edgeft.data.records import read_records
        from edgeft.train.examples import ExampleSet

        manifest = check_fields(load_manifest(folder, kind="artifacts"))
        examples = ExampleSet(read_records(self.data_csv, manifest.data), manifest)
        trainer = open_trainer(manifest, "auto", threads=1)
        batch = examples.inputs(np.arange(2))
        batch["labels"] = examples.labels(np.arange(2))
        trainer.train_step(batch)  # one step of training, as edgeft train takes it
        trainer.optimizer_step()
        trainer.eval_step(batch)
        return ""


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
        return profile_file(self.base)

    def check(self, kind: str, example: bytes) -> Outcome:
        from edgeft.devices import load_profile

        self.path.write_bytes(example)
        return classify(lambda: load_profile(self.path) and "", (str(self.path),))


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
            assert outcome.kind in ("accepted", "refused"), f"{kind}: {outcome.kind}\n{outcome.detail}"
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
