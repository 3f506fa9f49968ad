"""Which images already passed the up-front decode check, so a second run does not decode them again.

:func:`~kdfiqa.data.validate_images` decodes every training image before the first step. An image
that decoded is recorded here under its *stat key*: real path, size in bytes, modification time in
nanoseconds and inode (a tar shard member: the shard's, plus the member's name). A later check skips
an image whose stat key is unchanged and which passed under the same ``max_pixels``; any change to
the file (rewritten, touched, replaced) changes the key, so the image is decoded again. Only passes
are recorded: an unusable image is decoded and reported afresh every time, word for word as
without the cache.

**Where.** One small JSON file per image tree (named by a hash of the folder or shard path all of a
check's images share) in ``$KDFIQA_CACHE_DIR`` when that is set, else
``$XDG_CACHE_HOME/kdfiqa/decode-check`` (``~/.cache/kdfiqa/decode-check``). ``KDFIQA_CACHE_DIR=off``
turns the cache off. Files are written atomically (:mod:`kdfiqa.atomic_write`); a file that cannot be
read or parsed is ignored (and rebuilt), never trusted; a cache folder that cannot be written only
costs the saving, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

from ..atomic_write import write_atomic
from .tar_shards import TarMember

__all__ = ["CACHE_ENV", "DecodeCheckCache", "cache_folder", "stat_key"]

log = logging.getLogger(__name__)

CACHE_ENV = "KDFIQA_CACHE_DIR"
"""Environment variable naming the decode-check cache folder (``off``: no cache)."""

_VERSION = 1

StatKey = tuple[str, int, int, int]


def cache_folder() -> Path | None:
    """The folder decode-check caches live in (module docstring), or ``None`` when turned off."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdfiqa" / "decode-check"


def stat_key(image: Path | TarMember) -> StatKey | None:
    """``(real path, size, mtime_ns, inode)`` of ``image`` (a shard member: its shard's, the path
    followed by ``:member``), or ``None`` when it cannot be stat'ed (a missing file)."""
    try:
        if isinstance(image, TarMember):
            stat = os.stat(image.shard)
            return image.identity(), stat.st_size, stat.st_mtime_ns, stat.st_ino
        stat = os.stat(image)
        return os.path.realpath(image), stat.st_size, stat.st_mtime_ns, stat.st_ino
    except (OSError, ValueError):
        return None


class DecodeCheckCache:
    """The passes recorded for one image tree; :meth:`open` finds (or starts) its file."""

    def __init__(self, path: Path | None, passed: dict[str, list[int]] | None = None) -> None:
        self.path = path
        self.passed = passed if passed is not None else {}
        self._changed = False

    @classmethod
    def open(cls, keys: Iterable[StatKey]) -> "DecodeCheckCache":
        """The cache of the tree the images of ``keys`` share (an unusable file: an empty cache)."""
        folder = cache_folder()
        paths = [key[0] for key in keys]
        if folder is None or not paths:
            return cls(None)
        common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        path = folder / f"{hashlib.sha256(common.encode('utf-8', 'surrogateescape')).hexdigest()[:24]}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            passed = data["passed"] if data.get("version") == _VERSION else {}
            if not isinstance(passed, dict):
                raise ValueError("'passed' is not a mapping")
        except FileNotFoundError:
            passed = {}
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            log.info("%s: unreadable decode-check cache (%s); checking every image again", path, exc)
            passed = {}
        return cls(path, passed)

    def passed_before(self, key: StatKey | None, max_pixels: int) -> bool:
        """Whether the image of ``key`` decoded, unchanged since, under this ``max_pixels``."""
        if key is None:
            return False
        return self.passed.get(key[0]) == [key[1], key[2], key[3], max_pixels]

    def record(self, key: StatKey | None, max_pixels: int, passed: bool) -> None:
        """Record the outcome of decoding the image of ``key`` (as stat'ed before decoding)."""
        if key is None:
            return
        if passed:
            self.passed[key[0]] = [key[1], key[2], key[3], max_pixels]
            self._changed = True
        elif self.passed.pop(key[0], None) is not None:
            self._changed = True

    def save(self) -> None:
        """Write the recorded passes, atomically, when anything changed."""
        if self.path is None or not self._changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": _VERSION, "passed": self.passed}, separators=(",", ":")))
        except OSError as exc:
            log.warning("%s: cannot save the decode-check cache (%s); the next run checks every image again",
                        self.path, exc)
        self._changed = False
