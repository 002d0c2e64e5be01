"""Which folders edgeft may write over: new ones, empty ones, and (with --force) its own.

``--force`` replaces an output folder, and one typo (``-o . --force``) must not wipe a project.
So a folder is replaced only when edgeft recognises it as one it wrote, of the kind being
written: an artifact folder or a bundle by its ``manifest.json``, a run by its ``run.json``.
Anything else is refused, with or without --force, and the message never suggests --force
for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from edgeft.errors import EdgeftError
from edgeft.manifest import MANIFEST_NAME, RUN_FILE

KINDS = {"artifacts": "an artifact folder", "package": "a device package", "bundle": "a bundle", "run": "a run"}


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def edgeft_kind(folder: Path) -> str | None:
    """The kind of edgeft folder ``folder`` is (its manifest's ``kind``, such as ``artifacts`` or
    ``bundle``, or ``run``); None when edgeft did not write it.

    A manifest counts when it is a JSON object with a kind, a format version and a file table, a run record
    when it names the artifacts and their manifest's sha256 (a user's own run.json does not):
    ``{"artifacts": PATH, "manifest_sha256": ...}``, or ``{"artifacts": {"path": ...,
    "manifest_sha256": ...}}`` in records that place the artifacts relative to the run.
    """
    folder = Path(folder)
    manifest = _json_object(folder / MANIFEST_NAME)
    if manifest is not None and isinstance(manifest.get("kind"), str) and manifest["kind"] \
            and isinstance(manifest.get("files"), dict) and isinstance(manifest.get("format_version"), int):
        return str(manifest["kind"])
    record = _json_object(folder / RUN_FILE) or {}
    artifacts = record.get("artifacts")
    if isinstance(artifacts, dict):
        artifacts, digest = artifacts.get("path"), artifacts.get("manifest_sha256")
    else:
        digest = record.get("manifest_sha256")
    return "run" if isinstance(artifacts, str) and isinstance(digest, str) else None


def _kind_name(kind: str) -> str:
    return KINDS.get(kind, f"an edgeft {kind} folder")


def check_output(dest: Path, force: bool, kind: str, option: str = "--output",
                 keep_hint: str | None = None) -> None:
    """Raise a clear EdgeftError unless ``dest`` may be written as a ``kind`` folder: it does not
    exist, is an empty folder, or (with ``force``) is an edgeft folder of that kind.

    ``keep_hint`` is what to do when ``dest`` is such a folder and ``force`` was not given.
    """
    dest = Path(dest)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise EdgeftError(f"{dest} is a file, not a folder.", where=str(dest), hint=f"choose another {option}.")
    try:
        empty = not any(dest.iterdir())
    except OSError as exc:
        raise EdgeftError(f"The folder {dest} cannot be read: {exc.strerror or exc}.", where=str(dest),
                          hint=f"check its permissions, or choose another {option}.") from exc
    if empty:
        return
    found = edgeft_kind(dest)
    if found is None:
        raise EdgeftError(
            f"The folder {dest} already exists and holds files edgeft did not write, so edgeft will not "
            "replace it (not even with --force).", where=str(dest),
            hint=f"choose another {option}, for example a new subfolder of {dest}.")
    if found != kind:
        raise EdgeftError(f"The folder {dest} is {_kind_name(found)}, not {_kind_name(kind)}, so edgeft will not replace it.",
                          where=str(dest), hint=f"choose another {option}; --force replaces only {_kind_name(kind)}.")
    if not force:
        raise EdgeftError(f"The folder {dest} already exists and holds {_kind_name(kind)} written by edgeft.",
                          where=str(dest),
                          hint=keep_hint or f"pass --force to replace it (only once the new one is complete), "
                                            f"or choose another {option}.")


def output_check(kind: str, option: str = "--output") -> Callable[[Path, bool], None]:
    """:func:`check_output` for ``kind`` as the ``check`` of :func:`edgeft.fsutil.staged_folder`, which
    runs it before the work starts and again just before the new folder replaces the old one."""
    return lambda dest, force: check_output(dest, force, kind, option)
