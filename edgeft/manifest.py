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
from edgeft.manifest_fields import check_folder

MANIFEST_NAME = "manifest.json"
RUN_FILE = "run.json"  # the record of a training run (edgeft.training.loop), which has no manifest
FORMAT_VERSION = 1
TAIL_PREFIX = "tail_"  # file keys of the tail artifacts used with the frozen-prefix cache
L2SP_INPUT = "l2sp_strength"  # the scalar input of training graphs built with the L2-SP term


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

    @property
    def l2sp(self) -> float | None:
        """The export's L2-SP strength (the default of training), or None when the graphs have no L2-SP term."""
        section = self.data.get("l2sp")
        return float(section["strength"]) if isinstance(section, dict) else None

    def path(self, key: str) -> Path:
        """Absolute path of the file registered under ``files[key]``."""
        entry = self.data.get("files", {}).get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise EdgeftError(f"The manifest lists no {key!r} file, which is needed here.",
                              where=str(self.folder / MANIFEST_NAME),
                              hint="re-create the folder with this edgeft version; do not edit the manifest by hand.")
        return self.folder / entry["path"]


def file_entry(folder: Path, relpath: str) -> dict[str, Any]:
    """The manifest record of one file: relative path, size and sha256."""
    path = folder / relpath
    return {"path": relpath, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(folder: Path, data: dict[str, Any], files: dict[str, str], check: bool = True) -> Manifest:
    """Hash ``files`` (key -> path relative to ``folder``) and write ``manifest.json`` atomically.

    With ``check`` the record first passes the same models its readers check it with
    (:func:`check_fields`), so no writer can produce a manifest that a reader refuses."""
    record = dict(data)
    record["format_version"] = FORMAT_VERSION
    record["files"] = {key: file_entry(folder, rel) for key, rel in sorted(files.items())}
    manifest = Manifest(folder=folder, data=record)
    if check:
        check_fields(manifest)
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return manifest


def _safe_relpath(folder: Path, rel: Any, where: Path) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise EdgeftError(f"The manifest lists an invalid file path {rel!r}.", where=str(where),
                          hint="re-create the folder with edgeft; do not edit the manifest by hand.")
    resolved = (folder / rel).resolve()
    if folder.resolve() not in resolved.parents:
        raise EdgeftError(f"The manifest path {rel!r} points outside its folder.", where=str(where),
                          hint="this folder is not safe to use; re-create it with edgeft.")
    return resolved


TRAINABLE_KINDS = ("artifacts", "package")  # folders edgeft train, evaluate and deploy take


def load_manifest(folder: Path | str, verify: bool = True, kind: str | tuple[str, ...] | None = None) -> Manifest:
    """Read and check a folder's manifest; with ``verify`` every file's sha256 is checked."""
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise EdgeftError(f"{folder} is not a folder.", where=str(folder),
                          hint="give the path of an edgeft artifact folder or bundle.")
    if not where.is_file():
        if (folder / RUN_FILE).is_file():
            raise _run_folder(folder, kind)
        raise EdgeftError(f"{folder} has no {MANIFEST_NAME}, so it is not an edgeft artifact folder or bundle.",
                          where=str(folder), hint="give a folder written by `edgeft export` (artifacts) or "
                                                  "`edgeft deploy` (a bundle).")
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: also undecodable text, 5000-digit numbers
        raise EdgeftError(f"The manifest cannot be read: {str(exc).split(';')[0]}.", where=str(where),
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
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and data.get("kind") not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise EdgeftError(f"This folder holds {data.get('kind')!r}, but {wanted} is needed here.",
                          where=str(where), hint=f"give the path of an edgeft {' or '.join(kinds)} folder.")
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


def _run_folder(folder: Path, kind: str | None) -> EdgeftError:
    """The error for a run folder (edgeft train's, which has a run.json, no manifest) given where
    an artifact folder or a bundle is needed: it says what a run folder is and what to give."""
    try:
        artifacts = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("artifacts")
    except (OSError, ValueError, AttributeError, RecursionError):
        artifacts = None
    if isinstance(artifacts, dict):  # a record that places the artifacts relative to the run folder
        artifacts = artifacts.get("absolute") or artifacts.get("path")
    trained_from = f"the artifact folder it was trained from ({artifacts})" if isinstance(artifacts, str) else \
        "the artifact folder it was trained from"
    needed = {"artifacts": "an artifact folder", "bundle": "a bundle"}.get(kind or "", "an artifact folder or bundle")
    hint = {"bundle": f"deploy the run first (`edgeft deploy {folder}`) and give the bundle it writes."}.get(
        kind or "", f"give {trained_from}; the run itself is used by `edgeft evaluate {folder} DATA` and "
                    f"`edgeft deploy {folder}`.")
    return EdgeftError(f"{folder} is a run folder (written by edgeft train), not {needed}.", where=str(folder),
                       hint=hint)


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


AUDIO_FEATURE_FILE = "audio_features.npz"  # the window and mel filters of the spectrogram recipes
# the files table's entries of preprocessing files, which every folder downstream of export carries
PREPROCESSING_FILES = ("tokenizer", "preprocessor_config", AUDIO_FEATURE_FILE.split(".")[0])


def check_fields(manifest: Manifest) -> Manifest:
    """Check the fields training, evaluation, deployment and prediction read (with the models of
    :mod:`edgeft.manifest_fields`); returns ``manifest``."""
    check_folder(manifest.folder / MANIFEST_NAME, manifest.kind, manifest.data)
    return manifest
