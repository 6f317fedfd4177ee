"""Writing outputs so that nothing half-written ever sits under a final name. The bottom layer: no elt imports.

Every file elt writes (samples, grids, JSON, CSV, weights, checkpoints, exports, eval outputs) goes through
:func:`atomic_write` (one file) or :func:`atomic_dir` (a directory of files): the data is written under a
temporary sibling name (``.NAME.tmp-PID``), flushed to disk and renamed into place. A write that fails
(disk full, killed process) leaves the previous file, or nothing, under the final name — never a
truncated one — and removes its temporary file when it can.

Failures raise :class:`OutputError` (an ``OSError``): one line naming the path and the reason, which the
command line prints as ``elt: error: ...`` with exit status 2.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


class OutputError(OSError):
    """An output cannot be written (disk full, read-only, not a directory, ...): one line, user-fixable."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device (free some space and run the command again)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def output_error(path: str | Path, exc: BaseException, what: str = "write") -> OutputError:
    """A one-line :class:`OutputError` for a failed write of ``path`` (keeps ``errno``)."""
    error = OutputError(f"cannot {what} {str(path)!r}: {describe(exc)}")
    error.errno = getattr(exc, "errno", None)
    return error


def temporary_name(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename into it) to disk; not possible on every platform."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def _commit(tmp: Path, path: Path) -> Iterator[None]:
    """The block writes ``tmp``; on success ``tmp`` is flushed to disk and renamed to ``path``. On any failure
    ``tmp`` is removed and an ``OSError`` becomes a one-line :class:`OutputError` naming ``path``."""
    try:
        yield
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise exc if isinstance(exc, OutputError) else output_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_write(path, "w") as handle: ...`` — the file appears under ``path`` only once the
    block finished without an exception and the data reached the disk."""
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    tmp = temporary_name(path)
    with _commit(tmp, path), open(tmp, mode, **open_kwargs) as handle:
        yield handle


def write_via(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Let ``writer(tmp_path)`` (a library's save function that wants a file name) write a temporary file,
    then rename it to ``path``. The temporary name keeps ``path``'s suffix, so format detection works."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
    with _commit(tmp, path):
        writer(tmp)
        mask = os.umask(0)  # some writers (safetensors) create 0600 files: give open()'s mode, 0666 less the umask
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
    return path


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    dumps_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def save_npz(path: str | Path, *arrays: Any, **named: Any) -> Path:
    """``np.savez`` to a temporary file, then renamed: no truncated ``.npz`` under its final name."""
    import numpy as np

    with atomic_write(path, "wb") as handle:
        np.savez(handle, *arrays, **named)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename it to ``path`` when the block succeeds.

    ``replace``: an existing ``path`` is swapped out (removed after the new one is in place); otherwise an
    existing non-empty ``path`` is an error. Every file written inside is flushed before the rename.
    """
    path = Path(path)
    tmp = temporary_name(path)
    _remove(tmp)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(tmp)
        old = None
        if path.exists():
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif replace:
                old = path.with_name(f".{path.name}.old{TMP_MARK}{os.getpid()}")
                os.replace(path, old)
            else:
                raise FileExistsError(errno.EEXIST, "it already exists and is not empty")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            _remove(old)
    except OSError as exc:
        _remove(tmp)
        raise exc if isinstance(exc, OutputError) else output_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Fail early (before any work) when ``path`` cannot become a writable directory: it is an existing
    file, lies under a file, or its nearest existing ancestor is not writable. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is an existing file, not a directory; choose another path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{what} {str(path)!r} lies under {str(probe)!r}, which is a file; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {str(path)!r} is not writable ({str(probe)!r} is read-only for this user); "
                          "choose another path")
    return path


USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                       errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG)


def user_fixable(exc: BaseException) -> str | None:
    """One line for an ``OSError`` a user can fix (disk full, permissions, a file where a folder belongs);
    ``None`` for anything else."""
    if isinstance(exc, OutputError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in USER_FIXABLE_ERRNOS:
        target = exc.filename if exc.filename is not None else "a file"
        return str(output_error(target, exc, "write" if exc.errno != errno.EACCES else "access"))
    return None


# -- run-directory lock --------------------------------------------------------------------------------------
class LockedError(OutputError):
    """Another process holds the lock of a run directory."""


_HELD: dict[str, list] = {}  # resolved lock path -> [open handle, depth]: re-entrant within one process


@contextmanager
def exclusive_lock(directory: str | Path, name: str = ".lock", what: str = "run directory") -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``DIRECTORY/NAME`` for the block (re-entrant in one process).

    The lock file records the holder (pid, host, start time) for the message another process gets. The
    kernel releases the lock when its holder dies (``kill -9``, a crash), so the lock file a dead run left
    behind is simply taken over: stale locks recover by themselves. On release the lock file is removed,
    and so is ``DIRECTORY`` if this call created it and nothing else was written there.
    """
    import fcntl

    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(directory, exc, "create") from exc
    lock_path = directory / name
    key = str(lock_path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lock_path
        finally:
            _HELD[key][1] -= 1
        return
    while True:
        try:
            handle = open(lock_path, "a+")
        except OSError as exc:
            raise output_error(lock_path, exc, "open the lock file") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                info = json.loads(holder)
                who = f"process {info.get('pid')} on host {info.get('host')} (started {info.get('started')})"
            except ValueError:
                who = "another process"
            error = LockedError(f"{what} {str(directory)!r} is in use by {who}; wait for it to finish, stop it, "
                                "or choose another directory")
            error.errno = errno.EBUSY
            raise error from None
        try:  # the holder may have removed the file between our open and flock: lock the current file
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
    handle.flush()
    _HELD[key] = [handle, 1]
    try:
        yield lock_path
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            try:
                lock_path.unlink(missing_ok=True)  # while still locked: no one can take a file being removed
                if created and not any(directory.iterdir()):
                    directory.rmdir()
            except OSError:
                pass
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
