"""Crash-safe writes: nothing saved is ever left half-written.

Files are written to a temporary sibling, flushed to disk and renamed over the target; folders
are built next to their destination and renamed into place in one step (a folder being replaced
is swapped with the new one in one atomic exchange where the system allows), so a reader sees
either the old complete content or the new complete content, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeft.errors import EdgeftError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large models do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_WHAT_TO_DO = {
    errno.ENOSPC: "free some space or choose another output folder",
    errno.EDQUOT: "free some space (your disk quota is used up) or choose another output folder",
    errno.EFBIG: "choose an output folder on a file system that allows larger files",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose an output folder on a writable disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another output path",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another output path",
}


def write_failed(path: Path, exc: OSError) -> EdgeftError:
    """Turn an OS error during a write into a user-facing error naming the place and what to do."""
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    todo = _WHAT_TO_DO.get(exc.errno, "check the output folder, or choose another one")
    return EdgeftError(
        f"Could not write {path}: {reason}.",
        where=str(path),
        hint=f"{todo}; nothing was changed there.",
    )


def path_failed(exc: OSError) -> EdgeftError:
    """A user-facing error for an OS error on a path that reached the command (e.g. a folder that
    became read-only or vanished while the command ran)."""
    where = str(exc.filename)
    return EdgeftError(f"{where} could not be used: {exc.strerror or exc}.", where=where,
                       hint=f"{_WHAT_TO_DO.get(exc.errno, 'check that the path exists and may be written')}; "
                            "then run the command again.")


_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_error(exc: BaseException) -> OSError | None:
    """The full-disk (or file-size-limit) error behind ``exc``, also when a native library such as
    ONNX Runtime reports it as a RuntimeError that only names the errno in its text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            return current
        if isinstance(current, FileNotFoundError) and "No usable temporary directory" in str(current):
            return OSError(errno.ENOSPC, "no temporary folder is writable")  # tempfile hides the ENOSPC it met
        text = str(current)
        for code in _DISK_ERRNOS:
            if f"errno:{code}" in text.replace(" ", "") or os.strerror(code) in text:
                return OSError(code, os.strerror(code))
        current = current.__cause__ or current.__context__
    return None


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back, the only way POSIX offers)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failed(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600 files: honour the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_failed(path, exc) from exc
    except BaseException:  # interrupted or failed mid-write: the old file stays, the temp goes
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Text flavour of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
    ``renamex_np(RENAME_SWAP)``); False where the system or the file system cannot, so the caller
    falls back to two renames."""
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    a, b = os.fsencode(str(first)), os.fsencode(str(second))
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, a, at_fdcwd, b, ctypes.c_uint(rename_exchange))
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        result = libc.renamex_np(a, b, ctypes.c_uint(rename_swap))
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. a file system without exchange support
    raise OSError(code, os.strerror(code), str(second))


@contextlib.contextmanager
def staged_folder(dest: Path, force: bool = False,
                  check: Callable[[Path, bool], None] | None = None) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``dest`` only when complete.

    If the body raises, the staging folder is removed and ``dest`` is untouched. With ``force``
    an existing ``dest`` is replaced only after the new content is complete. ``check(dest,
    force)`` (e.g. :func:`edgeft.outputs.output_check`) decides instead whether an existing
    ``dest`` may be replaced; it runs before the body and again just before the replacement.
    The folder gets the permissions the umask gives (mkdtemp would make it private).
    """
    dest = Path(dest)
    if dest.name in ("", ".", ".."):  # "-o ." names the folder by its parent's entry: stage beside it, not in it
        dest = dest.resolve()
    if check is not None:
        check(dest, force)
    elif dest.exists() and not force:
        raise EdgeftError(
            f"The output folder {dest} already exists.",
            where=str(dest),
            hint="pass --force to replace it, or choose another --output.",
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        os.chmod(stage, 0o777 & ~current_umask())
    except OSError as exc:
        raise write_failed(dest, exc) from exc
    try:
        yield stage
        _fsync_tree(stage)
        if check is not None:
            check(dest, force)  # the folder may have changed while the new one was built
        if dest.exists():
            if exchange_paths(stage, dest):  # one atomic step: dest is the old or the new folder, always
                shutil.rmtree(stage, ignore_errors=True)  # now the previous content
            else:  # two renames; a process killed between them leaves .NAME.old-PID (checkpoints.prune restores it)
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
                try:
                    os.replace(stage, dest)
                except OSError:
                    os.replace(old, dest)  # put the previous folder back
                    raise
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise write_failed(dest, disk_error(exc) or exc) from exc
    except BaseException as exc:
        vanished = not stage.exists()
        shutil.rmtree(stage, ignore_errors=True)
        full = None if isinstance(exc, EdgeftError) else disk_error(exc)
        if full is not None:  # e.g. ONNX Runtime's RuntimeError "... No space left on device errno:28"
            raise write_failed(dest, full) from exc
        if vanished and isinstance(exc, Exception) and not isinstance(exc, EdgeftError):
            # e.g. ONNX Runtime's RuntimeError for a file it cannot create: the folder was moved away
            raise EdgeftError(f"The folder {dest.parent} was moved or removed while {dest.name} was being written "
                              "into it.", where=str(dest.parent),
                              hint="keep the output folder in place while edgeft writes it, and run the command "
                                   "again.") from exc
        raise


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)
