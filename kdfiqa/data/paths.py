"""Resolving image names from a CSV or a folder scan to files under an image root.

A name such as ``../../etc/passwd``, ``/abs/path.png`` or a symlink inside the root that points
elsewhere would let a hand-edited CSV read files the user never meant to expose to training. Such
names are rejected unless the caller passes ``allow_outside_root=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError, spelled

__all__ = ["resolve_image_path"]


def resolve_image_path(
    root: str | os.PathLike[str],
    name: str,
    *,
    allow_outside_root: bool = False,
    where: str = "",
) -> Path:
    """Return the path of image ``name`` under ``root``.

    The name is joined to ``root`` and resolved through ``..`` components and symlinks; the result
    must lie inside the resolved root, unless ``allow_outside_root`` is true. The file need not exist
    (existence is checked by :func:`kdfiqa.data.validate_images`). ``where`` (e.g. ``"labels.csv
    line 7"``) prefixes the error message.
    """
    prefix = f"{where}: " if where else ""
    if not name or "\x00" in name:
        raise DataError(f"{prefix}field 'image': empty or invalid image name {name!r}")
    root_path = Path(root)
    joined = root_path / name
    if allow_outside_root:
        return joined
    try:
        real_root = Path(os.path.realpath(root_path))
        real = Path(os.path.realpath(joined))
    except (OSError, ValueError) as exc:
        raise DataError(f"{prefix}field 'image': cannot resolve {name!r} under {root_path}: {exc}") from None
    if real != real_root and real_root not in real.parents:
        raise DataError(
            f"{prefix}field 'image': {name!r} resolves to {real}, outside the image root {real_root}; "
            f"move the image under the root or pass {spelled('--allow-outside-root', 'allow_outside_root=True')}"
        )
    return joined
