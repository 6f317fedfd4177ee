"""Writing outputs so that nothing half-written ever sits under a final name. The bottom layer:
imports only elt.errors.

Every file elt writes (samples, grids, JSON, CSV, weights, checkpoints, exports, eval outputs) goes
through :func:`atomic_write` (one file) or :func:`atomic_dir` (a directory of files): the data is
written under a temporary sibling name (``.NAME.tmp-PID``), flushed to disk and renamed into place.
A write that fails (disk full, killed process) leaves the previous file, or nothing, under the final
name — never a truncated one — and removes its temporary file when it can.

Failures raise :class:`OutputError` (an ``OSError``): one line naming the path and the reason, which
the command line prints as ``elt: error: ...`` with exit status 2."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from elt.errors import UserError

TMP_MARK = ".tmp-"


class OutputError(OSError):
    """An output cannot be written (disk full, read-only, not a directory, ...): one line,
    user-fixable."""


_NO_SPACE = "no space left on the device (free some space and run the command again)"
_TOO_LARGE = "file too large for this process's file-size limit (ulimit -f) or file system"


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _NO_SPACE
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return _TOO_LARGE
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_OS_CODE = re.compile(r"(?:code: |errno |Errno |os error )(\d+)")


def write_failure(exc: BaseException) -> str | None:
    """The reason a library's save function failed while writing (safetensors' ``SafetensorError``,
    ``torch.save``'s ``RuntimeError`` from its zip writer, an ``OSError``), or ``None`` when ``exc``
    is not a failed write. A disk that is full or a file-size limit become the one-line reasons of
    :func:`describe`."""
    if isinstance(exc, OSError):
        return describe(exc)
    text = str(exc)
    name = type(exc).__name__
    if name != "SafetensorError" and not (
        isinstance(exc, RuntimeError)
        and (
            "file write failed" in text
            or "PytorchStreamWriter" in text
            or "inline_container" in text
        )
    ):
        return None
    code = _OS_CODE.search(text)
    if code and int(code.group(1)) in (errno.ENOSPC, errno.EDQUOT):
        return _NO_SPACE
    if code and int(code.group(1)) == errno.EFBIG:
        return _TOO_LARGE
    if code:
        return os.strerror(int(code.group(1))).lower()
    return "the write failed (is the disk full, or a file-size limit reached?)"


def output_error(path: str | Path, exc: BaseException, what: str = "write") -> OutputError:
    """A one-line :class:`OutputError` for a failed write of ``path`` (keeps ``errno``)."""
    error = OutputError(f"cannot {what} {str(path)!r}: {write_failure(exc) or describe(exc)}")
    error.errno = getattr(exc, "errno", None)
    return error


def temporary_name(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


# -- never into the installed package --------------------------------------------------------------
PACKAGE_DIR = Path(__file__).resolve().parent
ALLOW_PACKAGE_WRITES = (
    "ELT_ALLOW_PACKAGE_WRITES"  # =1: the maintainers' script that rebuilds the shipped models
)


def check_not_in_package(path: str | Path) -> None:
    """Refuse to write anywhere inside the installed ``elt`` package (its shipped models, configs,
    code): a command's default output that would land there is a bug, a user's ``--out`` there is a
    mistake."""
    if os.environ.get(ALLOW_PACKAGE_WRITES) == "1":
        return
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError):
        return
    if target == PACKAGE_DIR or target.is_relative_to(PACKAGE_DIR):
        raise OutputError(
            f"{str(path)!r} lies inside the installed elt package ({PACKAGE_DIR}); elt never "
            "writes "
            "there: choose an output folder elsewhere (e.g. under the current directory)"
        )


# -- temporary files of killed processes -----------------------------------------------------------
_STALE = re.compile(r"\..+" + re.escape(TMP_MARK) + r"(\d+)(\.[^/]*)?")
_SWEPT: set[str] = set()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's live process (or a number that is no pid): keep its file
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files and folders (``.NAME.tmp-PID``, ``.STEM.tmp-PID.SUFFIX``) that
    processes of this host which no longer run left in ``directory`` (killed mid-write). Returns
    what was removed."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STALE.fullmatch(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def _sweep_once(directory: Path) -> None:
    key = str(directory)
    if key not in _SWEPT:
        _SWEPT.add(key)
        remove_stale_temporaries(directory)


def _fresh_temporary(tmp: Path) -> None:
    """A planted file or symbolic link under our temporary name is removed (``unlink`` never follows
    a link), so the write below creates a new file instead of writing through the link."""
    try:
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink()
    except OSError:
        pass


def _open_new(tmp: Path, mode: str, **open_kwargs: Any) -> IO:
    """``open(tmp, mode)`` for a file that must not exist yet and is never a symbolic link."""
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    fd = os.open(tmp, flags, 0o666)
    try:
        return os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        raise


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
    """The block writes ``tmp``; on success ``tmp`` is flushed to disk and renamed to ``path``. On
    any failure ``tmp`` is removed and an ``OSError`` becomes a one-line :class:`OutputError` naming
    ``path``."""
    try:
        yield
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise exc if isinstance(exc, OutputError) else output_error(path, exc) from exc
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, Exception) and write_failure(exc):  # a library's writer on a full disk
            raise output_error(path, exc) from exc
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_write(path, "w") as handle: ...`` — the file appears under ``path`` only once
    the block finished without an exception and the data reached the disk."""
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    check_not_in_package(path)
    check_run_not_busy(path)
    tmp = temporary_name(path)
    _sweep_once(path.parent)
    _fresh_temporary(tmp)
    with _commit(tmp, path), _open_new(tmp, mode, **open_kwargs) as handle:
        yield handle


def write_via(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Let ``writer(tmp_path)`` (a library's save function that wants a file name) write a temporary
    file, then rename it to ``path``. The temporary name keeps ``path``'s suffix, so format
    detection works."""
    path = Path(path)
    check_not_in_package(path)
    check_run_not_busy(path)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
    _sweep_once(path.parent)
    _fresh_temporary(tmp)
    with _commit(tmp, path):
        writer(tmp)
        mask = os.umask(
            0
        )  # some writers (safetensors) create 0600 files: give open()'s mode, 0666 less the umask
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
    """``np.savez`` to a temporary file, then renamed: no truncated ``.npz`` under its final
    name."""
    import numpy as np

    with atomic_write(path, "wb") as handle:
        np.savez(handle, *arrays, **named)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename it to ``path`` when the block
    succeeds.

    ``replace``: an existing ``path`` is swapped out (removed after the new one is in place);
    otherwise an existing non-empty ``path`` is an error. Every file written inside is flushed
    before the rename."""
    path = Path(path)
    check_not_in_package(path)
    check_run_not_busy(path)
    tmp = temporary_name(path)
    _sweep_once(path.parent)
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
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, Exception) and write_failure(exc):  # a library's writer on a full disk
            raise output_error(path, exc) from exc
        raise


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Fail early (before any work) when ``path`` cannot become a writable directory: it is an
    existing file, lies under a file, or its nearest existing ancestor is not writable. Creates
    nothing."""
    path = Path(path)
    check_not_in_package(path)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{what} {str(path)!r} is an existing file, not a directory; choose another path"
        )
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(
            f"{what} {str(path)!r} lies under {str(probe)!r}, which is a file; choose another path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} {str(path)!r} is not writable ({str(probe)!r} is read-only for this user); "
            "choose another path"
        )
    return path


USER_FIXABLE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.EFBIG,
    errno.ELOOP,
)


def user_fixable(exc: BaseException) -> str | None:
    """One line for an ``OSError`` a user can fix (disk full, permissions, a file where a folder
    belongs); ``None`` for anything else."""
    if isinstance(exc, OutputError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in USER_FIXABLE_ERRNOS:
        target = exc.filename if exc.filename is not None else "a file"
        return str(output_error(target, exc, "write" if exc.errno != errno.EACCES else "access"))
    return None


# -- files planted in a run directory --------------------------------------------------------------
def refuse_symlink(path: str | Path, what: str = "file") -> None:
    """A run's own files (lock, log, config, checkpoint files) are never symbolic links: one planted
    there would make elt read a foreign file or write through it. One line naming the link, not
    following it."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(
            f"{what} {str(path)!r} is a symbolic link; elt does not follow links inside a run "
            "directory (remove it, or copy the real file there)"
        )


def open_no_follow(path: str | Path, mode: str = "a", what: str = "file") -> IO:
    """``open(path, mode)`` ("a", "a+", "r", "rb") that refuses a symbolic link or anything but a
    regular file at ``path`` (``O_NOFOLLOW``: the check and the open are one step)."""
    import stat

    path = Path(path)
    flags = {
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
        "r": os.O_RDONLY,
        "rb": os.O_RDONLY,
    }[mode]
    flags |= (
        getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            refuse_symlink(path, what)
        raise output_error(path, exc, "open") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{what} {str(path)!r} is not a regular file; remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


def _open_lock(lock_path: Path) -> IO:
    return open_no_follow(lock_path, "a+", "lock file")


# -- run-directory lock ----------------------------------------------------------------------------
class LockedError(OutputError):
    """Another process holds the lock of a run directory."""


_HELD: dict[
    str, list
] = {}  # resolved lock path -> [open handle, depth]: re-entrant within one process


def _lock_holder(record: str) -> str:
    """Who holds a lock, from the JSON record its holder wrote (pid, host, start time)."""
    try:
        info = json.loads(record.strip())
        return (
            f"process {info.get('pid')} on host {info.get('host')} (started {info.get('started')})"
        )
    except (ValueError, AttributeError):
        return "another process"


@contextmanager
def exclusive_lock(
    directory: str | Path, name: str = ".lock", what: str = "run directory"
) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``DIRECTORY/NAME`` for the block (re-entrant in one
    process).

    The lock file records the holder (pid, host, start time) for the message another process gets.
    The kernel releases the lock when its holder dies (``kill -9``, a crash), so the lock file a
    dead run left behind is simply taken over: stale locks recover by themselves. On release the
    lock file is removed, and so is ``DIRECTORY`` if this call created it and nothing else was
    written there."""
    import fcntl

    directory = Path(directory)
    check_not_in_package(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(directory, exc, "create") from exc
    lock_path = directory / name
    refuse_symlink(lock_path, "lock file")
    key = str(lock_path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lock_path
        finally:
            _HELD[key][1] -= 1
        return
    while True:
        handle = _open_lock(lock_path)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            who = _lock_holder(handle.read())
            handle.close()
            error = LockedError(
                f"{what} {str(directory)!r} is in use by {who}; wait for it to finish, stop it, "
                "or choose another directory"
            )
            error.errno = errno.EBUSY
            raise error from None
        # the holder may have removed the file between our open and flock: lock the current file
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
        )
        + "\n"
    )
    handle.flush()
    _HELD[key] = [handle, 1]
    try:
        yield lock_path
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            try:
                lock_path.unlink(
                    missing_ok=True
                )  # while still locked: no one can take a file being removed
                if created and not any(directory.iterdir()):
                    directory.rmdir()
            except OSError:
                pass
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory ``path`` is (or lies in): the nearest folder, ``path`` itself included,
    that holds ``checkpoints/`` or a run's ``.lock``; ``None`` when there is none."""
    probe = Path(os.path.abspath(path))
    while True:
        if (
            (probe / "checkpoints").is_dir()
            or (probe / ".lock").exists()
            or (probe / ".lock").is_symlink()
        ):
            return probe
        if probe.parent == probe:
            return None
        probe = probe.parent


@contextmanager
def run_dir_lock(path: str | Path) -> Iterator[Path | None]:
    """Hold the lock of the run directory an output ``path`` lies in (``elt tokenizer train`` into
    ``RUN/tokenizer``, ``elt calibrate`` into ``RUN``, ...) for the block, so no command writes into
    a run a training holds; a no-op for paths outside any run."""
    run = enclosing_run(path)
    if run is None:
        yield None
        return
    with exclusive_lock(run, ".lock", what="run directory"):
        yield run


# -- untrusted input files: one line, never a pickle -----------------------------------------------
class InputFileError(UserError, ValueError):
    """An input file that is damaged, of another format, or holds what elt never loads (pickled
    objects)."""


def _kind_of(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return ""
    if head.startswith(b"\x80") or head.startswith(b"PK\x03\x04"):
        return " (it looks like a pickle or a torch.save file, which elt never loads)"
    return ""


def load_npz(
    path: str | Path, what: str = "file", keys: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The arrays of an ``.npz`` (``keys`` only, when given), read at once with
    ``allow_pickle=False``. A file that is not an ``.npz``, is truncated, or holds object arrays
    (pickles) is a one-line :class:`InputFileError` naming it."""
    import zipfile

    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InputFileError(
                    f"{what} {str(path)!r} is a single .npy array, not an .npz archive"
                )
            return {key: np.asarray(data[key]) for key in data.files if keys is None or key in keys}
    except InputFileError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputFileError(
                f"{what} {str(path)!r} holds object arrays (pickled Python objects), which elt "
                "never loads; save plain numeric arrays (np.savez with uint8/int arrays)"
            ) from None
        raise InputFileError(
            f"{what} {str(path)!r} is not a readable .npz ({_first_line(exc)})"
        ) from None
    except (zipfile.BadZipFile, EOFError, KeyError, OSError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputFileError(f"{what} {str(path)!r} not found") from None
        raise InputFileError(
            f"{what} {str(path)!r} is damaged or not an .npz ({_first_line(exc)})"
        ) from None


def load_safetensors(path: str | Path, what: str = "weights file") -> dict[str, Any]:
    """A safetensors file as a dict of tensors; anything else (a pickle, a truncated or empty file)
    is a one-line :class:`InputFileError`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{what} {str(path)!r} not found")
    try:
        return load_file(str(path))
    except (
        Exception
    ) as exc:  # safetensors raises its own error type for empty/truncated/garbage files
        raise InputFileError(
            f"{what} {str(path)!r} is damaged or not a safetensors file{_kind_of(path)} "
            f"({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def check_run_not_busy(path: str | Path) -> None:
    """Refuse to write ``path`` when it lies in a run directory whose lock another process holds (a
    training in progress): every elt command that writes there, not only those that take the lock
    themselves. The lock's holder (this process) writes freely."""
    import fcntl

    run = enclosing_run(Path(path).parent)
    if run is None:
        return
    lock = run / ".lock"
    if lock.is_symlink():
        refuse_symlink(lock, "lock file")
    if not lock.is_file() or str(lock.resolve()) in _HELD:
        return
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        who = _lock_holder(os.read(fd, 4096).decode("utf-8", "replace"))
        os.close(fd)
        error = LockedError(
            f"run directory {str(run)!r} is in use by {who}; {str(path)!r} is not written there: "
            "wait for it to finish, or choose another output folder"
        )
        error.errno = errno.EBUSY
        raise error from None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
