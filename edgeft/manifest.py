"""The manifest: the contract between the host that exports and the device that trains.

``manifest.json`` sits next to the ONNX files and checkpoint and describes everything a reader
needs (task, inputs, labels, what trains, versions) plus the sha256 of every file. Every reader
loads it through :func:`load_manifest`, which refuses a newer format, a path that escapes the
folder, and any file whose bytes do not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
TAIL_PREFIX = "tail_"  # file keys of the tail artifacts used with the frozen-prefix cache


@dataclass
class Manifest:
    """A parsed manifest. ``data`` is the JSON object; helpers read the common fields."""

    folder: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def label_names(self) -> list[str]:
        return list(self.data.get("labels", {}).get("names", []))

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.data["inputs"])

    def path(self, key: str) -> Path:
        """Absolute path of the file registered under ``files[key]``."""
        return self.folder / self.data["files"][key]["path"]


def file_entry(folder: Path, relpath: str) -> dict[str, Any]:
    """The manifest record of one file: relative path, size and sha256."""
    path = folder / relpath
    return {"path": relpath, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(folder: Path, data: dict[str, Any], files: dict[str, str]) -> Manifest:
    """Hash ``files`` (key -> path relative to ``folder``) and write ``manifest.json`` atomically."""
    record = dict(data)
    record["format_version"] = FORMAT_VERSION
    record["files"] = {key: file_entry(folder, rel) for key, rel in sorted(files.items())}
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Manifest(folder=folder, data=record)


def _safe_relpath(folder: Path, rel: Any, where: Path) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise EdgeftError(f"The manifest lists an invalid file path {rel!r}.", where=str(where),
                          hint="re-create the folder with edgeft; do not edit the manifest by hand.")
    resolved = (folder / rel).resolve()
    if folder.resolve() not in resolved.parents:
        raise EdgeftError(f"The manifest path {rel!r} points outside its folder.", where=str(where),
                          hint="this folder is not safe to use; re-create it with edgeft.")
    return resolved


def load_manifest(folder: Path | str, verify: bool = True, kind: str | None = None) -> Manifest:
    """Read and check a folder's manifest; with ``verify`` every file's sha256 is checked."""
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise EdgeftError(f"{folder} is not a folder.", where=str(folder),
                          hint="give the path of an edgeft artifact folder or bundle.")
    if not where.is_file():
        raise EdgeftError(f"{folder} has no {MANIFEST_NAME}, so it is not an edgeft folder.",
                          where=str(folder), hint="create it with `edgeft export` (or `edgeft deploy`).")
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeftError(f"The manifest cannot be read: {exc}.", where=str(where),
                          hint="the folder is damaged; re-create it with edgeft.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise EdgeftError("The manifest is not an edgeft manifest (no 'files' table).", where=str(where),
                          hint="re-create the folder with edgeft.")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EdgeftError("The manifest has no valid format_version.", where=str(where),
                          hint="re-create the folder with edgeft.")
    if version > FORMAT_VERSION:
        raise EdgeftError(
            f"This folder uses manifest format {version}, newer than this edgeft reads ({FORMAT_VERSION}).",
            where=str(where), hint="upgrade edgeft on this machine (pip install -U edgeft).")
    if kind is not None and data.get("kind") != kind:
        raise EdgeftError(f"This folder holds {data.get('kind')!r}, but {kind!r} is needed here.",
                          where=str(where), hint=f"give the path of an edgeft {kind} folder.")
    for key, entry in data["files"].items():
        if not isinstance(entry, dict):
            raise EdgeftError(f"The manifest entry for {key!r} is malformed.", where=str(where),
                              hint="re-create the folder with edgeft.")
        _safe_relpath(folder, entry.get("path"), where)
    manifest = Manifest(folder=folder, data=data)
    if verify:
        problems = verify_files(manifest)
        if problems:
            raise EdgeftError(
                "Files in this folder do not match its manifest: " + "; ".join(problems) + ".",
                where=str(folder), hint="the folder was changed or damaged in transfer; copy it again or re-create it.")
    return manifest


def verify_files(manifest: Manifest) -> list[str]:
    """Names of the files that are missing or whose size or sha256 differs (empty when all match)."""
    problems = []
    for key, entry in manifest.data["files"].items():
        path = manifest.folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            problems.append(f"{entry['path']} was modified (sha256 mismatch)")
    return problems
