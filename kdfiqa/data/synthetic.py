"""Synthetic face-quality data for the demo and the tests: every image and every score is made up.

:func:`make_synthetic_fiqa` draws cartoon faces procedurally (or takes the user's own clean photos
with ``sources=DIR``), degrades each with 0-2 of the degradations of :mod:`kdfiqa.data.degradations`
at random, recorded severities, and derives a MOS-like score from those severities:

    damage = 1 - prod_k (1 - w_k * s_k)              (one factor per applied degradation k)
    score  = clip(0.05 + 0.9 * (1 - damage) + e, 0, 1),  e ~ N(0, 0.02^2)

with impact weights ``w`` in :data:`IMPACT`. The score falls monotonically as any severity grows;
an undegraded image scores about 0.95. The files say that they are synthetic: images are named
``synthetic_NNNNN.png`` and the folder holds a ``SYNTHETIC_DATA.txt`` note.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic_write import write_atomic
from ..errors import DataError
from .csv_files import write_scores, write_table
from .datasets import UnlabeledImageFolder
from .degradations import degrade
from .images import load_rgb

__all__ = ["IMPACT", "SyntheticFIQA", "make_synthetic_fiqa", "draw_face", "synthetic_score"]

IMPACT = {"blur": 1.0, "noise": 0.8, "jpeg": 0.6, "downup": 0.9, "overexpose": 0.7, "underexpose": 0.7}
"""How much each degradation at severity 1 lowers the score (see the module docstring)."""

SCORE_NOISE = 0.02
SCORE_FORMAT = ".6f"
"""How the CSV files write a score: six decimals, far finer than the score noise."""
NUM_DEGRADATIONS_P = (0.15, 0.55, 0.30)
"""Probabilities of applying 0, 1 and 2 degradations to an image."""

SKIN_TONES = ((255, 224, 196), (241, 194, 165), (224, 172, 135), (198, 134, 96), (141, 85, 54), (92, 58, 38))
HAIR_COLOURS = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (190, 150, 90), (150, 150, 150), (120, 40, 20))
IRIS_COLOURS = ((70, 45, 25), (40, 80, 140), (60, 110, 70), (90, 90, 90))


@dataclass(frozen=True)
class SyntheticFIQA:
    """Where :func:`make_synthetic_fiqa` wrote its data set."""

    image_dir: Path
    """The PNG images."""
    labels: Path
    """Header-less challenge-format CSV ``image_name,score``."""
    details: Path
    """Headed CSV ``image,score,degradations`` with the applied ``kind:severity`` pairs."""
    n: int


def synthetic_score(severities: dict[str, float], noise: float = 0.0) -> float:
    """The score formula of the module docstring for ``{kind: severity}``, plus ``noise``."""
    damage = 1.0 - math.prod(1.0 - IMPACT[k] * s for k, s in severities.items())
    return float(min(1.0, max(0.0, 0.05 + 0.9 * (1.0 - damage) + noise)))


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 18) -> tuple[int, int, int]:
    shifted = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(c) for c in shifted)  # type: ignore[return-value]


def _pick(palette: tuple[tuple[int, int, int], ...], rng: np.random.Generator) -> tuple[int, int, int]:
    return _jitter(palette[int(rng.integers(len(palette)))], rng)


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    top, bottom = rng.integers(30, 230, size=3), rng.integers(30, 230, size=3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    gradient = (1 - t) * top + t * bottom + rng.normal(0, 6, size=(size, size, 3))
    img = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(-size // 4, size, size=2)
        w, h = rng.integers(size // 8, size // 2, size=2)
        draw.rectangle((int(x0), int(y0), int(x0 + w), int(y0 + h)), fill=_pick(HAIR_COLOURS + SKIN_TONES, rng))
    return img


def _eye(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, iris: tuple[int, int, int], look: float) -> None:
    draw.ellipse((cx - r, cy - 0.55 * r, cx + r, cy + 0.55 * r), fill=(245, 245, 240), outline=(40, 30, 30))
    ix = cx + look * 0.35 * r
    draw.ellipse((ix - 0.5 * r, cy - 0.5 * r, ix + 0.5 * r, cy + 0.5 * r), fill=iris)
    draw.ellipse((ix - 0.2 * r, cy - 0.2 * r, ix + 0.2 * r, cy + 0.2 * r), fill=(10, 10, 10))
    draw.point((ix + 0.15 * r, cy - 0.15 * r), fill=(255, 255, 255))
    for k in range(5):
        x = cx - r + k * r / 2
        draw.line((x, cy - 0.55 * r, x - 0.1 * r, cy - 0.8 * r), fill=(25, 20, 20), width=1)


def draw_face(size: int, rng: np.random.Generator) -> Image.Image:
    """A cartoon face of ``size`` x ``size``: background, hair (with strands), skin-toned face with
    pore-like texture, eyes, brows, nose and mouth, with random pose, proportions and colours."""
    img = _background(size, rng)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    skin, hair, lips = _pick(SKIN_TONES, rng), _pick(HAIR_COLOURS, rng), _jitter((170, 70, 70), rng, 30)
    scale = rng.uniform(0.8, 1.15)
    fw, fh = size * 0.26 * scale, size * 0.34 * scale  # half-width, half-height of the face
    cx, cy = size / 2 + rng.uniform(-0.06, 0.06) * size, size / 2 + rng.uniform(-0.04, 0.08) * size
    yaw = rng.uniform(-1.0, 1.0)
    draw.ellipse((cx - fw * 0.45, cy + fh * 0.6, cx + fw * 0.45, cy + fh * 1.8), fill=skin)  # neck
    draw.ellipse((cx - fw * 1.15, cy - fh * 1.2, cx + fw * 1.15, cy + fh * 0.5), fill=hair)
    strands = int(size * 1.5)  # hair strands: fine oriented texture
    angle = rng.uniform(math.pi * 0.95, math.pi * 2.05, strands)
    radii = np.stack([rng.uniform(0.7, 1.0, strands), rng.uniform(1.0, 1.2, strands)])
    xs, ys = cx + np.cos(angle) * fw * radii, cy - fh * 0.3 + np.sin(angle) * fh * radii
    colours = np.clip(np.asarray(hair) + rng.integers(-40, 41, size=(strands, 3)), 0, 255).tolist()
    for k in range(strands):
        draw.line((xs[0, k], ys[0, k], xs[1, k], ys[1, k]), fill=tuple(colours[k]), width=1)
    draw.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=skin)
    ex, ey, er = fw * 0.42, cy - fh * 0.18, fw * rng.uniform(0.18, 0.26)
    shift = yaw * fw * 0.12
    iris = _pick(IRIS_COLOURS, rng)
    for side in (-1, 1):
        _eye(draw, cx + shift + side * ex, ey, er, iris, yaw)
        brow_y = ey - er * rng.uniform(1.1, 1.6)
        draw.line((cx + shift + side * ex - er, brow_y + 2, cx + shift + side * ex + er, brow_y - side * 0.0),
                  fill=_jitter(hair, rng, 10), width=max(1, size // 64))
    nose_x, nose_y = cx + shift * 1.4, cy + fh * 0.18
    draw.line((nose_x, ey + er, nose_x - fw * 0.08, nose_y), fill=_jitter(skin, rng, 40), width=1)
    draw.arc((nose_x - fw * 0.14, nose_y - fh * 0.06, nose_x + fw * 0.14, nose_y + fh * 0.06), 0, 180, fill=(90, 50, 40))
    mw, my = fw * rng.uniform(0.3, 0.5), cy + fh * rng.uniform(0.45, 0.55)
    smile = rng.uniform(0.05, 0.2) * fh
    draw.chord((cx + shift - mw, my - smile, cx + shift + mw, my + smile), 0, 180, fill=lips)
    angle = rng.uniform(-15, 15)
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR, center=(cx, cy))
    img.paste(layer, mask=layer.getchannel("A"))
    pores = rng.normal(1.0, 0.05, size=(size, size, 1))  # fine multiplicative texture
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * pores, 0, 255).astype(np.uint8), mode="RGB")


def _source_image(path: Path, size: int, rng: np.random.Generator) -> Image.Image:
    img = load_rgb(path)
    side = min(img.size) * rng.uniform(0.85, 1.0)
    left, top = rng.uniform(0, img.width - side), rng.uniform(0, img.height - side)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def make_synthetic_fiqa(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    size: int = 128,
    seed: int = 0,
    sources: str | os.PathLike[str] | None = None,
) -> SyntheticFIQA:
    """Write ``n`` synthetic labelled face images of ``size`` x ``size`` under ``out_dir``.

    The clean images are drawn by :func:`draw_face`, or, with ``sources``, cut from the user's own
    face photos found in that folder (square crops, cycled in random order). Each image gets 0-2
    degradations at uniform random severities and the score of the module docstring. Writes
    ``out_dir/images/synthetic_NNNNN.png``, ``out_dir/synthetic_labels.csv`` (challenge format),
    ``out_dir/synthetic_degradations.csv`` and ``out_dir/SYNTHETIC_DATA.txt``. The same arguments
    give the same files.
    """
    if n < 1 or size < 16:
        raise DataError(f"make_synthetic_fiqa: need n >= 1 and size >= 16, got n={n}, size={size}")
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    source_paths = UnlabeledImageFolder(sources).image_paths() if sources is not None else None
    rng = np.random.default_rng(seed)
    kinds = list(IMPACT)
    rows = []
    for i in range(n):
        image_rng = np.random.default_rng(rng.integers(2**63))
        if source_paths is None:
            img = draw_face(size, image_rng)
        else:
            img = _source_image(source_paths[int(image_rng.integers(len(source_paths)))], size, image_rng)
        count = int(image_rng.choice(len(NUM_DEGRADATIONS_P), p=NUM_DEGRADATIONS_P))
        severities = {str(k): float(image_rng.uniform()) for k in image_rng.choice(kinds, size=count, replace=False)}
        for kind, severity in severities.items():
            img = degrade(img, kind, severity, seed=image_rng)
        score = synthetic_score(severities, float(image_rng.normal(0.0, SCORE_NOISE)))
        name = f"synthetic_{i:05d}.png"
        img.save(image_dir / name, compress_level=1)
        rows.append((name, score, ";".join(f"{k}:{s:.4f}" for k, s in severities.items())))
    names, scores, _ = zip(*rows)
    labels = write_scores(out / "synthetic_labels.csv", names, scores, float_format=SCORE_FORMAT)
    details = write_table(out / "synthetic_degradations.csv", ("image", "score", "degradations"), rows,
                          float_format=SCORE_FORMAT)
    write_atomic(
        out / "SYNTHETIC_DATA.txt",
        "This data set is synthetic, made by kdfiqa.data.make_synthetic_fiqa: "
        + ("cartoon faces drawn procedurally" if sources is None else f"crops of the photos in {sources}")
        + ", degraded at random severities; the scores are computed from those severities "
        "(see kdfiqa/data/synthetic.py), not rated by people.\n"
    )
    return SyntheticFIQA(image_dir, labels, details, n)
