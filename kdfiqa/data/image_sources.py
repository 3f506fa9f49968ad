"""What ``--images``, ``--unlabeled`` and ``data.unlabeled`` may name, turned into named images.

:func:`list_images` is the one resolution every command uses. It takes:

* **a folder**: every image file under it (by extension, :data:`~kdfiqa.data.IMAGE_EXTENSIONS`),
  recursively, sorted; each named by its path relative to the folder (``/`` separators). A symlink
  that leads outside the folder is refused unless ``allow_outside_root``.
* **tar shards** (WebDataset style): a brace pattern ``data-{000000..000099}.tar`` or one ``.tar``
  file; each image named by its sample key (:mod:`kdfiqa.data.tar_shards`).
* **a list file** (a file ending in :data:`LIST_SUFFIXES`, e.g. ``images.txt``): one image path per
  line, UTF-8; a relative
  path is resolved against the list file's folder; blank lines and lines starting with ``#`` are
  skipped. A line may also name tar shards (a ``.tar`` file or a brace pattern), whose images join
  under their keys. Each listed image is named by its line as written. The list is the user's own
  choice of files, so its paths may lie anywhere (as paths given to ``kdfiqa predict`` may).

Names are what output CSVs hold, so two images of the same name are refused with one line naming
both. Nothing is decoded here (:func:`~kdfiqa.data.validate_images` does that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import DataError
from .images import IMAGE_EXTENSIONS
from .paths import resolve_image_path
from .tar_shards import TarMember, expand_shards, index_shards, is_shard_spec

__all__ = ["ImageLocation", "LIST_SUFFIXES", "is_image_source", "list_images", "read_image_list", "scan_folder"]

LIST_SUFFIXES = (".txt", ".lst", ".list")
"""File name endings (lower case) of image list files."""

ImageLocation = Union[Path, TarMember]
"""Where an image's bytes are: a file, or a member of a tar shard."""


def scan_folder(folder: Path, recursive: bool = True) -> list[Path]:
    """The image files (by extension) in ``folder`` (and below it when ``recursive``), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())


def _folder_images(folder: Path, recursive: bool, allow_outside_root: bool) -> list[tuple[str, ImageLocation]]:
    found: list[tuple[str, ImageLocation]] = []
    for path in scan_folder(folder, recursive):
        name = path.relative_to(folder).as_posix()
        found.append((name, resolve_image_path(folder, name, allow_outside_root=allow_outside_root)))
    return found


def _shard_paths(pattern: str, base: Path | None, where: str) -> list[str]:
    shards = [str(base / s) if base is not None and not os.path.isabs(s) else s for s in expand_shards(pattern)]
    for shard in shards:
        if not os.path.isfile(shard):
            raise DataError(f"{where}{shard}: no such tar shard")
    return shards


def read_image_list(list_file: str | os.PathLike[str]) -> list[tuple[str, ImageLocation]]:
    """The images a list file names (rules in the module docstring), in its order."""
    list_path = Path(list_file)
    base = list_path.parent
    found: list[tuple[str, ImageLocation]] = []
    try:
        with open(list_path, encoding="utf-8") as lines:
            for number, raw in enumerate(lines, 1):
                entry = raw.strip()
                if not entry or entry.startswith("#"):
                    continue
                where = f"{list_path} line {number}: "
                if "\x00" in entry:
                    raise DataError(f"{where}invalid path {entry!r}")
                if is_shard_spec(entry):
                    found += index_shards(_shard_paths(entry, base, where))
                    continue
                path = Path(entry) if os.path.isabs(entry) else base / entry
                if not path.is_file():
                    raise DataError(f"{where}{entry}: no such image file (relative paths are read from "
                                    f"{base}); fix the line or remove it")
                found.append((entry, path))
    except UnicodeDecodeError:
        raise DataError(f"{list_path}: not a UTF-8 text list of image paths (one per line)") from None
    if not found:
        raise DataError(f"{list_path}: the list names no image (one path per line; # starts a comment)")
    return found


def _refuse_duplicate_names(found: list[tuple[str, ImageLocation]], spec: str) -> None:
    seen: dict[str, ImageLocation] = {}
    for name, location in found:
        if name in seen:
            raise DataError(f"{spec}: two images are named {name!r} ({seen[name]} and {location}); output "
                            "rows are keyed by name: rename or remove one")
        seen[name] = location


def is_image_source(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` is written as an image list file or tar shards (it need not exist)."""
    text = os.fspath(spec)
    return is_shard_spec(text) or Path(text).suffix.lower() in LIST_SUFFIXES


def list_images(spec: str | os.PathLike[str], *, recursive: bool = True,
                allow_outside_root: bool = False) -> list[tuple[str, ImageLocation]]:
    """``(name, location)`` of every image ``spec`` names: a folder, tar shards or a list file
    (module docstring). An empty result, a missing path or any other file is an error."""
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        found = _folder_images(path, recursive, allow_outside_root)
        if not found:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        return found
    if is_shard_spec(text):
        found = index_shards(_shard_paths(text, None, ""))
        if not found:
            raise DataError(f"{text}: the shards hold no image member (extensions jpg, jpeg, png, webp, bmp)")
        return found
    if path.suffix.lower() in LIST_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{path}: no such image list file")
        found = read_image_list(path)
        _refuse_duplicate_names(found, text)
        return found
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    raise DataError(f"{path}: not a folder, an image list file ({', '.join(LIST_SUFFIXES)}) or tar shards "
                    "(.tar, data-{000..009}.tar)")
