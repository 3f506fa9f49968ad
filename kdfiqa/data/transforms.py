"""Views of an image: the student's and the teacher's, cut from the same content.

A transform first draws the *geometry* of a sample (crop boxes in source pixels and a flip), then
renders each *view* from those boxes at its own resolution: the student's ``"image"`` (e.g. 224x224)
and, when a teacher resolution is given, the teacher's ``"teacher_image"`` (e.g. 512x512). Both views
therefore show exactly the same region, flipped the same way. Each box is resampled once, straight
from the source, so "resize then crop" costs one interpolation. The crop modes place their boxes at
integer offsets of the image (or of it resized), as torchvision does: such a box is rendered as that
resize and an integer crop, bit for bit ``torchvision.transforms``' ``Resize`` + ``RandomCrop``/``CenterCrop``, so
a crop at its own size is a pixel-exact cut (no sub-pixel blur); any other box (a crop rendered at
another size, e.g. the teacher's view) by PIL ``resize(box=...)``.

Geometries (``mode``), after the seed's recipes:

* ``resize``: the whole image, stretched to the view size (2077Agent test, BIT_ssvgg).
* ``random_crop``: a random ``crop``-sized box (DERS, the challenge baseline).
* ``randcrop_or_resize``: with probability ``crop_prob`` a random crop, otherwise the whole image
  (2077Agent's RandCropOrResize).
* ``center_crop``: resize to ``resize`` then take the central ``crop`` (Conquerit test: 240 -> 224).
* ``native``: the whole image at its own resolution, no resampling (evaluate with batch size 1).
* ``multi_crop``: ``num_crops`` random crops stacked into a (N, 3, H, W) tensor; the evaluator
  averages the N predictions (the challenge baseline's 20-crop test).

Small images: when the image is smaller than a crop in either direction, it is first upscaled
(aspect ratio kept) just enough for the crop to fit, i.e. its short side becomes the crop size.

Quality augmentation: a training spec's ``quality_augment`` (:mod:`kdfiqa.data.quality_augment`)
alters the decoded image *before* the views are cut, so the student's and the teacher's views show
the same altered content. The transform carries it as :attr:`PairedViews.augment`; the data set
applies it (:meth:`kdfiqa.data.ImageSamples.source`), since a mixup partner is another of its images,
and marks the altered sample's label missing for that view.

Randomness comes from torch's global generator, which :class:`torch.utils.data.DataLoader` seeds
per worker, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..size import Size
from .quality_augment import QualityAugment
from .transform_spec import NORMALIZATIONS, PRESETS, TransformLike, TransformSpec, check_normalize

__all__ = [
    "Box",
    "NORMALIZATIONS",
    "PRESETS",
    "FullImage",
    "RandomCrop",
    "RandCropOrResize",
    "CenterCrop",
    "MultiCrop",
    "PairedViews",
    "TransformSpec",
    "build_transform",
    "renormalize",
    "resized_size",
    "to_tensor",
]

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in source pixels; may be fractional."""
HW = tuple[int, int]
"""(height, width) in pixels."""


def _uniform() -> float:
    return float(torch.rand(()))


def _fit_scale(width: int, height: int, crop: HW) -> float:
    """Upscale factor (>= 1) that makes a ``crop`` fit inside a ``width`` x ``height`` image."""
    return max(crop[0] / height, crop[1] / width, 1.0)


class Geometry(Protocol):
    """Draws the crop boxes of one sample."""

    stacked: bool
    """Whether the boxes form a stack of crops (N, 3, H, W) rather than a single view."""

    def boxes(self, width: int, height: int) -> list[Box]: ...


@dataclass(frozen=True)
class FullImage:
    """The whole image."""

    stacked = False

    def boxes(self, width: int, height: int) -> list[Box]:
        return [(0.0, 0.0, float(width), float(height))]


@dataclass(frozen=True)
class RandomCrop:
    """torchvision's ``RandomCrop(crop)`` (height, width): a uniformly placed box at integer pixel
    offsets (:func:`_random_grid_crop`), a pixel-exact cut; small images are upscaled to fit it first."""

    crop: HW
    stacked = False

    def boxes(self, width: int, height: int) -> list[Box]:
        return [_random_grid_crop(width, height, (width, height), self.crop)]


def resized_size(width: int, height: int, resize: int | HW | None) -> tuple[int, int]:
    """The (width, height) torchvision's ``Resize(resize)`` gives an image: an int scales the short
    side to ``resize`` and the long side to ``int(resize * long / short)`` (truncated, as torchvision
    does), a (height, width) pair is the size itself, ``None`` keeps the image's size."""
    if resize is None:
        return width, height
    if isinstance(resize, int):
        if width <= height:
            return resize, int(resize * height / width)
        return int(resize * width / height), resize
    return resize[1], resize[0]


def _grid_box(width: int, height: int, grid: tuple[int, int], left: int, top: int, crop: HW) -> Box:
    """The ``crop`` box at integer offset (``left``, ``top``) of the image resized to ``grid``
    (width, height), in source pixels: rendering it at the crop size is the resize followed by the
    crop, resampled once (PIL computes the same filter taps for the box as for the whole image)."""
    sx, sy = width / grid[0], height / grid[1]
    return (left * sx, top * sy, (left + crop[1]) * sx, (top + crop[0]) * sy)


def _fit_grid(width: int, height: int, crop: HW) -> tuple[int, int]:
    """The (width, height) at which a ``width`` x ``height`` image holds ``crop``: its own size when
    the crop fits, else upscaled with its aspect ratio kept (sides truncated, as torchvision's
    ``Resize`` does, and never below the crop)."""
    scale = _fit_scale(width, height, crop)
    if scale == 1.0:
        return width, height
    return max(crop[1], int(width * scale)), max(crop[0], int(height * scale))


def _random_grid_crop(width: int, height: int, grid: tuple[int, int], crop: HW) -> Box:
    """A ``crop`` at a uniformly drawn integer offset of the image resized to ``grid`` (width,
    height; upscaled first when the crop does not fit, :func:`_fit_grid`), in source pixels:
    ``top = randint(0, h - crop_h + 1)``, then ``left = randint(0, w - crop_w + 1)``, drawn from
    torch's generator in torchvision's ``RandomCrop`` order, so the same seed cuts the same crop."""
    grid_w, grid_h = _fit_grid(grid[0], grid[1], crop)
    top = int(torch.randint(0, grid_h - crop[0] + 1, size=(1,)))
    left = int(torch.randint(0, grid_w - crop[1] + 1, size=(1,)))
    return _grid_box(width, height, (grid_w, grid_h), left, top, crop)


@dataclass(frozen=True)
class ResizedRandomCrop:
    """torchvision's ``Resize(resize)`` then ``RandomCrop(crop)`` (the ECNU-SJTU training transform),
    bit for bit: the short side is scaled to ``resize`` (:func:`resized_size`) and the crop placed
    as :func:`_random_grid_crop` places it."""

    crop: HW
    resize: int
    stacked = False

    def boxes(self, width: int, height: int) -> list[Box]:
        return [_random_grid_crop(width, height, resized_size(width, height, self.resize), self.crop)]


@dataclass(frozen=True)
class RandCropOrResize:
    """2077Agent's RandCropOrResize: a random crop with probability ``crop_prob``, else the whole image."""

    crop: HW
    crop_prob: float = 0.5
    stacked = False

    def boxes(self, width: int, height: int) -> list[Box]:
        if _uniform() < self.crop_prob:
            return RandomCrop(self.crop).boxes(width, height)
        return FullImage().boxes(width, height)


@dataclass(frozen=True)
class CenterCrop:
    """Resize then take the central ``crop``. ``resize`` is an int (short side, aspect kept), a
    (height, width) pair (exact size, Conquerit's 240x240), or ``None`` (no resize).

    When the resized image holds the crop this is torchvision's ``Resize(resize)`` then
    ``CenterCrop(crop)`` bit for bit: the resized size of :func:`resized_size` and the integer
    offsets ``round((w - crop_w) / 2)``, ``round((h - crop_h) / 2)``. A smaller image is upscaled
    (aspect kept, :func:`_fit_grid`) until the crop fits, where torchvision would pad it with black.
    """

    crop: HW
    resize: int | HW | None = None
    stacked = False

    def boxes(self, width: int, height: int) -> list[Box]:
        grid_w, grid_h = _fit_grid(*resized_size(width, height, self.resize), self.crop)
        left, top = int(round((grid_w - self.crop[1]) / 2.0)), int(round((grid_h - self.crop[0]) / 2.0))
        return [_grid_box(width, height, (grid_w, grid_h), left, top, self.crop)]


@dataclass(frozen=True)
class MultiCrop:
    """``num_crops`` independent random crops, stacked (challenge baseline: 20 crops of 224)."""

    crop: HW
    num_crops: int = 20
    stacked = True

    def boxes(self, width: int, height: int) -> list[Box]:
        crop = RandomCrop(self.crop)
        return [crop.boxes(width, height)[0] for _ in range(self.num_crops)]


def to_tensor(img: Image.Image, normalize: str = "none") -> torch.Tensor:
    """8-bit RGB PIL image -> float (3, H, W) tensor on [0, 1], then ``(x - mean) / std``."""
    mean, std = NORMALIZATIONS[normalize]
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def renormalize(x: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Images ``x`` (..., 3, H, W) normalised by ``source`` (a :data:`NORMALIZATIONS` name) in
    ``target``'s normalisation: ``((x·std_s + mean_s) − mean_t) / std_t``, per channel."""
    if source == target:
        return x
    (mean_s, std_s), (mean_t, std_t) = NORMALIZATIONS[source], NORMALIZATIONS[target]

    def channels(values: tuple[float, float, float]) -> torch.Tensor:
        return torch.tensor(values, dtype=x.dtype, device=x.device).view(3, 1, 1)

    return (x * channels(std_s) + channels(mean_s) - channels(mean_t)) / channels(std_t)


GRID_TOLERANCE = 1e-6
"""How far (in pixels of the resized image) a box edge may be from the integer grid and still count as on it."""


def _grid_crop(width: int, height: int, box: Box, size: HW) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """When rendering ``box`` at ``size`` is an integer resize of the whole image followed by an
    integer crop, that resize ((width, height)) and the crop's (left, top); else ``None``."""
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    if box_w <= 0 or box_h <= 0:
        return None
    exact_w, exact_h = width * size[1] / box_w, height * size[0] / box_h  # the resized image's size
    grid_w, grid_h = round(exact_w), round(exact_h)
    if grid_w < size[1] or grid_h < size[0]:
        return None
    exact_left, exact_top = box[0] * grid_w / width, box[1] * grid_h / height  # the crop's offset there
    left, top = round(exact_left), round(exact_top)
    off_grid = (exact_w - grid_w, exact_h - grid_h, exact_left - left, exact_top - top)
    if any(abs(d) > GRID_TOLERANCE for d in off_grid):
        return None
    if left < 0 or top < 0 or left + size[1] > grid_w or top + size[0] > grid_h:
        return None
    return (grid_w, grid_h), (left, top)


class PairedViews:
    """Render named views (e.g. ``{"image": (224, 224), "teacher_image": (512, 512)}``) of one image
    from one draw of ``geometry`` and one horizontal flip (probability 0.5 when ``flip``).

    A view's size ``None`` keeps the box at its own resolution. Returns a dict of tensors keyed by
    view name; for a stacked geometry each tensor is (N, 3, H, W). ``spec`` is the
    :class:`~kdfiqa.data.transform_spec.TransformSpec` :func:`build_transform` built it from
    (presets expanded, normalisation filled in), ``None`` when built by hand:
    the Trainer records a validation transform's spec as the model's evaluation transform.
    ``augment`` is the spec's quality augmentation, which the data set applies to the decoded image
    before calling the transform (calling the transform itself never alters the image).
    """

    def __init__(
        self,
        geometry: Geometry,
        views: Mapping[str, HW | None],
        *,
        flip: bool = False,
        normalize: str = "imagenet",
        view_normalize: Mapping[str, str] | None = None,
        augment: QualityAugment | None = None,
    ) -> None:
        self.view_normalize = {key: normalize for key in views}
        self.view_normalize.update(view_normalize or {})
        for key, name in self.view_normalize.items():
            check_normalize(name, "normalize" if key == "image" else f"{key} normalize")
        self.geometry = geometry
        self.views = dict(views)
        self.flip = flip
        self.normalize = normalize
        self.augment = augment
        self.spec: TransformSpec | None = None

    def _render(self, img: Image.Image, box: Box, size: HW | None, flip: bool, normalize: str) -> torch.Tensor:
        grid = None if size is None else _grid_crop(img.width, img.height, box, size)
        if grid is not None:
            # resize then crop on the integer grid, as torchvision does (bit for bit): a box render
            # would compute its filter taps from rounded box edges and can differ by one level
            (grid_w, grid_h), (left, top) = grid
            resized = img if (grid_w, grid_h) == img.size else img.resize((grid_w, grid_h), Image.Resampling.BILINEAR)
            out = resized.crop((left, top, left + size[1], top + size[0]))
        else:
            # float arithmetic can put a box edge a rounding error (~1e-14) outside the image, which
            # PIL refuses ("box offset can't be negative"): clamp every box to the image, in one place
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(img.width), box[2]), min(float(img.height), box[3]))
            if size is None:
                full = (0.0, 0.0, float(img.width), float(img.height))
                out = img if box == full else img.crop(tuple(round(v) for v in box))
            else:
                out = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(out, normalize)

    def draw(self, img: Image.Image) -> tuple[list[Box], bool]:
        """One random draw of the crop box(es) and the flip for ``img`` (from torch's generator)."""
        boxes = self.geometry.boxes(img.width, img.height)
        return boxes, self.flip and _uniform() < 0.5

    def render(self, img: Image.Image, boxes: Sequence[Box], flip: bool,
               views: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The named ``views`` (default: all) of ``img`` for a given draw: the same boxes and flip
        in every view, so a cached draw renders the student's view of the teacher's crop."""
        out = {}
        for key in views if views is not None else self.views:
            rendered = [self._render(img, box, self.views[key], flip, self.view_normalize[key]) for box in boxes]
            out[key] = torch.stack(rendered) if self.geometry.stacked else rendered[0]
        return out

    def __call__(self, img: Image.Image) -> dict[str, torch.Tensor]:
        return self.render(img, *self.draw(img))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(geometry={self.geometry}, views={self.views}, "
            f"flip={self.flip}, normalize={self.view_normalize!r}"
            + ("" if self.augment is None else f", augment={self.augment}") + ")"
        )


def _geometry(spec: TransformSpec) -> Geometry:
    """The crop boxes ``spec`` draws (its size filled in)."""
    if spec.mode in ("resize", "native"):
        return FullImage()
    crop = spec.crop_box.hw
    if spec.mode == "random_crop":
        return RandomCrop(crop)
    if spec.mode == "resize_random_crop":
        return ResizedRandomCrop(crop, spec.resize if isinstance(spec.resize, int) else crop[0])
    if spec.mode == "randcrop_or_resize":
        return RandCropOrResize(crop, 0.5 if spec.crop_prob is None else spec.crop_prob)
    if spec.mode == "multi_crop":
        return MultiCrop(crop, 20 if spec.num_crops is None else spec.num_crops)
    resize = spec.resize
    return CenterCrop(crop, resize.hw if isinstance(resize, Size) else resize)


def build_transform(spec: TransformLike) -> PairedViews:
    """Build a :class:`PairedViews` from a preset name, a spec mapping (e.g. from a YAML recipe) or a
    :class:`~kdfiqa.data.transform_spec.TransformSpec` (mappings are read by
    :meth:`TransformSpec.parse <kdfiqa.data.transform_spec.TransformSpec.parse>`).

    Spec keys:

    - ``preset``: a :data:`PRESETS` name; the other keys override its fields.
    - ``mode``: ``resize``, ``random_crop``, ``resize_random_crop`` (short side to ``resize``, then a
      random ``size`` crop, torchvision's Resize + RandomCrop), ``randcrop_or_resize``,
      ``center_crop``, ``native``, ``multi_crop`` (see the module docstring).
    - ``size``: the student view, int or [height, width] (not for ``native``).
    - ``crop``: the crop box in source pixels for the crop modes (default: ``size``).
    - ``resize``: ``center_crop``: int (short side) or [height, width] (default: no resize);
      ``resize_random_crop``: int, the short side (default: the crop's height).
    - ``teacher_size``: int, [height, width] or ``"native"``: also render ``"teacher_image"``.
    - ``teacher_normalize``: the teacher view's normalisation, the teacher's own (default: ``normalize``).
    - ``flip``: random horizontal flip with probability 0.5 (default false).
    - ``normalize``: ``imagenet`` (default), ``symmetric`` (to (-1, 1)) or ``none``.
    - ``crop_prob``: ``randcrop_or_resize`` only, the probability of cropping (default 0.5).
    - ``num_crops``: ``multi_crop`` only (default 20).
    - ``quality_augment``: training only, a mapping of ``p``, ``kinds``, ``max_severity`` and
      ``mixup`` (:class:`~kdfiqa.data.quality_augment.QualityAugment`): the decoded image is
      degraded (and mixed) before both views are cut; only for a teacher that scores the views online.

    Example: ``{"mode": "randcrop_or_resize", "size": 224, "crop": 512, "teacher_size": 512,
    "flip": True}`` gives the 2077Agent student/teacher pair. The transform's ``spec`` is the spec
    read, its normalisation filled in.
    """
    spec = TransformSpec.parse(spec).completed()
    if spec.mode != "native" and spec.size is None:
        raise ConfigError(f"transform field 'size' is required for mode {spec.mode!r}: the view's size, "
                          "224 or [height, width]")
    views: dict[str, HW | None] = {"image": None if spec.mode == "native" else spec.size.hw}
    view_normalize = {}
    if spec.teacher_size is not None:
        views["teacher_image"] = None if spec.teacher_size == "native" else spec.teacher_size.hw
        if spec.teacher_normalize is not None:
            view_normalize["teacher_image"] = spec.teacher_normalize
    views_out = PairedViews(_geometry(spec), views, flip=bool(spec.flip), normalize=spec.normalize,
                            view_normalize=view_normalize, augment=spec.quality_augment)
    views_out.spec = spec
    return views_out
