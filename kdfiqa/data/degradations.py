"""Image degradations at a severity s in [0, 1], for SSAR pairs (I, T_s(I)) and the synthetic demo data.

The seed's RankCORE method (SSAR) relies on q(T_s(I)) < q(I), with larger s meaning a larger drop.
Every degradation here is the identity at s = 0 and gets monotonically stronger with s:

==============  =====================================================================
``blur``        Gaussian blur, sigma = 4 s pixels
``noise``       additive Gaussian noise, std = 0.2 s (pixels on [0, 1]); needs ``seed``
``jpeg``        JPEG re-encoding at quality round(95 - 90 s) (95 ... 5)
``downup``      bilinear downscale by 1 + 7 s, then back up to the original size
``overexpose``  gain 1 + 2 s, clipped at white
``underexpose`` gain 1 - 0.8 s (and the shadows lose precision with 8-bit rounding)
==============  =====================================================================

All functions take and return 8-bit RGB PIL images and are deterministic for a given ``seed``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..errors import ConfigError

__all__ = ["DEGRADATIONS", "degrade", "RandomDegradation"]

MAX_BLUR_SIGMA = 4.0
MAX_NOISE_STD = 0.2
MAX_DOWNSCALE = 8.0


def _blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(MAX_BLUR_SIGMA * s))


def _noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    noisy = pixels + rng.normal(0.0, MAX_NOISE_STD * s, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")


def _jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=round(95 - 90 * s))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _downup(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    factor = 1.0 + (MAX_DOWNSCALE - 1.0) * s
    small = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(small, Image.Resampling.BILINEAR).resize(img.size, Image.Resampling.BILINEAR)


def _scale_brightness(img: Image.Image, gain: float) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float32) * gain
    return Image.fromarray(np.round(np.clip(pixels, 0.0, 255.0)).astype(np.uint8), mode="RGB")


def _overexpose(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _scale_brightness(img, 1.0 + 2.0 * s)


def _underexpose(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _scale_brightness(img, 1.0 - 0.8 * s)


DEGRADATIONS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "blur": _blur,
    "noise": _noise,
    "jpeg": _jpeg,
    "downup": _downup,
    "overexpose": _overexpose,
    "underexpose": _underexpose,
}
"""Degradation name -> function(image, severity, rng)."""


def degrade(img: Image.Image, kind: str, severity: float, *, seed: int | np.random.Generator = 0) -> Image.Image:
    """Apply degradation ``kind`` at ``severity`` in [0, 1]; s = 0 returns the image unchanged."""
    if kind not in DEGRADATIONS:
        raise ConfigError(f"degradation {kind!r} is unknown; choose one of {', '.join(DEGRADATIONS)}")
    if not (isinstance(severity, (int, float)) and math.isfinite(severity) and 0.0 <= severity <= 1.0):
        raise ConfigError(f"degradation severity {severity!r} must be a number in [0, 1]")
    if severity == 0.0:
        return img.copy()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return DEGRADATIONS[kind](img.convert("RGB"), float(severity), rng)


@dataclass
class RandomDegradation:
    """Draw a degradation kind uniformly from ``kinds`` and a severity uniformly from
    ``severity_range``, and apply it: ``(T_s(I), kind, s)`` for SSAR's adaptive margin m(s) = lambda s
    (seed, RankCORE). Reproducible for a given ``seed`` and call order; DataLoader workers each get a
    copy with the same ``seed``, so give each worker its own (e.g. ``seed + worker_id``)."""

    kinds: Sequence[str] = ("blur", "noise", "jpeg", "downup")
    severity_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in DEGRADATIONS]
        if unknown or not self.kinds:
            raise ConfigError(f"degradation kinds {list(self.kinds)!r}: choose from {', '.join(DEGRADATIONS)}")
        lo, hi = self.severity_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"severity_range {self.severity_range!r} must satisfy 0 <= low <= high <= 1")
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, img: Image.Image) -> tuple[Image.Image, str, float]:
        kind = self.kinds[int(self._rng.integers(len(self.kinds)))]
        severity = float(self._rng.uniform(*self.severity_range))
        return degrade(img, kind, severity, seed=self._rng), kind, severity
