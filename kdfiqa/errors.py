"""Errors kdfiqa raises for problems a user can fix.

Every :class:`KdfiqaError` carries a one-line message that names the file, field or argument at fault
and what to do about it. The command line prints that line on stderr and exits with status 2 instead
of showing a traceback (``--debug`` shows it).
"""

from __future__ import annotations


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
