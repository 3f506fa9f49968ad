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


class KdfiqaError(Exception):
    """A problem with the user's input (a path, a file, a flag, a config value)."""


class DataError(KdfiqaError):
    """A data set, CSV or image that cannot be used as it is."""


class CheckpointError(KdfiqaError):
    """A checkpoint that is missing, corrupt, unsafe, or made for another model."""


class ConfigError(KdfiqaError):
    """A configuration, recipe or command-line value that is invalid."""
