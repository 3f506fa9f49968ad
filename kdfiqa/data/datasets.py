"""Data sets of face images: labelled (:class:`FIQADataset`) and unlabelled (:class:`UnlabeledImageFolder`).

Each item is a dict (torch's default collate turns a list of them into a batch dict):

* ``"image"``: float tensor (3, H, W), the student's view, normalised by the transform;
* ``"teacher_image"``: the teacher's view of the same content, when the transform renders one;
* ``"score"``: float32 0-dim tensor, the label (labelled data only; NaN for a sample without a label
  in a set that mixes both, see :func:`kdfiqa.distill.objective.label_mask`, and for a labelled image
  altered by the transform's quality augmentation: its label describes the unaltered image only);
* ``"augment"``: what that augmentation applied (:meth:`kdfiqa.data.quality_augment.Augment.as_item`),
  with such a transform only;
* ``"name"``: the image name as in the CSV (or relative to the scanned folder);
* ``"index"``: the item's position in this data set.

Constructing a data set checks names and labels but does not open images; call
:func:`kdfiqa.data.validate_images` before training to check every file at once.
"""

from __future__ import annotations


import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .image_sources import ImageLocation, is_image_source, list_images, scan_folder
from .images import MAX_PIXELS, image_identity, load_rgb
from .labels import image_file_name, read_labels
from .paths import resolve_image_path
from .quality_augment import Augment
from .splits import SPLIT_METHODS, validation_count, validation_indices
from .transforms import build_transform

__all__ = ["Sample", "ImageSamples", "FIQADataset", "UnlabeledImageFolder", "split_dataset"]

Transform = Callable[[Image.Image], "torch.Tensor | dict[str, torch.Tensor]"]

DEFAULT_TRANSFORM = {"mode": "native", "normalize": "imagenet"}
"""Used when no transform is given: the whole image at native resolution, ImageNet-normalised."""


@dataclass(frozen=True)
class Sample:
    """One image of a data set: its name, where it is stored (a file or a tar shard member), its
    score (``None`` when unlabelled) and whether a training set holds it as one of ``data.unlabeled``'s
    images (label-less or pseudo-labeled: the second stream of
    :class:`~kdfiqa.data.samplers.TwoStreamSampler`)."""

    name: str
    path: ImageLocation
    score: float | None = None
    from_unlabeled: bool = False


class ImageSamples(Dataset):
    """A list of :class:`Sample` rendered through a transform; the base of kdfiqa's data sets.

    ``transform`` maps an RGB PIL image to a tensor (the ``"image"``) or to a dict of views (e.g.
    :class:`~kdfiqa.data.PairedViews`). Images are decoded by :func:`~kdfiqa.data.load_rgb` with
    ``max_pixels`` and ``background``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        transform: Transform | None = None,
        max_pixels: int = MAX_PIXELS,
        background: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        self.samples = list(samples)
        self.transform = transform if transform is not None else build_transform(DEFAULT_TRANSFORM)
        self.max_pixels = max_pixels
        self.background = background

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> "ImageSamples":
        """Unlabelled images given as image files, folders (scanned recursively, sorted), image list
        files and tar shards (:func:`~kdfiqa.data.image_sources.list_images`), e.g. for ``kdfiqa
        predict``. Names are the paths as given (``folder/relative/name`` for files found in a
        folder), a list file's lines as written, a shard member's sample key; an image reached twice
        is kept once, under its first name. A missing path, or no image at all, is an error."""
        found = []
        for given in paths:
            path = Path(given)
            if path.is_dir():
                found += [Sample((path / f.relative_to(path)).as_posix(), f) for f in scan_folder(path)]
            elif is_image_source(given):
                found += [Sample(name, location) for name, location in list_images(given)]
            elif path.exists():
                found.append(Sample(str(given), path))
            else:
                raise DataError(f"{path}: no such file or folder")
        unique: dict[str, Sample] = {}  # an image given twice (a file and its folder) is scored once
        for sample in found:
            unique.setdefault(image_identity(sample.path), sample)
        samples = list(unique.values())
        if not samples:
            raise DataError(f"no image files found in {', '.join(str(p) for p in paths)}")
        return cls(samples, **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        augment = self.draw_augment(index)
        return self.item(index, self.transform(self.source(index, augment)), augment)

    def load(self, index: int) -> Any:
        """The decoded RGB image of sample ``index`` (before any transform)."""
        sample = self.samples[index]
        return load_rgb(sample.path, max_pixels=self.max_pixels, background=self.background)

    def draw_augment(self, index: int) -> Augment | None:
        """A draw of the transform's quality augmentation for sample ``index`` (``None`` when the
        transform has none), partners drawn among this data set's samples."""
        augment = getattr(self.transform, "augment", None)
        return None if augment is None else augment.draw(index, len(self))

    def source(self, index: int, augment: Augment | None = None) -> Any:
        """The image the views of sample ``index`` are cut from: the decoded image, altered by
        ``augment`` (a draw of :meth:`draw_augment`) when given."""
        img = self.load(index)
        if augment is None or not augment.altered:
            return img
        return augment.apply(img, None if augment.partner is None else self.load(augment.partner))

    def item(self, index: int, views: Any, augment: Augment | None = None) -> dict[str, Any]:
        """The item of sample ``index`` with its rendered ``views`` (a tensor or a dict of them),
        its ``"score"`` when labelled (NaN when ``augment`` altered the image), ``"augment"`` when
        given, ``"name"`` and ``"index"``."""
        sample = self.samples[index]
        item: dict[str, Any] = dict(views) if isinstance(views, dict) else {"image": views}
        if sample.score is not None:
            score = math.nan if augment is not None and augment.altered else sample.score
            item["score"] = torch.tensor(score, dtype=torch.float32)
        if augment is not None:
            item["augment"] = augment.as_item()
        item["name"] = sample.name
        item["index"] = index
        return item

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def image_paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    def subset(self, indices: Iterable[int]) -> "ImageSamples":
        """A copy holding only the samples at ``indices`` (in that order), same transform."""
        new = copy.copy(self)
        new.samples = [self.samples[i] for i in indices]
        return new

    def with_transform(self, transform: Transform) -> "ImageSamples":
        """A copy with another transform (e.g. the validation views of a split)."""
        new = copy.copy(self)
        new.samples = list(self.samples)
        new.transform = transform
        return new

    def exclude(self, indices: Sequence[int]) -> None:
        """Remove the samples at ``indices`` in place (used by ``validate_images(skip_bad=True)``)."""
        drop = set(indices)
        self.samples = [s for i, s in enumerate(self.samples) if i not in drop]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, transform={self.transform!r})"


class FIQADataset(ImageSamples):
    """Images under ``root`` labelled by the CSV ``labels`` (formats in :mod:`kdfiqa.data.labels`).
    ``root`` may also be an image list file or tar shards, whose images the CSV names as
    :func:`~kdfiqa.data.image_sources.list_images` does (a list file's lines, sample keys).

    Names must resolve inside ``root`` unless ``allow_outside_root``; scores must lie in
    ``score_range`` (``None``: any finite score). Other keyword arguments go to :class:`ImageSamples`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        labels: str | os.PathLike[str],
        *,
        transform: Transform | None = None,
        score_range: tuple[float, float] | None = (0.0, 1.0),
        allow_outside_root: bool = False,
        **kwargs: Any,
    ) -> None:
        self.root = Path(root)
        if self.root.is_dir():
            samples = [
                Sample(
                    label.name,
                    resolve_image_path(
                        self.root,
                        image_file_name(label.name),
                        allow_outside_root=allow_outside_root,
                        where=f"{labels} line {label.line}",
                    ),
                    label.score,
                )
                for label in read_labels(labels, score_range=score_range)
            ]
        elif is_image_source(root):
            samples = self._named_in(root, labels, score_range)
        else:
            raise DataError(f"{self.root}: image root is not a directory, an image list file or tar shards")
        super().__init__(samples, transform=transform, **kwargs)

    @staticmethod
    def _named_in(source: str | os.PathLike[str], labels: str | os.PathLike[str],
                  score_range: tuple[float, float] | None) -> list[Sample]:
        """The labels' images looked up by name among the images of a list file or tar shards (the
        names :func:`~kdfiqa.data.image_sources.list_images` gives them, as ``pseudo-label`` writes)."""
        located = dict(list_images(source))
        samples = []
        for label in read_labels(labels, score_range=score_range):
            location = located.get(label.name)
            if location is None:
                raise DataError(f"{labels} line {label.line}: field 'image': {label.name!r} is not an image of "
                                f"{os.fspath(source)}; give the image source the labels were made from")
            samples.append(Sample(label.name, location, label.score))
        return samples

    @property
    def scores(self) -> np.ndarray:
        """The labels, float32, in sample order (e.g. for :class:`~kdfiqa.data.SSUSSampler`)."""
        return np.array([s.score for s in self.samples], dtype=np.float32)

    @classmethod
    def merge(cls, datasets: Sequence["FIQADataset"], *, repeats: Sequence[int] = ()) -> "FIQADataset":
        """One data set holding the samples of all ``datasets`` (e.g. labels and pseudo-labels), with
        the first one's transform. An image file listed twice is an error, except between the data
        sets at the positions in ``repeats``: several label sets of the same images (the ECNU-SJTU
        student trains on two teachers' pseudo-labels of one folder), each image once per set."""
        if not datasets:
            raise DataError("merge: no data sets given")
        seen: dict[str, tuple[int, str]] = {}
        for position, ds in enumerate(datasets):
            for s in ds.samples:
                key = image_identity(s.path)
                if key in seen:
                    first, name = seen[key]
                    if first != position and first in repeats and position in repeats:
                        continue
                    raise DataError(f"merge: image {s.path} is listed twice (as {name!r} and {s.name!r})")
                seen[key] = (position, s.name)
        merged = copy.copy(datasets[0])
        merged.samples = [s for ds in datasets for s in ds.samples]
        return merged


class UnlabeledImageFolder(ImageSamples):
    """The images ``root`` names (:func:`~kdfiqa.data.image_sources.list_images`): every image file
    (by extension, see :data:`~kdfiqa.data.IMAGE_EXTENSIONS`) under a folder, sorted by path and
    named relative to it with ``/`` separators (symlinks that lead outside it are rejected unless
    ``allow_outside_root``); the images of a list file, named as its lines are written; or the
    images of tar shards (``data-{000..009}.tar``), named by sample key. Items have no ``"score"``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        transform: Transform | None = None,
        recursive: bool = True,
        allow_outside_root: bool = False,
        **kwargs: Any,
    ) -> None:
        self.root = Path(root)
        samples = [Sample(name, location)
                   for name, location in list_images(root, recursive=recursive, allow_outside_root=allow_outside_root)]
        super().__init__(samples, transform=transform, **kwargs)


def split_dataset(dataset: ImageSamples, val_fraction: float, seed: int,
                  method: str = "kdfiqa") -> tuple[ImageSamples, ImageSamples]:
    """Split ``dataset`` into (train, val) subsets at random, the same way for the same ``seed``.

    :func:`validation_count` samples go to validation. ``method="kdfiqa"`` draws them from a
    ``numpy.random.default_rng(seed)`` permutation; ``method="sklearn"`` holds out exactly the
    indices ``sklearn.model_selection.train_test_split(range(n), train_size=1 - val_fraction,
    random_state=seed, shuffle=True)`` does (the ECNU-SJTU winner's ``FIQADataset`` split), without
    needing scikit-learn. Both keep the data set's transform: give the validation part its own with
    ``val.with_transform(...)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction: {val_fraction} must be strictly between 0 and 1")
    if method not in SPLIT_METHODS:
        raise DataError(f"split method {method!r} is unknown; use one of {', '.join(SPLIT_METHODS)}")
    n = len(dataset)
    n_val = validation_count(n, val_fraction, method)
    if n_val >= n or n_val < 1:
        raise DataError(f"cannot split {n} images with val_fraction={val_fraction}: "
                        f"{'no training' if n_val >= n else 'no validation'} images would remain")
    held = set(validation_indices(n, n_val, seed, method))
    return (dataset.subset([i for i in range(n) if i not in held]),
            dataset.subset(sorted(held)))
