"""One writer at a time: an advisory lock on a run folder or an output file.

:func:`writer_lock` holds an exclusive ``fcntl.flock`` on a lock file for the life of a ``with``
block: ``FOLDER/.kdfiqa.lock`` for a folder (a run folder, an export folder), ``FILE.lock`` for an
output file. The holder's process id is written inside. A second writer is refused at once (the
lock is never waited for) with :class:`WriterLockedError`, one line naming the holder's pid and the
path. The lock is released on any exit from the block, and by the operating system when the holder
dies, however it dies (even SIGKILL): a lock left by a dead process is never in the way.

The lock file is removed on release, and so are the folders it created for the lock file when they
are empty then (a refused or failed command leaves no empty run folder behind). A writer that locked a lock file which was removed and
replaced meanwhile (by a holder releasing it) notices, and tries the new one.

The lock is advisory: it stops other kdfiqa processes, not programs that ignore it. Where ``fcntl``
does not exist (Windows) :func:`writer_lock` locks nothing and only yields the lock file's path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union

from .errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; writer_lock is a no-op there
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "WriterLockedError", "lock_file_of", "writer_lock"]

PathLike = Union[str, "os.PathLike[str]"]

LOCK_NAME = ".kdfiqa.lock"
"""The lock file of a folder."""


class WriterLockedError(ConfigError):
    """Another process holds the writer lock of a folder or file."""

    def __init__(self, target: Path, lock: Path, holder: str) -> None:
        super().__init__(f"{target}: in use by another kdfiqa process (pid {holder}, lock file {lock}); wait for it "
                         "to finish, or choose another path")
        self.target, self.lock, self.holder = target, lock, holder


def lock_file_of(target: PathLike) -> Path:
    """The lock file guarding ``target``: ``TARGET/.kdfiqa.lock`` for an existing folder or a path
    written with a trailing separator, ``TARGET.lock`` otherwise (a file)."""
    text = os.fspath(target)
    path = Path(text)
    if path.is_dir() or text.endswith((os.sep, "/")):
        return path / LOCK_NAME
    return path.with_name(f"{path.name}.lock")


def _holder(fd: int) -> str:
    """The pid a lock file's holder wrote into it (``"unknown"`` while it has not yet)."""
    data = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return data if data.isdigit() else "unknown"


def _acquire(target: Path, lock: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive flock, with this process's pid in it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WriterLockedError(target, lock, _holder(fd)) from None
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a holder removed this lock file on release: lock the one at the path now


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def writer_lock(target: PathLike) -> Iterator[Path]:
    """Hold the writer lock of ``target`` (a folder or a file, see :func:`lock_file_of`) for the
    ``with`` block; yields the lock file's path. Raises :class:`WriterLockedError` at once when
    another process holds it. The folder the lock file goes in is created when missing, and removed
    again on release if it is still empty."""
    lock = lock_file_of(target)
    if fcntl is None:
        yield lock
        return
    created = _missing_folders(lock.parent)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _acquire(Path(target), lock)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield lock
    finally:
        try:
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
            _remove_empty(created)
