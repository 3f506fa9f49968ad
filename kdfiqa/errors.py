"""Errors kdfiqa raises for problems a user can fix.

Every :class:`KdfiqaError` carries a one-line message that names the file, field or argument at fault
and what to do about it. The command line prints that line on stderr and exits with status 2 instead
of showing a traceback (``--debug`` shows it).

A message that names an option names it as the caller spells it: :func:`spelled` gives the
command-line flag while a command runs (:func:`flag_spelling`, set by ``kdfiqa``'s entry point) and
the keyword argument or config key otherwise, so that the Python API never tells its caller to pass
a flag.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_FLAGS = contextvars.ContextVar("kdfiqa_flag_spelling", default=False)


@contextlib.contextmanager
def flag_spelling() -> Iterator[None]:
    """While this is entered (a command-line run), :func:`spelled` names options by their flags."""
    token = _FLAGS.set(True)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def spelled(flag: str, python: str | None = None) -> str:
    """An option as the current caller spells it: ``flag`` (``"--raw-if-degenerate"``, ``"--device
    cuda"``, ``"--root DIR (data.root)"``) on the command line, ``python`` (``"raw_if_degenerate=True"``,
    ``"data.root"``) from Python; without ``python``, the keyword of the flag's name
    (``"--batch-size"`` → ``"batch_size"``, ``"--device cuda"`` → ``"device=cuda"``)."""
    if _FLAGS.get():
        return flag
    if python is not None:
        return python
    name, _, value = flag.partition(" ")
    keyword = name.lstrip("-").replace("-", "_")
    return f"{keyword}={value}" if value else keyword


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when the message is empty: what a
    one-line error quotes of an exception raised by a library."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def named_first_line(exc: BaseException) -> str:
    """``"TypeName: first line"`` of ``exc`` (its type name alone when the message is empty): how a
    one-line error quotes a library's exception whose type says what went wrong."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


class KdfiqaError(Exception):
    """A problem with the user's input (a path, a file, a flag, a config value)."""


class DataError(KdfiqaError):
    """A data set, CSV or image that cannot be used as it is."""


class CheckpointError(KdfiqaError):
    """A checkpoint that is missing, corrupt, unsafe, or made for another model."""


class ConfigError(KdfiqaError):
    """A configuration, recipe or command-line value that is invalid."""


_OS_ADVICE = {
    "EACCES": "it is not writable: fix its permissions or choose another path",
    "EPERM": "it is not writable: fix its permissions or choose another path",
    "EROFS": "it is on a read-only file system: choose another path",
    "ENOSPC": "the disk is full: free space or choose another path (files already written are intact)",
    "EDQUOT": "the disk quota is exceeded: free space or choose another path (files already written are intact)",
    "EFBIG": "a file-size limit was hit: raise the limit (ulimit -f) or write elsewhere",
    "EISDIR": "it is a folder where a file is expected: give a file path",
    "ENOTDIR": "a file stands where a folder is expected: give a folder path or move the file",
    "EEXIST": "a file stands where a folder is expected: give a folder path or move the file",
    "ENOENT": "no such file or folder: check the path",
}


def _worker_message(text: str) -> str:
    """The original message of an exception re-raised from a DataLoader worker ("Caught X in
    DataLoader worker process N. Original Traceback ...": its last line is the original one)."""
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        kind, sep, message = last.partition(": ")  # "kdfiqa.errors.DataError: a.png: truncated"
        return message if sep and kind.rsplit(".", 1)[-1].endswith(("Error", "Exception")) else last
    return text


def user_message(exc: BaseException) -> str:
    """What the command line says about ``exc``, as one line (more lines only for a list the user
    asked for, such as every unreadable image): kdfiqa's own errors as they are (also when re-raised
    from a data-loading worker), file-system errors with the path and what to do, anything else as
    its type and first line with a pointer to ``--debug``."""
    import errno

    if isinstance(exc, KdfiqaError):
        return _worker_message(str(exc).strip()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        code = errno.errorcode.get(exc.errno, "")
        where = exc.filename if exc.filename is not None else "a file"
        advice = _OS_ADVICE.get(code, exc.strerror or code)
        return f"{where}: {exc.strerror or code}; {advice}"
    text = (_worker_message(str(exc).strip()).splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text} (an unexpected failure; kdfiqa --debug shows the traceback)"
