"""Crash-safe writes: sha256_file, atomic_write_bytes/_text (a failed write keeps the old file and
leaves no temp file) and staged_folder (a folder appears only complete; a failure keeps the old one)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from edgeft import fsutil
from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_bytes, atomic_write_text, sha256_file, staged_folder, write_failed


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def fail_on(monkeypatch, attr: str, exc: BaseException, when=lambda *a: True) -> None:
    """Make ``fsutil.os.<attr>`` raise ``exc`` for calls where ``when(*args)`` holds."""
    real = getattr(os, attr)

    def fake(*args, **kwargs):
        if when(*args):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(fsutil.os, attr, fake)


def test_sha256_file_reads_in_chunks(tmp_path):
    data = os.urandom(1000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=7) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert names(target.parent) == ["out.bin"]  # no temp file left


def test_atomic_write_text_is_utf8(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "h\u00e9llo \u2713\n")
    assert (tmp_path / "t.txt").read_bytes() == "h\u00e9llo \u2713\n".encode()


def test_failed_rename_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")
    fail_on(monkeypatch, "replace", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(EdgeftError, match="the disk is full") as info:
        atomic_write_text(target, "new")
    assert info.value.where == str(target)
    assert "nothing was changed" in info.value.hint
    assert target.read_text() == "old"
    assert names(tmp_path) == ["out.json"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("writer crashed")])
def test_interrupted_write_keeps_old_content_and_no_temp(tmp_path, monkeypatch, exc):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    fail_on(monkeypatch, "fsync", exc)  # after the data went to the temp file, before the rename
    with pytest.raises(type(exc)):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["model.onnx"]


def test_temp_file_that_cannot_be_created_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", refuse)
    with pytest.raises(EdgeftError, match="Could not write .*: Permission denied") as info:
        atomic_write_text(tmp_path / "run.json", "{}")
    assert info.value.where == str(tmp_path / "run.json")


def test_write_failed_message():
    assert write_failed(Path("x"), OSError(errno.ENOSPC, "No space")).what == "Could not write x: the disk is full."
    assert write_failed(Path("x"), OSError(errno.EROFS, "Read-only file system")).what == \
        "Could not write x: Read-only file system."


def test_staged_folder_moves_complete_folder_into_place(tmp_path):
    dest = tmp_path / "out"
    with staged_folder(dest) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".out.") and stage.name.endswith(".partial")
        assert not dest.exists()  # nothing visible until the body finishes
        (stage / "model.onnx").write_bytes(b"m")
    assert names(dest) == ["model.onnx"]
    assert names(tmp_path) == ["out"]


def test_staged_folder_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with staged_folder(tmp_path / "out") as stage:
            (stage / "half.bin").write_bytes(b"x")
            raise ValueError("boom")
    assert names(tmp_path) == []


def test_staged_folder_refuses_existing_without_force(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(EdgeftError, match="already exists") as info:
        with staged_folder(dest):
            pytest.fail("body must not run")
    assert info.value.where == str(dest) and "--force" in info.value.hint
    assert names(tmp_path) == ["out"] and names(dest) == ["keep.txt"]


def test_staged_folder_force_replaces_only_when_complete(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(dest, force=True) as stage:
            (stage / "new.txt").write_text("new")
            raise RuntimeError("crash while building")
    assert names(dest) == ["old.txt"] and names(tmp_path) == ["out"]
    with staged_folder(dest, force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert names(dest) == ["new.txt"]
    assert names(tmp_path) == ["out"]  # no .partial or .old-* left


def test_staged_folder_replaces_in_one_atomic_exchange(tmp_path, monkeypatch):
    """Where the system can swap two folders atomically, a replace never renames the old folder
    aside: at every moment ``dest`` is the complete old or the complete new folder."""
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    fail_on(monkeypatch, "replace", AssertionError("the old folder was renamed aside"),
            when=lambda src, dst: Path(src) == dest)
    if not fsutil.exchange_paths(tmp_path, tmp_path):  # swapping a folder with itself: a harmless probe
        pytest.skip("no atomic exchange on this system or file system")
    with staged_folder(dest, force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert names(dest) == ["new.txt"] and names(tmp_path) == ["out"]


def test_staged_folder_failed_final_rename_keeps_old_folder(tmp_path, monkeypatch):
    """Without an atomic exchange, the fallback's second rename failing puts the old folder back."""
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    monkeypatch.setattr(fsutil, "exchange_paths", lambda first, second: False)
    fail_on(monkeypatch, "replace", OSError(errno.EIO, "Input/output error"),
            when=lambda src, dst: Path(src).name.endswith(".partial"))
    with pytest.raises(EdgeftError, match="Input/output error"):
        with staged_folder(dest, force=True) as stage:
            (stage / "new.txt").write_text("new")
    assert names(dest) == ["old.txt"]
    assert names(tmp_path) == ["out"]


def test_staged_folder_checks_the_destination_again_before_replacing_it(tmp_path):
    """A folder that stopped being edgeft's while the new one was built (the user put their files
    there) is not replaced: the check runs again just before the swap."""
    from edgeft.outputs import output_check

    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "manifest.json").write_text('{"kind": "bundle", "format_version": 1, "files": {}}')
    with pytest.raises(EdgeftError, match="holds files edgeft did not write"):
        with staged_folder(dest, force=True, check=output_check("bundle")) as stage:
            (stage / "model.onnx").write_bytes(b"new")
            (dest / "manifest.json").unlink()
            (dest / "thesis.tex").write_text("mine")
    assert names(dest) == ["thesis.tex"] and names(tmp_path) == ["bundle"]


def test_atomic_writes_honour_the_umask(tmp_path):
    """mkstemp and mkdtemp make private files and folders; what edgeft writes gets the umask's modes."""
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.json", "{}")
        with staged_folder(tmp_path / "out") as stage:
            (stage / "a").write_text("a")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def test_staged_folder_replaces_the_current_folder_from_beside_it(tmp_path, monkeypatch):
    """`-o . --force` inside an edgeft folder builds the new one next to it, not inside it."""
    from edgeft.outputs import output_check

    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "manifest.json").write_text('{"kind": "bundle", "format_version": 1, "files": {}}')
    monkeypatch.chdir(dest)
    with staged_folder(Path("."), force=True, check=output_check("bundle")) as stage:
        assert stage.parent == tmp_path
        (stage / "model.onnx").write_bytes(b"new")
    assert names(tmp_path / "bundle") == ["model.onnx"] and names(tmp_path) == ["bundle"]


def test_a_folder_moved_away_while_a_library_writes_into_it_is_a_clear_error(tmp_path):
    """A native library (ONNX Runtime) reports a file it cannot create as a RuntimeError; when the
    folder being written vanished meanwhile, that is the user's clear error, not a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(EdgeftError, match="was moved or removed while step-1 was being written") as info:
        with staged_folder(run / "checkpoints" / "step-1"):
            os.replace(run, tmp_path / "moved")
            raise RuntimeError("Failed to open file for writing")
    assert info.value.where == str(run / "checkpoints") and info.value.hint
    with pytest.raises(RuntimeError, match="a bug"):  # the folder is still there: not the user's doing
        with staged_folder(tmp_path / "moved" / "checkpoints" / "step-2"):
            raise RuntimeError("a bug")
