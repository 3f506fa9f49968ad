"""Crop-level teacher cache: the teacher's score on K stored random views of every training image.

Fast Knowledge Distillation (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual
Recognition", ECCV 2022) stores, per image, the coordinates and flip of a few random crops with the
teacher's soft label on each, and trains on those crops without running the teacher again. A cache
of one score per whole image (:class:`~kdfiqa.distill.ScoreTable`) loses that crop-level signal;
this one keeps it:

* :func:`build_view_cache` draws K views of each image from the training transform (a
  :class:`~kdfiqa.data.PairedViews` with a teacher view, e.g. 2077Agent's RandCropOrResize 512 +
  flip) and stores the teacher's logit on each teacher view;
* :class:`CachedViews` is a training set whose every item is one stored view, picked at random each
  time: the student's view of the same box and flip, and the stored logit as ``"teacher_logit"``;
* :class:`CachedTeacher` hands that logit to the :class:`~kdfiqa.distill.Distiller` as its teacher.

File format (``torch.save`` of tensors and plain values, read with ``weights_only=True``):

==============  ==========================================================================
``format``      :data:`FORMAT`
``teacher``     :func:`teacher_fingerprint` of the teacher that scored the views
``transform``   the training transform spec the views were drawn from (``PairedViews.spec``)
``names``       image names, one per row
``boxes``       float64 (N, K, 4): left, top, right, bottom in source pixels
``flips``       bool (N, K)
``logits``      float32 (N, K): the teacher's logit on each view
==============  ==========================================================================

:meth:`ViewCache.load` checks every field (presence, type, shape, range, finiteness) and refuses a
file of another format, teacher, transform or number of views with one line naming the file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..atomic_write import atomic_open
from ..data.transform_spec import TransformSpec
from ..engine.distributed import DistContext
from ..errors import CheckpointError, ConfigError, DataError
from ..models.deploy import plain_values

__all__ = ["FORMAT", "ViewCache", "CachedViews", "CachedTeacher", "build_view_cache", "teacher_fingerprint"]

FORMAT = "kdfiqa.view_cache.v1"


def teacher_fingerprint(teacher: nn.Module) -> str:
    """SHA-256 over a teacher's tensors (names, dtypes, shapes, values) and its input size: the same
    weights give the same fingerprint, any other teacher another."""
    digest = hashlib.sha256(repr(getattr(teacher, "input_size", None)).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@dataclass
class ViewCache:
    """K stored views of each image and the teacher's logit on each (see the module docstring)."""

    teacher: str
    transform: dict[str, Any]
    names: list[str]
    boxes: Tensor
    flips: Tensor
    logits: Tensor

    @property
    def views(self) -> int:
        """K, the number of stored views per image."""
        return int(self.logits.shape[1])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the cache atomically (:func:`kdfiqa.atomic_write.atomic_open`: a temporary file
        renamed over ``path``)."""
        path = Path(path)
        with atomic_open(path, "wb") as f:
            torch.save({"format": FORMAT, "teacher": self.teacher, "transform": plain_values(self.transform),
                        "names": list(self.names), "boxes": self.boxes, "flips": self.flips, "logits": self.logits},
                       f)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, teacher: str, transform: Mapping[str, Any],
             views: int | None = None) -> "ViewCache":
        """Read ``path``, check every field (:func:`_checked_fields`), and refuse it unless it was built
        by the teacher with fingerprint ``teacher`` from the training transform ``transform`` with
        ``views`` views per image (when given). Every refusal is one line naming the file and field."""
        path = Path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged or foreign file fails the restricted unpickler in many ways
            raise CheckpointError(f"{path}: not a readable teacher view cache ({type(exc).__name__}); "
                                  "delete it to rebuild it") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a kdfiqa teacher view cache ({FORMAT}); delete it to rebuild it")
        cache = cls(**_checked_fields(path, data))
        if cache.teacher != teacher:
            raise CheckpointError(f"{path}: was built for another teacher (fingerprint {cache.teacher[:12]}, "
                                  f"this one {teacher[:12]}); delete it or give the teacher it was built with")
        if not _same_transform(cache.transform, transform):
            raise CheckpointError(f"{path}: was drawn with the transform {cache.transform}, not "
                                  f"{plain_values(transform)}; delete it or train with the transform it was built with")
        if views is not None and cache.views != views:
            raise CheckpointError(f"{path}: holds {cache.views} view(s) per image, this run asks for {views} "
                                  "(--view-cache); delete it to rebuild it, or ask for the views it holds")
        return cache


def _checked_fields(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a loaded cache file, each checked for presence, type, shape and range: names a
    list of distinct strings; ``boxes`` float64 (N, K, 4) with 0 <= left < right and 0 <= top <
    bottom; ``flips`` bool (N, K); ``logits`` float32 (N, K) and finite; K >= 1."""

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: field {field!r} {problem}; the file is damaged: delete it to rebuild it")

    for field, kind in (("teacher", str), ("transform", dict), ("names", list), ("boxes", Tensor), ("flips", Tensor),
                        ("logits", Tensor)):
        if field not in data:
            raise bad(field, "is missing")
        if not isinstance(data[field], kind):
            raise bad(field, f"is a {type(data[field]).__name__}, not a {kind.__name__}")
    names, boxes, flips, logits = data["names"], data["boxes"], data["flips"], data["logits"]
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise bad("names", "must be distinct strings")
    n = len(names)
    if logits.dtype != torch.float32 or logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 1:
        raise bad("logits", f"is {logits.dtype} {tuple(logits.shape)}, not float32 ({n}, K) with K >= 1")
    k = logits.shape[1]
    if boxes.dtype != torch.float64 or tuple(boxes.shape) != (n, k, 4):
        raise bad("boxes", f"is {boxes.dtype} {tuple(boxes.shape)}, not float64 {(n, k, 4)}")
    if flips.dtype != torch.bool or tuple(flips.shape) != (n, k):
        raise bad("flips", f"is {flips.dtype} {tuple(flips.shape)}, not bool {(n, k)}")
    if not torch.isfinite(logits).all():
        raise bad("logits", "holds a non-finite teacher score")
    left, top, right, bottom = boxes.unbind(-1)
    if not torch.isfinite(boxes).all() or (left < 0).any() or (top < 0).any() or (right <= left).any() \
            or (bottom <= top).any():
        raise bad("boxes", "holds a box that is not (left, top, right, bottom) inside an image")
    return {"teacher": data["teacher"], "transform": data["transform"], "names": list(names), "boxes": boxes,
            "flips": flips, "logits": logits}


def _views_of(dataset: Any) -> Any:
    views = getattr(dataset, "transform", None)
    if getattr(views, "spec", None) is None or "teacher_image" not in getattr(views, "views", {}):
        raise ConfigError("a teacher view cache needs a training transform built by build_transform with a "
                          "teacher view (teacher_size)")
    if views.geometry.stacked:
        raise ConfigError("a teacher view cache stores one crop per view; a multi-crop transform cannot be cached")
    return views


class _Draws(Dataset):
    """Image ``i``'s K draws: the boxes and flips, and the teacher views rendered from them, drawn
    from torch's generator seeded by (``seed``, ``i``): the same whichever process draws them."""

    def __init__(self, dataset: Any, views: int, seed: int) -> None:
        self.dataset, self.views, self.seed, self.transform = dataset, views, seed, _views_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        img = self.dataset.load(index)
        boxes, flips, rendered = [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + index)
            for _ in range(self.views):
                drawn, flip = self.transform.draw(img)
                boxes.append(drawn[0])
                flips.append(flip)
                rendered.append(self.transform.render(img, drawn, flip, views=["teacher_image"])["teacher_image"])
        return {"boxes": torch.tensor(boxes, dtype=torch.float64), "flips": torch.tensor(flips),
                "teacher_image": torch.stack(rendered)}


def build_view_cache(teacher: nn.Module, dataset: Any, *, views: int = 8, batch_size: int = 8,
                     num_workers: int = 0, seed: int = 0, ctx: DistContext | None = None) -> ViewCache:
    """Draw ``views`` random views of every image of ``dataset`` (an :class:`~kdfiqa.data.ImageSamples`
    whose transform has a teacher view) and score each teacher view with ``teacher``.

    Image ``i``'s draws come from torch's generator seeded by (``seed``, ``i``): the same data,
    transform, seed and teacher give the same cache, however many workers draw and under
    ``torchrun`` (``ctx``) however many ranks score it (:func:`~kdfiqa.engine.sharded.map_sharded`:
    each image once; every rank gets the whole cache).
    """
    from ..engine.distributed import local_context
    from ..engine.sharded import flatten, map_sharded

    if views < 1:
        raise ConfigError(f"a teacher view cache needs at least one view per image, got {views}")
    draws = _Draws(dataset, views, seed)

    def score(batch: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        images = batch["teacher_image"].flatten(0, 1)
        scored = teacher({"image": images, "teacher_image": images}).reshape(-1, views).float().cpu()
        return list(zip(batch["boxes"], batch["flips"], scored))

    rows = flatten(map_sharded(draws, score, ctx if ctx is not None else local_context("cpu"),
                               batch_size=batch_size, num_workers=num_workers))
    boxes, flips, logits = (torch.stack(column) for column in zip(*rows))
    return ViewCache(teacher_fingerprint(teacher), dict(draws.transform.spec), list(dataset.names),
                     boxes, flips, logits)


def _same_transform(stored: Any, transform: Mapping[str, Any]) -> bool:
    """Whether a cache's stored transform spec is ``transform``, however either writes its sizes."""
    try:
        return TransformSpec.parse(stored) == TransformSpec.parse(transform)
    except ConfigError:
        return False


class CachedViews(Dataset):
    """A training set of stored views: item ``i`` is one of image ``i``'s K views of ``cache``, picked
    at random (torch's generator, so seeded runs repeat), rendered at the student's size with the
    stored box and flip, with the teacher's stored logit as ``"teacher_logit"``."""

    def __init__(self, dataset: Any, cache: ViewCache) -> None:
        self.dataset = dataset
        self.transform = _views_of(dataset)
        self.cache = cache
        rows = {name: row for row, name in enumerate(cache.names)}
        missing = [name for name in dataset.names if name not in rows]
        if missing:
            raise DataError(f"the teacher view cache has no views of image {missing[0]!r} "
                            f"({len(missing)} missing); rebuild it for this training set")
        self.rows = [rows[name] for name in dataset.names]

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def scores(self) -> Any:
        return self.dataset.scores

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        k = int(torch.randint(self.cache.views, ()))
        box = tuple(float(v) for v in self.cache.boxes[row, k].tolist())
        img = self.dataset.load(index)
        if box[2] > img.width or box[3] > img.height:
            raise DataError(f"the teacher view cache's box {box} of image {self.cache.names[row]!r} lies outside "
                            f"its {img.width}x{img.height} pixels: the image changed since the cache was built; "
                            "delete the cache to rebuild it")
        views = self.transform.render(img, [box], bool(self.cache.flips[row, k]), views=["image"])
        item = self.dataset.item(index, views)
        item["teacher_logit"] = self.cache.logits[row, k].reshape(1)
        return item


class CachedTeacher(nn.Module):
    """The teacher of a :class:`CachedViews` run: ``batch["teacher_logit"]`` as (B, 1), no network run."""

    input_size = None

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        if "teacher_logit" not in batch:
            raise DataError("this batch has no cached teacher logits: train on kdfiqa.distill.CachedViews")
        return batch["teacher_logit"].reshape(-1, 1).to(batch["image"].device)
