"""Decoding image files into RGB, safely.

:func:`load_rgb` is the one place kdfiqa turns a file into pixels. Its rules:

* **Modes.** Every PIL mode becomes 8-bit RGB. Grey (``1``, ``L``), palette (``P``), ``CMYK``,
  ``YCbCr`` go through PIL's own conversion. 16-bit and 32-bit integer grey (``I;16*``, ``I``; what
  16-bit PNGs decode to) are scaled from 0..65535 to 0..255, not clipped. Float grey (``F``) is read
  as 0..1. Images with transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a transparent colour, ...)
  are composited over a solid ``background``, black by default.
* **Orientation.** The EXIF orientation tag is applied, so the pixels are upright as a viewer shows
  them. An unreadable EXIF block is logged and the image used as stored.
* **Size.** An image with more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`) is refused
  from its header, before any pixel is decoded, so a decompression bomb cannot exhaust memory.
* **Failures.** A missing, empty, truncated or undecodable file raises
  :class:`~kdfiqa.errors.DataError` naming the path and the reason. No other image is ever
  substituted.

:func:`validate_images` applies the same loader to every image of a data set before training;
:meth:`ImageSource.check_root` first takes a label file whose images are mostly missing for one read
against the wrong root, and says which option sets that root.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError, spelled

__all__ = ["MAX_PIXELS", "IMAGE_EXTENSIONS", "MOSTLY_MISSING", "ImageSource", "load_rgb", "check_image",
           "validate_images"]

log = logging.getLogger(__name__)

MAX_PIXELS = 8192 * 8192
"""Default limit on width x height (64 megapixels, about 200 MB as RGB)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
"""File extensions (lower case) that a folder scan treats as images."""

_INTEGER_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    mode = img.mode
    if mode in _INTEGER_GREY_MODES or mode == "F":
        scale = 1.0 if mode == "F" else 65535.0
        grey = np.asarray(img, dtype=np.float64) / scale
        grey8 = np.round(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(grey8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


def _apply_exif_orientation(img: Image.Image, path: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - any malformed EXIF: keep the stored orientation
        log.warning("%s: unreadable EXIF orientation (%s); using the image as stored", path, exc)
        return img


def load_rgb(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Decode ``path`` into an upright 8-bit RGB PIL image (rules in the module docstring)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise DataError(
                        f"{path}: {width}x{height} pixels is over the limit of {max_pixels} "
                        "(possible decompression bomb); downscale the image or raise max_pixels"
                    )
                if width == 0 or height == 0:
                    raise DataError(f"{path}: image has zero size {width}x{height}")
                img.load()
                img = _apply_exif_orientation(img, path)
                return _to_rgb(img, background)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing (no such file)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image file") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not a recognised image format") from None
    except MemoryError:
        raise DataError(f"{path}: out of memory while decoding; the image is too large") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types on corrupt input
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated file ({reason})"
        raise DataError(f"{path}: cannot decode: {reason}") from None


class ValidatableDataset(Protocol):
    """What :func:`validate_images` needs: a path per sample and a way to drop samples."""

    max_pixels: int

    def image_paths(self) -> Sequence[Path]: ...

    def exclude(self, indices: Sequence[int]) -> None: ...


def check_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why ``path`` cannot be used as an image (the :class:`DataError` message), or ``None`` if it can."""
    try:
        load_rgb(path, max_pixels=max_pixels)
    except DataError as exc:
        return str(exc)
    return None


MOSTLY_MISSING = 0.5
"""A label file with more than this share of its images missing was read against the wrong root."""


@dataclass(frozen=True)
class ImageSource:
    """Where a label file's images were looked for: the data set built from it, the option and file
    that named them (``--pseudo-csv``, ``pseudo.csv``), the folder its names were resolved against and
    the option that sets that folder (``--pseudo-root``), and whether that option was left out (the
    folder then came from ``--root``)."""

    dataset: ValidatableDataset
    label_option: str
    label_file: str
    root: str
    root_option: str
    defaulted: bool = False

    def check_root(self) -> None:
        """Refuse, with advice about the root, a label file whose images are mostly missing: skipping
        them (``--skip-bad``) would drop nearly all of them."""
        paths = list(self.dataset.image_paths())
        missing = [p for p in paths if not os.path.exists(p)]
        if not paths or len(missing) <= MOSTLY_MISSING * len(paths):
            return
        given = f" ({self.root_option} not given, so {spelled('--root', 'data.root')}'s)" if self.defaulted else ""
        raise DataError(
            f"{self.label_option} {self.label_file}: {len(missing)} of {len(paths)} of its images are missing "
            f"under {self.root}{given}, the folder its names are resolved against (first: {missing[0]}); give "
            f"{self.root_option} the folder its images are in")


def validate_images(datasets: ValidatableDataset | Sequence[ValidatableDataset], *, skip_bad: bool = False,
                    num_workers: int = 2) -> int:
    """Decode every image of ``datasets`` (one data set, or several: a training and a validation
    set) once and report all the unusable ones together.

    Missing, empty, truncated, undecodable and over-sized files are collected. Without ``skip_bad``
    any problem raises one :class:`DataError`: a summary line, then one line per file with its
    reason, over every data set given. With ``skip_bad`` the bad samples are removed from their data
    set (each one logged at WARNING level) and their number is returned; a data set left empty is
    still an error. Decoding runs in ``num_workers`` threads (PIL releases the GIL while decoding).
    A label file read against the wrong root is refused before, by :meth:`ImageSource.check_root`
    (whose advice is the root, not ``skip_bad``, which would drop nearly all of its images).
    """
    group = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
    found = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for dataset in group:
            paths = list(dataset.image_paths())
            reasons = list(pool.map(lambda p, ds=dataset: check_image(p, max_pixels=ds.max_pixels), paths))
            found.append((dataset, len(paths), [(i, r) for i, r in enumerate(reasons) if r is not None]))
    total, bad = sum(n for _, n, _ in found), [entry for _, _, entries in found for entry in entries]
    if not bad:
        return 0
    if not skip_bad:
        details = "\n".join(reason for _, reason in bad)
        raise DataError(
            f"{len(bad)} of {total} images cannot be used; fix or remove them, or skip them "
            f"with {spelled('--skip-bad', 'skip_bad=True')}:\n{details}"
        )
    for dataset, n, entries in found:
        if entries and len(entries) == n:
            raise DataError(f"all {n} images are unusable, nothing left to train on; first: {entries[0][1]}")
    for dataset, _, entries in found:
        for _, reason in entries:
            log.warning("skipping %s", reason)
        dataset.exclude([i for i, _ in entries])
    log.warning("skipped %d of %d images that cannot be used", len(bad), total)
    return len(bad)
