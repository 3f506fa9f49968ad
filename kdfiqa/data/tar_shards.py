"""WebDataset-style tar shards read as a random-access image set.

A shard is an uncompressed tar whose members are grouped into samples by their *key*: the member
path up to the first ``.`` of its file name (``faces/000123.jpg`` and ``faces/000123.cls`` are the
sample ``faces/000123``), the WebDataset convention. The image of a sample is its member with one of
:data:`TAR_IMAGE_EXTENSIONS`; other members (labels, metadata) are left alone. Shards are named by
a brace pattern (``data-{000000..000099}.tar``, :func:`expand_shards`), one ``.tar`` file, or a list
of them.

**Why a small reader on :mod:`tarfile` and not the ``webdataset`` package.** kdfiqa's data sets are
map-style (indexable): validation splits, the SSUS sampler, fixed-length epochs and rank sharding all
pick samples by index. ``webdataset`` streams a shard front to back (an ``IterableDataset``) and has
no index of where each member lies, so it would need a second, streaming code path through every
command. One pass of :mod:`tarfile` over the headers (:func:`index_shard`; it seeks past the data, so
it costs a read of the headers only) records each image member's data offset and size; a sample is
then one ``os.pread`` of those bytes. No extra dependency, and every member passes kdfiqa's checks
before anything is decoded.

**Safety.** A member name that is absolute or holds ``..`` refuses the whole shard (it was built to
escape a folder when unpacked). Symbolic and hard links, devices and FIFOs are skipped with a warning
(their data is not in the shard). A member larger than :data:`MAX_MEMBER_BYTES` is skipped with a
warning; decoding then applies :data:`~kdfiqa.data.images.MAX_PIXELS` as for any file. Compressed
tars (``.tar.gz``) are refused: their members cannot be read at an offset.

**Workers.** :meth:`TarMember.read_bytes` opens a shard on first use *in the process that reads*
(a DataLoader worker opens its own descriptors; descriptors opened before a fork are never used by
the child) and reads with ``os.pread``, which moves no shared file position.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable

from ..errors import DataError

__all__ = ["TAR_IMAGE_EXTENSIONS", "MAX_MEMBER_BYTES", "TarMember", "expand_shards", "index_shard",
           "index_shards", "is_shard_spec", "sample_key"]

log = logging.getLogger(__name__)

TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
"""Extensions (lower case, last one of a member's name) that make a shard member a sample's image."""

MAX_MEMBER_BYTES = 256 * 1024 * 1024
"""Shard members larger than this (256 MiB) are skipped: no face image of a usable size is that big."""

_OPEN_SHARDS_LIMIT = 64
"""Most shard descriptors one process keeps open (least recently used closed first)."""

_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def is_shard_spec(spec: str) -> bool:
    """Whether ``spec`` names tar shards: a brace pattern or a path ending in ``.tar``."""
    return bool(_BRACES.search(spec)) or spec.lower().endswith(".tar")


def expand_shards(spec: str) -> list[str]:
    """The shard paths a pattern names: ``{a..b}`` is a numeric range (zero-padded to the width of
    ``a`` when ``a`` starts with ``0``), ``{x,y}`` a choice; several groups multiply out, in order."""
    match = _BRACES.search(spec)
    if match is None:
        return [spec]
    head, body, tail = spec[:match.start()], match.group(1), spec[match.end():]
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.groups()
        if int(last) < int(first):
            raise DataError(f"{spec}: the range {{{body}}} runs backwards; write {{{last}..{first}}}")
        width = len(first) if first.startswith("0") else 0
        choices = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise DataError(f"{spec}: {{{body}}} is neither a range {{000..099}} nor a list {{a,b}}")
    return [path for choice in choices for path in expand_shards(head + choice + tail)]


def sample_key(member_name: str) -> tuple[str, str]:
    """``(key, extension)`` of a member: the path up to the first ``.`` of the file name, and the rest."""
    path = PurePosixPath(member_name)
    stem, _, extension = path.name.partition(".")
    return (path.parent / stem).as_posix().removeprefix("./"), extension


@dataclass(frozen=True)
class TarMember:
    """One image inside a shard: the shard, the member's name, and where its bytes lie."""

    shard: str
    name: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"

    def read_bytes(self) -> bytes:
        """The member's bytes, read through this process's own descriptor of the shard."""
        fd = _descriptor(self.shard)
        data = os.pread(fd, self.size, self.offset)
        if len(data) != self.size:
            raise DataError(f"{self}: the shard ends before this member does (truncated or rewritten "
                            "since it was indexed)")
        return data

    def identity(self) -> str:
        """A name unique to this image on this machine (the shard's real path and the member)."""
        return f"{os.path.realpath(self.shard)}:{self.name}"

    def stat_key(self) -> tuple[str, int, int]:
        """``(identity, size, mtime_ns)`` of the image as stored: those of its shard, per member."""
        stat = os.stat(self.shard)
        return self.identity(), stat.st_size, stat.st_mtime_ns


_descriptors: "OrderedDict[str, int]" = OrderedDict()
_descriptors_pid = os.getpid()


def _descriptor(shard: str) -> int:
    global _descriptors_pid
    if _descriptors_pid != os.getpid():  # a forked child: the parent's descriptors are not ours to use
        _descriptors.clear()
        _descriptors_pid = os.getpid()
    fd = _descriptors.get(shard)
    if fd is not None:
        _descriptors.move_to_end(shard)
        return fd
    try:
        fd = os.open(shard, os.O_RDONLY)
    except OSError as exc:
        raise DataError(f"{shard}: cannot open the shard ({exc.strerror})") from None
    _descriptors[shard] = fd
    if len(_descriptors) > _OPEN_SHARDS_LIMIT:
        os.close(_descriptors.popitem(last=False)[1])
    return fd


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def index_shard(shard: str | os.PathLike[str]) -> list[tuple[str, TarMember]]:
    """``(key, member)`` for every image member of ``shard``, in the shard's order (rules in the
    module docstring)."""
    shard = str(shard)
    if not os.path.isfile(shard):
        raise DataError(f"{shard}: no such tar shard")
    found = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            while (info := tar.next()) is not None:
                tar.members = []  # keep the index, not every header, in memory
                if _unsafe(info.name):
                    raise DataError(f"{shard}: member {info.name!r} has an absolute path or '..'; refusing "
                                    "the shard (rebuild it with relative member names)")
                if info.isdir():
                    continue
                key, extension = sample_key(info.name)
                if extension.rpartition(".")[2].lower() not in TAR_IMAGE_EXTENSIONS:
                    continue
                if not info.isfile():
                    log.warning("%s: skipping member %s: a link or special file, not image data", shard, info.name)
                    continue
                if info.size > MAX_MEMBER_BYTES:
                    log.warning("%s: skipping member %s: %d bytes is over the limit of %d", shard, info.name,
                                info.size, MAX_MEMBER_BYTES)
                    continue
                found.append((key, TarMember(shard, info.name, info.offset_data, info.size)))
    except tarfile.ReadError as exc:
        raise DataError(f"{shard}: not an uncompressed tar shard ({exc}); unpack or re-tar it without "
                        "compression") from None
    return found


def index_shards(shards: Iterable[str | os.PathLike[str]]) -> list[tuple[str, TarMember]]:
    """The image members of every shard, keyed, in order; a key found twice is refused."""
    found: list[tuple[str, TarMember]] = []
    seen: dict[str, TarMember] = {}
    for shard in shards:
        for key, member in index_shard(shard):
            if key in seen:
                raise DataError(f"{member}: duplicate sample key {key!r} (also {seen[key]}); every sample "
                                "needs its own key: rename or remove one")
            seen[key] = member
            found.append((key, member))
    return found
