"""Reading the user's data files into examples and labels, before tokenization or decoding images
and sound.

Everything here is checked against the manifest as it is read, so a wrong label, a missing
column or a bad value is reported with the file and line it came from, long before training
starts. Rows that merely lack a value are skipped and listed (or refused with ``strict``),
because real exports often have a few incomplete rows that should not stop a run.

The module is longer than most because every source of rows lives here (texts, pairs, tables of
image or WAV paths, class folders): they share one CSV/TSV/JSONL row reader, one way of skipping
and listing rows, and one set of column errors. Arrays (.npz) are read by edgeft.data.arrays.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.arrays import checked_array, checked_inputs, load_npz
from edgeft.data.label_values import LabelReader
from edgeft.data.wav import AUDIO_SUFFIXES
from edgeft.errors import EdgeftError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
FORMATS = (".csv, .tsv or .jsonl (texts, or paths of images or WAV files), .npz (arrays), or a folder of images or "
           "WAV files with one subfolder per class")
# the files of each modality that reads files, and what one is called in messages
MEDIA = {"image": (IMAGE_SUFFIXES, "image file"), "audio": (AUDIO_SUFFIXES, "WAV file")}
PATH_COLUMN = "path"  # the column of a table of image or WAV files, relative to the table's folder
PAIR_COLUMN = "positive"  # embedding data as (text, positive) pairs: a column of texts that match the text column


@dataclass
class Records:
    """Examples read from one source, before tokenization or image decoding."""

    source: str  # the file or folder, for messages
    texts: list[str] | None = None  # text modality
    files: list[Path] | None = None  # image or audio modality: the image or WAV files
    arrays: dict[str, np.ndarray] | None = None  # npz: model inputs by name, axis 0 = example
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    places: list[str] = field(default_factory=list)  # "file:line" (or "file[index]") of each example
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" for each skipped row

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Records:
        """The examples at ``indices`` (e.g. a validation split); skipped rows stay with the source read."""
        idx = np.asarray(indices, dtype=np.int64)
        return Records(
            source=self.source,
            texts=[self.texts[i] for i in idx] if self.texts is not None else None,
            files=[self.files[i] for i in idx] if self.files is not None else None,
            arrays={name: values[idx] for name, values in self.arrays.items()} if self.arrays is not None else None,
            labels=self.labels[idx],
            places=[self.places[i] for i in idx],
        )


def read_records(path: Path | str, manifest: dict[str, Any], text_column: str = "text", label_column: str = "label",
                 strict: bool = False) -> Records:
    """Read a .csv, .tsv, .jsonl or .npz file or a folder of class subfolders, with labels
    converted for the manifest's task.

    ``manifest`` is the manifest's JSON object (``Manifest.data``). For image and audio models a
    table names the files in its ``path`` column (``text_column`` when it is not ``text``),
    relative to the table's folder. With ``strict`` a row with a missing text or label, or a
    file that is missing or of the wrong kind, is an error instead of being skipped.
    """
    path = Path(path)
    modality = manifest["modality"]
    labels = LabelReader(manifest)
    if not path.exists():
        raise EdgeftError(f"The data path {path} does not exist.", where=str(path), hint="check the path.")
    if path.is_dir():
        if modality not in MEDIA:
            raise EdgeftError(f"{path} is a folder, but only image and audio models read folders (this model takes "
                              f"{modality} inputs).", where=str(path), hint=_expected(manifest))
        return _read_class_folder(path, labels, strict, *MEDIA[modality])
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, manifest, labels)
    if suffix not in TEXT_SUFFIXES:
        raise EdgeftError(f"edgeft cannot read {path.suffix or 'files without a suffix'} data.", where=str(path),
                          hint=f"give {FORMATS}.")
    if modality in MEDIA:
        return _read_file_table(path, labels, PATH_COLUMN if text_column == "text" else text_column, label_column,
                                strict, *MEDIA[modality])
    if modality != "text":
        raise EdgeftError(f"{path} holds text rows, but this model takes {modality} inputs.", where=str(path),
                          hint=_expected(manifest))
    columns = _columns(path) if labels.task == "embedding" else []
    pairs = label_column not in columns and PAIR_COLUMN in columns
    if pairs:
        label_column = PAIR_COLUMN
    rows = _rows(path, text_column, label_column)
    texts: list[str] = []
    values: list[Any] = []
    places: list[str] = []
    skipped: list[str] = []
    for place, text, label in _complete_rows(rows, "text", skipped, strict):
        for value, column in [(text, text_column)] + ([(label, label_column)] if pairs else []):
            if not isinstance(value, str):
                raise EdgeftError(f"The text in {place} is {type(value).__name__}, not a string.", where=place,
                                  hint=f"write the {column!r} value as a JSON string.")
        if pairs:  # grouped below, once every pair is read
            texts += [text, label]
            places += [place, place]
            continue
        texts.append(text)
        values.append(labels.from_json(label, place) if suffix == ".jsonl" else labels.from_text(label, place))
        places.append(place)
    _require_examples(path, texts, skipped)
    if pairs:
        values = [labels.group(root) for root in _pair_groups(texts)]
    return Records(source=str(path), texts=texts, labels=labels.stack(values), places=places, skipped=skipped)


def _pair_groups(texts: list[str]) -> list[str]:
    """The group of each text of (text, positive) pairs (texts 2i and 2i + 1), named by one of its
    texts: pairs that share a text join one group (many questions with one answer), so that a
    text is never the negative of its own copy."""
    parent: dict[str, str] = {}

    def root(text: str) -> str:
        parent.setdefault(text, text)
        while parent[text] != text:
            parent[text] = parent[parent[text]]
            text = parent[text]
        return text

    for first, second in zip(texts[::2], texts[1::2]):
        a, b = root(first), root(second)
        if a != b:
            parent[b] = a
    return [root(text) for text in texts]


def read_texts(path: Path | str, text_column: str = "text", skipped: list[str] | None = None) -> list[str]:
    """The texts of a .txt file (one per non-blank line) or of the text column of a .csv, .tsv or
    .jsonl file (what ``edgeft predict`` reads), checked as training data is; rows without a text
    are noted in ``skipped``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    notes = skipped if skipped is not None else []
    rows = _rows(path, text_column, None)
    texts = []
    for place, text, _, problem in rows:
        if problem:
            notes.append(f"{place}: {problem[0]}")
        elif _is_missing(text):
            notes.append(f"{place}: missing text")
        elif not isinstance(text, str):
            raise EdgeftError(f"The text in {place} is {type(text).__name__}, not a string.", where=place,
                              hint=f"write the {text_column!r} value as a JSON string.")
        else:
            texts.append(text)
    return texts


def read_column(path: Path | str, column: str, option: str = "--by") -> dict[str, str]:
    """One more column of a CSV, TSV or JSONL data file, by row place ("file:line", as
    :attr:`Records.places` has it), read by the same readers as the examples; a missing value is ""."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise EdgeftError(f"{option} reads a column of a .csv, .tsv or .jsonl file, and {path} is not one.",
                          where=option, hint=f"leave out {option}, or give the data as a table with that column.")
    rows = _rows(path, column, None, option)
    return {place: "" if _is_missing(value) else str(value) for place, value, _, _ in rows}


def _columns(path: Path) -> list[str]:
    """The column names of a CSV or TSV file's header, or the keys of a JSONL file's objects."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        keys: dict[str, None] = {}
        for line in _read_text(path).split("\n"):
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError:  # the row reader reports it with its line
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
        return list(keys)
    delimiter = "\t" if suffix == ".tsv" else ","
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
        header = next((row for row in reader if row), [])
    except csv.Error:  # the row reader reports it with its line
        return []
    return [name.strip() for name in header]


def _expected(manifest: dict[str, Any]) -> str:
    """What data this model reads, for hints."""
    names = ", ".join(spec["name"] for spec in manifest["inputs"])
    return {"text": "give a .csv, .tsv or .jsonl file with a text and a label column.",
            "image": "give a folder with one subfolder of images per class, or a table with a path and a label column.",
            "audio": "give a folder with one subfolder of WAV files per class, or a table with a path and a label "
                     "column."}.get(
        manifest["modality"], f"give a .npz file with the arrays {names} and labels.")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _skip(place: str, reason: str, skipped: list[str], strict: bool, fix: str = "fill it in or remove it") -> None:
    """Note an unusable row or file, or refuse it with ``strict``."""
    if strict:
        raise EdgeftError(f"{place}: {reason}.", where=place,
                          hint=f"{fix} (without --strict such entries are skipped and listed).")
    skipped.append(f"{place}: {reason}")


def _require_examples(path: Path, examples: list[Any], skipped: list[str]) -> None:
    if not examples:
        detail = f"; all {len(skipped)} row(s) lack a value" if skipped else ""
        raise EdgeftError(f"{path} holds no usable examples{detail}.", where=str(path),
                          hint=f"give a file with at least one complete example ({FORMATS}).")


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with an optional BOM, and a decoding error located to its line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EdgeftError(f"{path} cannot be read: {exc.strerror or exc}.", where=str(path),
                          hint="check the file's permissions.") from exc
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise EdgeftError(f"{path} is not UTF-8 text (byte {raw[exc.start]:#04x} on line {line}).",
                          where=f"{path}:{line}", hint="save the file as UTF-8 (most editors and spreadsheets "
                                                       "offer it under 'Save as' / encoding).") from exc


_SEPARATORS = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "vertical bars"}


def _missing_column(path: Path, column: str, option: str, present: list[str],
                    delimiter: str | None = None) -> EdgeftError:
    hint = f"name the right column with {option}, or fix the header row."
    if delimiter is not None:  # a header read as one column, because another separator divides it
        joined = delimiter.join(present)
        other = next((sep for sep in _SEPARATORS if sep != delimiter and sep in joined), None)
        if other is not None:
            hint = (f"the header looks separated by {_SEPARATORS[other]}, but edgeft reads .csv files separated by "
                    "commas and .tsv files by tabs: save the file with commas (as .csv) or tabs (as .tsv).")
    return EdgeftError(f"{path} has no column {column!r}; its columns are: {', '.join(present) or 'none'}.",
                       where=str(path), hint=hint)


Row = tuple[str, Any, Any, "tuple[str, str] | None"]  # place, text, label, (problem, what to do) or None


def _rows(path: Path, column: str, label_column: str | None, option: str = "--text-column") -> list[Row]:
    """(place, value, label, problem) of each row of a .jsonl, .tsv or .csv file (by its suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _json_rows(path, column, label_column, option)
    return _table_rows(path, "\t" if suffix == ".tsv" else ",", column, label_column, option)


def _complete_rows(rows: list[Row], what: str, skipped: list[str], strict: bool) -> Iterator[tuple[str, Any, Any]]:
    """(place, value, label) of the rows that have both; the others are skipped and listed (or
    refused with ``strict``), a row with a problem with its fix."""
    for place, value, label, problem in rows:
        if problem:
            _skip(place, problem[0], skipped, strict, fix=problem[1])
            continue
        missing = [name for name, given in ((what, value), ("label", label)) if _is_missing(given)]
        if missing:
            _skip(place, "missing " + " and ".join(missing), skipped, strict)
            continue
        yield place, value, label


def _table_rows(path: Path, delimiter: str, text_column: str, label_column: str | None,
                text_option: str = "--text-column") -> list[Row]:
    """(place, text, label, problem) of each non-blank row of a CSV or TSV file with a header row
    (label None without a ``label_column``).

    TSV is read without quote handling: tab-separated files carry quotes as ordinary text,
    and treating them as CSV quoting would silently merge lines. A row with more (non-empty)
    fields than the header, most often a text holding an unquoted comma, has a problem: reading
    its first fields would cut the text, so the readers skip and list it (or refuse it).
    """
    text = _read_text(path)
    kind = "TSV" if delimiter == "\t" else "CSV"
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[Row] = []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                for column, option in ((text_column, text_option), (label_column, "--label-column")):
                    if column is not None and column not in header:
                        raise _missing_column(path, column, option, header, delimiter)
                text_at = header.index(text_column)
                label_at = header.index(label_column) if label_column is not None else None
                continue
            problem = None
            if any(cell.strip() for cell in row[len(header):]):
                problem = (f"{len(row)} fields, but the header has {len(header)}",
                           "put a text that holds a comma in double quotes" if delimiter == "," else
                           "remove the extra tabs")
            rows.append((f"{path}:{start}", row[text_at] if text_at < len(row) else None,
                         row[label_at] if label_at is not None and label_at < len(row) else None, problem))
    except csv.Error as exc:
        raise EdgeftError(f"{path} is not valid {kind}: {exc}.",
                          where=f"{path}:{reader.line_num}", hint="fix the row, or re-export the file.") from exc
    if header is None:
        raise EdgeftError(f"{path} is empty.", where=str(path),
                          hint=f"give a header row naming the {text_column!r}"
                               + (f" and {label_column!r} columns." if label_column else " column."))
    return rows


def _json_rows(path: Path, text_column: str, label_column: str | None, text_option: str = "--text-column") -> list[Row]:
    """(place, text, label, None) of each non-blank line of a JSONL file (one JSON object per line).

    A key absent from every object is a wrong column name and an error; absent from some
    objects it is a missing value.
    """
    rows: list[Row] = []
    keys: dict[str, None] = {}
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        place = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EdgeftError(f"{place} is not valid JSON: {exc.msg} (column {exc.colno}).", where=place,
                              hint="write one JSON object per line.") from exc
        except (ValueError, RecursionError) as exc:  # a number with thousands of digits, or nesting too deep
            raise EdgeftError(f"{place} cannot be read: {str(exc).split(';')[0]}.", where=place,
                              hint="write one flat JSON object per line with ordinary numbers.") from exc
        if not isinstance(record, dict):
            example = json.dumps({text_column: "...", label_column: "..."})
            raise EdgeftError(f"{place} holds a JSON {type(record).__name__}, not an object.", where=place,
                              hint=f"write one JSON object per line, e.g. {example}.")
        keys.update(dict.fromkeys(record))
        rows.append((place, record.get(text_column), record.get(label_column) if label_column else None, None))
    if not rows:
        raise EdgeftError(f"{path} is empty.", where=str(path), hint="write one JSON object per line.")
    for column, option in ((text_column, text_option), (label_column, "--label-column")):
        if column is not None and column not in keys:
            raise _missing_column(path, column, option, list(keys))
    return rows


def _read_class_folder(folder: Path, labels: LabelReader, strict: bool, suffixes: tuple[str, ...],
                       kind: str) -> Records:
    """Image or WAV files under one subfolder per class; the subfolder's name is the label."""
    if labels.task != "classification":
        raise EdgeftError(f"A folder of class subfolders gives one class per file, but this model is {labels.task}.",
                          where=str(folder), hint=f"give a table with a {PATH_COLUMN} and a label column instead.")
    files: list[Path] = []
    values: list[Any] = []
    skipped: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            reason = "missing label (not inside a class subfolder)" if _is_kind(entry, suffixes) else _not_a(kind)
            _skip(str(entry), reason, skipped, strict)
            continue
        index = labels.class_index(entry.name, str(entry), what="class folder")
        for file in sorted(entry.rglob("*")):
            if any(part.startswith(".") for part in file.relative_to(entry).parts) or file.is_dir():
                continue
            if not _is_kind(file, suffixes):
                _skip(str(file), _not_a(kind), skipped, strict)
                continue
            files.append(file)
            values.append(index)
    _require_examples(folder, files, skipped)
    return Records(source=str(folder), files=files, labels=labels.stack(values),
                   places=[str(p) for p in files], skipped=skipped)


def _read_file_table(path: Path, labels: LabelReader, path_column: str, label_column: str, strict: bool,
                     suffixes: tuple[str, ...], kind: str) -> Records:
    """A table of files (images or WAV files) and their labels; relative paths start at the table's folder."""
    columns = _columns(path)
    if columns and path_column not in columns:
        raise EdgeftError(f"{path} has no {path_column!r} column, and this model reads {kind}s: a table names them in "
                          f"a column of paths (its columns are: {', '.join(columns)[:200]}).", where=str(path),
                          hint=f"give the {kind}s' paths (relative to the table) in a {PATH_COLUMN!r} column, or name "
                               "the column with --text-column; or give a folder with one subfolder per class.")
    option = "--text-column (the column of file paths)"
    rows = _rows(path, path_column, label_column, option)
    files: list[Path] = []
    values: list[Any] = []
    places: list[str] = []
    skipped: list[str] = []
    for place, name, label in _complete_rows(rows, path_column, skipped, strict):
        if not isinstance(name, str):
            raise EdgeftError(f"The path in {place} is {type(name).__name__}, not a string.", where=place,
                              hint=f"write the {path_column!r} value as a JSON string.")
        file = path.parent / name.strip()
        try:
            exists = file.is_file()
        except OSError as exc:  # a name too long, a folder it may not read
            _skip(place, f"{name.strip()[:100]} cannot be read ({exc.strerror or exc})", skipped, strict)
            continue
        if not exists:
            _skip(place, f"{name.strip()} does not exist", skipped, strict, fix="correct the path (relative to the "
                                                                               "table's folder) or remove the row")
            continue
        if not _is_kind(file, suffixes):
            _skip(place, f"{name.strip()} is {_not_a(kind)}", skipped, strict)
            continue
        files.append(file)
        values.append(labels.from_json(label, place) if path.suffix.lower() == ".jsonl" else labels.from_text(label, place))
        places.append(place)
    _require_examples(path, files, skipped)
    return Records(source=str(path), files=files, labels=labels.stack(values), places=places, skipped=skipped)


def _not_a(kind: str) -> str:
    return f"not an {kind}" if kind[0] in "aeiou" else f"not a {kind}"


def _is_kind(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.suffix.lower() in suffixes


def _read_npz(path: Path, manifest: dict[str, Any], labels: LabelReader) -> Records:
    """Model inputs and labels stored as arrays, checked against the manifest's names, dtypes and shapes."""
    arrays = load_npz(path)
    label_name = manifest["labels"]["input"]["name"]
    inputs = checked_inputs(path, arrays, manifest, [label_name])
    count = len(arrays[label_name])
    checked = checked_array(path, labels.array_shape(arrays[label_name]), labels.spec)
    return Records(source=str(path), arrays=inputs, labels=labels.from_array(str(path), checked),
                   places=[f"{path}[{i}]" for i in range(count)])
