"""Atomic file writes: the one way kdfiqa writes a file whole.

A file is written to a temporary file with a unique name in the destination's folder
(``.NAME.XXXXXXXX.tmp``), flushed and fsync'ed, given the mode a newly created file gets (``0o666``
less the process umask), moved into place, and the folder is fsync'ed so that the move itself is
durable. A reader, or a process killed at any moment, sees either the previous file or the complete
new one, never a mix; the temporary file is removed when the write fails for any reason (an
exception, ``KeyboardInterrupt``). Only a hard kill (SIGKILL, power loss) can leave one behind,
under its ``.tmp`` name, never under the destination's.

Two ways to move into place:

* ``overwrite=True``: ``os.replace``, which replaces a file already there;
* ``overwrite=False`` (no-clobber): the destination is created only if it still does not exist,
  with ``os.link(tmp, dest)``, which fails atomically when it does; a second writer racing for the
  same path gets :class:`OutputExistsError` instead of silently replacing the first one's file.
  Where hard links are unsupported (some network and FAT file systems) the name is claimed with
  ``O_CREAT | O_EXCL`` and then replaced: just as exclusive, but a reader may meet an empty file for
  that moment.

Three entry points, for three kinds of writer:

* :func:`atomic_open`: a context manager yielding a file object (``torch.save``, ``csv.writer``,
  ``PIL.Image.save``);
* :func:`write_atomic`: bytes or text, in one call (JSON, YAML);
* :func:`atomic_path`: a context manager yielding the temporary file's path, for writers that only
  take a path (TorchScript, ONNX); whatever the block leaves there is moved into place
  (:func:`move_into_place`, the one move all three share) when it ends without an exception, so a
  writer may also check the file there (an export is verified) before it appears.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

from .errors import ConfigError, spelled

__all__ = ["OutputExistsError", "atomic_open", "atomic_path", "move_into_place", "write_atomic"]

PathLike = Union[str, "os.PathLike[str]"]

_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
"""``os.link`` errors that mean the file system has no hard links (vfat answers EPERM)."""


class OutputExistsError(ConfigError):
    """A no-clobber write found its destination already there (perhaps written meanwhile by another
    process)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: already exists (another process may have just written it); pass "
                         f"{spelled('--overwrite', 'overwrite=True')} to replace it, or choose another path")
        self.path = path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a move into ``folder`` durable (POSIX); a no-op where folders cannot be opened or synced."""
    try:
        _fsync_file(folder)
    except OSError:
        pass


def _link_into_place(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest`` unless ``dest`` exists (then :class:`OutputExistsError`)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise OutputExistsError(dest) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise OutputExistsError(dest) from None
        try:
            os.replace(tmp, dest)
        except BaseException:
            dest.unlink(missing_ok=True)  # the empty file this writer claimed
            raise
    else:
        tmp.unlink()


def move_into_place(tmp: PathLike, dest: PathLike, *, overwrite: bool = True) -> None:
    """Make the written file ``tmp`` (in ``dest``'s folder) durable and move it to ``dest``: fsync
    it, move it (replacing a file there only with ``overwrite``, see the module docstring), fsync
    the folder. ``tmp`` is left where it is when the move is refused or fails."""
    tmp, dest = Path(tmp), Path(dest)
    os.chmod(tmp, 0o666 & ~_umask())
    _fsync_file(tmp)
    if overwrite:
        os.replace(tmp, dest)
    else:
        _link_into_place(tmp, dest)
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(dest: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path in ``dest``'s folder (created empty) to write ``dest``'s new content to;
    moved into place (:func:`move_into_place`) when the block ends without an exception, removed
    otherwise.

    Without ``overwrite`` an existing ``dest`` is refused with :class:`OutputExistsError` before
    the block runs (a fast refusal) and again by the move (the final guard against a concurrent
    writer). ``dest``'s folder is created when missing.
    """
    dest = Path(dest)
    if not overwrite and os.path.lexists(dest):
        raise OutputExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        move_into_place(tmp, dest, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(dest: PathLike, mode: str = "wb", *, overwrite: bool = True, **open_kwargs: Any) -> Iterator[IO[Any]]:
    """A file object (``mode`` ``"wb"`` or ``"w"``; ``open_kwargs`` such as ``encoding`` and
    ``newline`` go to :func:`open`) whose content replaces ``dest`` when the block ends without an
    exception, atomically (:func:`atomic_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(dest, overwrite=overwrite) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_atomic(dest: PathLike, data: bytes | str, *, overwrite: bool = True, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``dest`` atomically
    (:func:`atomic_path`); returns ``dest`` as a :class:`~pathlib.Path`."""
    dest = Path(dest)
    with atomic_open(dest, "wb", overwrite=overwrite) as f:
        f.write(data.encode(encoding) if isinstance(data, str) else data)
    return dest
