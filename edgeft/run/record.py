"""The run record (``run.json``): what a run was trained from, relocatable with its folder.

A run refers to its artifact folder and its data files relative to the run folder (with their
absolute paths as a second guess), never relative to the working directory of the command that
made it: ``edgeft evaluate``, ``deploy`` and ``--resume`` work from any directory and after the
run and its artifacts are copied elsewhere together. Data files are identified by their content
(sha256), so ``--resume`` accepts the same file given relatively, absolutely or from another
place, and refuses a changed one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_text, sha256_file
from edgeft.manifest import RUN_FILE
from edgeft.validation import check, in_file, json_style

RECORD_FORMAT = 2  # 1: paths as given on the command line (relative to the caller's directory)
_UNREADABLE = "start a new --run-dir (or --force to start this one over)."
_STYLE = json_style("run record", _UNREADABLE)
Digest = Field(pattern=r"^[0-9a-f]{64}$")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Place(_Part):
    """Where a folder or file is: relative to the run folder, and absolute."""

    path: str
    absolute: str


class ArtifactsPlace(Place):
    manifest_sha256: str = Digest


class DataFile(Place):
    sha256: str = Digest


class RunData(_Part):
    train: Optional[DataFile]  # None: a federated run, whose training data stayed on the devices
    val: Optional[DataFile]


class RecordFields(BaseModel):
    """``run.json`` of format 2, checked when a record is made and when it is read (the
    record's other entries, e.g. the data's columns, are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: Literal[2]
    artifacts: ArtifactsPlace
    data: RunData
    config: dict[str, Any]


def content_sha256(path: Path) -> str:
    """sha256 of a data file, or of a folder's files (names and contents, e.g. an image folder)."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode())
        return digest.hexdigest()
    return sha256_file(path)


def _place(target: Path, run_dir: Path) -> dict[str, str]:
    """Where ``target`` is: relative to the run folder, and absolute."""
    absolute = Path(target).resolve()
    return {"path": os.path.relpath(absolute, Path(run_dir).resolve()), "absolute": str(absolute)}


def _found(entry: Any, run_dir: Path) -> Path | None:
    """The recorded place that exists: relative to the run folder first, then absolute."""
    if isinstance(entry, str):  # format 1: the path as the user typed it
        return Path(entry) if Path(entry).exists() else None
    if not isinstance(entry, dict):
        return None
    for candidate in (Path(run_dir) / str(entry.get("path", "")), Path(str(entry.get("absolute", "")))):
        if str(candidate) and candidate.exists():
            return candidate
    return None


@dataclass
class RunRecord:
    """A parsed ``run.json`` and the folder it lives in."""

    run_dir: Path
    data: dict[str, Any]
    _files: dict[str, Path | None] = field(default_factory=dict, repr=False)  # data_file's answers (hashing is slow)

    @staticmethod
    def create(run_dir: Path, artifacts: Path, manifest_sha256: str, train: Path | None, val: Path | None,
               columns: dict[str, str], config: dict[str, Any],
               hashed: tuple[Path | None, Path | None] | None = None) -> RunRecord:
        """The record of a new run; ``hashed``: the files to hash when ``train`` / ``val`` are where
        the run will keep copies of them (not written yet). ``train`` is None for a federated run,
        whose training data stayed on the devices."""
        sources = hashed or (train, val)

        def entry(path: Path | None, source: Path | None) -> dict[str, str] | None:
            return {**_place(path, run_dir), "sha256": content_sha256(source or path)} if path else None

        data = {"format": RECORD_FORMAT,
                "artifacts": {**_place(artifacts, run_dir), "manifest_sha256": manifest_sha256},
                "data": {"train": entry(train, sources[0]), "val": entry(val, sources[1])},
                **columns, "config": config}
        check(RecordFields, data, in_file(Path(run_dir) / RUN_FILE), style=_STYLE)
        return RunRecord(Path(run_dir), data)

    @staticmethod
    def read(run_dir: Path) -> RunRecord:
        path = Path(run_dir) / RUN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8, huge numbers
            raise EdgeftError(f"The run record cannot be read: {str(exc)[:200]}.", where=str(path),
                              hint=_UNREADABLE) from exc
        if not isinstance(data, dict) or "artifacts" not in data:
            raise EdgeftError("The run record is not an edgeft run.json.", where=str(path), hint=_UNREADABLE)
        if data.get("format") == RECORD_FORMAT:  # format 1 (paths as typed) is read as it is
            check(RecordFields, data, in_file(path), style=_STYLE)
        return RunRecord(Path(run_dir), data)

    def write(self) -> None:
        atomic_write_text(self.run_dir / RUN_FILE, json.dumps(self.data, indent=2) + "\n")

    @property
    def manifest_sha256(self) -> str | None:
        entry = self.data.get("artifacts")
        return entry.get("manifest_sha256") if isinstance(entry, dict) else self.data.get("manifest_sha256")

    def artifacts(self) -> Path:
        """The artifact folder (or device package) the run trained, wherever the pair now is."""
        found = _found(self.data.get("artifacts"), self.run_dir)
        if found is None:
            entry = self.data.get("artifacts")
            shown = entry.get("path") if isinstance(entry, dict) else entry
            raise EdgeftError(f"The artifact folder this run was trained from is not where the run expects it "
                              f"({shown!r} from the run folder).", where=str(self.run_dir / RUN_FILE),
                              hint="copy the artifact folder next to the run as it was (or to its recorded "
                                   "absolute path); a run and its artifacts move together.")
        return found

    def data_file(self, key: str) -> Path | None:
        """The training (``train``) or validation (``val``) data, if the run had it and it is still reachable
        with the same content; None when it cannot be found or was changed."""
        if key not in self._files:
            self._files[key] = self._data_file(key)
        return self._files[key]

    def _data_file(self, key: str) -> Path | None:
        if self.data.get("format") == RECORD_FORMAT:
            entry = (self.data.get("data") or {}).get(key)
            found = _found(entry, self.run_dir) if entry else None
            if found is None or content_sha256(found) != entry.get("sha256"):
                return None
            return found
        return _found(self.data.get(key), self.run_dir)  # format 1

    def recorded(self, key: str) -> str | None:
        """How the data file ``key`` was recorded, for messages."""
        if self.data.get("format") == RECORD_FORMAT:
            entry = (self.data.get("data") or {}).get(key)
            return entry.get("absolute") if isinstance(entry, dict) else None
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def same_run(self, other: RunRecord, defaults: dict[str, Any] | None = None) -> str | None:
        """What differs from ``other`` (a record of the same options now), or None: the resume check.
        ``defaults`` fill the config options a record written by an older edgeft does not have."""
        if self.manifest_sha256 != other.manifest_sha256:
            return "artifacts"
        for key in ("train", "val"):
            if self.data.get("format") == RECORD_FORMAT:
                mine = ((self.data.get("data") or {}).get(key) or {}).get("sha256")
            else:  # format 1 recorded paths only: compare the content of the file it names
                old = self.data.get(key)
                mine = content_sha256(Path(old)) if isinstance(old, str) and Path(old).exists() else old
            theirs = ((other.data.get("data") or {}).get(key) or {}).get("sha256")
            if mine != theirs:
                return f"{key} data" if key == "val" else "training data"
        for key in ("text_column", "label_column"):
            if self.data.get(key) != other.data.get(key):
                return key.replace("_", " ")
        saved = self.data.get("config")
        if not isinstance(saved, dict) or {**(defaults or {}), **saved} != other.data.get("config"):
            return "config"
        return None
