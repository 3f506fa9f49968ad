"""Crop-level teacher cache: the teacher's score on K stored random views of every training image.

Fast Knowledge Distillation (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual
Recognition", ECCV 2022) stores, per image, the coordinates and flip of a few random crops with the
teacher's soft label on each, and trains on those crops without running the teacher again. A cache
of one score per whole image (:class:`~kdfiqa.distill.ScoreTable`) loses that crop-level signal;
this one keeps it:

* :func:`build_view_cache` draws K views of each image, labeled or not, from the training transform
  (a :class:`~kdfiqa.data.PairedViews` with a teacher view, e.g. 2077Agent's RandCropOrResize 512 +
  flip, and its quality augmentation, :mod:`kdfiqa.data.quality_augment`) and stores the teacher's
  logit on each teacher view with everything the view was drawn with;
* :class:`CachedViews` is a training set whose every item is one stored view, picked at random each
  time: the student's view of the same augmentation, box and flip (pixel for pixel the view drawn at
  build time), and the stored logit as ``"teacher_logit"``; an altered view's ``"score"`` is NaN;
* :class:`CachedTeacher` hands that logit to the :class:`~kdfiqa.distill.Distiller` as its teacher.

File format (``torch.save`` of tensors and plain values, read with ``weights_only=True``):

==============  ==========================================================================
``format``      :data:`FORMAT`
``teacher``     :func:`teacher_fingerprint` of the teacher that scored the views
``transform``   the training transform spec the views were drawn from (``PairedViews.spec``)
``names``       image names, one per row: the training set's samples in order (a name may repeat:
                the same relative name under the labeled root and the unlabeled folder, or an
                image once per pseudo-label set)
``boxes``       float64 (N, K, 4): left, top, right, bottom in source pixels
``flips``       bool (N, K)
``logits``      float32 (N, K): the teacher's logit on each view
``kind_names``  the degradation names ``kinds`` indexes (:data:`~kdfiqa.data.DEGRADATIONS` names)
``kinds``       int64 (N, K): the view's degradation, an index of ``kind_names``; -1: none
``severities``  float64 (N, K): its severity in [0, 1] (0 without one)
``seeds``       int64 (N, K): its seed, >= 0 (0 without one)
``partners``    int64 (N, K): the row (sample) mixed in; -1: none
``lams``        float64 (N, K): the image's own share of the mix, in (0, 1] (1 without one)
==============  ==========================================================================

:meth:`ViewCache.load` checks every field (presence, type, shape, range, finiteness) and refuses a
file of another format, teacher, transform or number of views with one line naming the file; a
cache of the format before augmentation parameters were stored (``kdfiqa.view_cache.v1``) is refused
as such, never read without them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..atomic_write import atomic_open
from ..data.degradations import DEGRADATIONS
from ..data.quality_augment import Augment
from ..data.transform_spec import TransformSpec
from ..engine.distributed import DistContext
from ..errors import CheckpointError, ConfigError, DataError, spelled
from ..models.deploy import plain_values

__all__ = ["FORMAT", "ViewCache", "CachedViews", "CachedTeacher", "build_view_cache", "teacher_fingerprint",
           "draw_seed"]

FORMAT = "kdfiqa.view_cache.v2"
OLDER_FORMATS = ("kdfiqa.view_cache.v1",)
"""Formats of earlier kdfiqa versions, refused by name (v1 stores no augmentation parameters)."""
AUGMENT_FIELDS = ("kinds", "severities", "seeds", "partners", "lams")
"""The per-view augmentation fields, each (N, K)."""


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
    kind_names: list[str]
    kinds: Tensor
    severities: Tensor
    seeds: Tensor
    partners: Tensor
    lams: Tensor

    @property
    def views(self) -> int:
        """K, the number of stored views per image."""
        return int(self.logits.shape[1])

    def augment(self, row: int, k: int) -> Augment | None:
        """The quality augmentation of view ``k`` of row ``row`` (its partner another row, i.e. the
        index of a sample of the training set), ``None`` when the view was not altered."""
        kind, partner = int(self.kinds[row, k]), int(self.partners[row, k])
        if kind < 0 and partner < 0:
            return None
        return Augment(kind=None if kind < 0 else self.kind_names[kind], severity=float(self.severities[row, k]),
                       seed=int(self.seeds[row, k]), partner=None if partner < 0 else partner,
                       lam=float(self.lams[row, k]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the cache atomically (:func:`kdfiqa.atomic_write.atomic_open`: a temporary file
        renamed over ``path``)."""
        path = Path(path)
        with atomic_open(path, "wb") as f:
            torch.save({"format": FORMAT, "teacher": self.teacher, "transform": plain_values(self.transform),
                        "names": list(self.names), "boxes": self.boxes, "flips": self.flips, "logits": self.logits,
                        "kind_names": list(self.kind_names),
                        **{field: getattr(self, field) for field in AUGMENT_FIELDS}}, f)
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
        if isinstance(data, dict) and data.get("format") in OLDER_FORMATS:
            raise CheckpointError(f"{path}: a teacher view cache of an older format ({data['format']}, without the "
                                  f"views' augmentation parameters; this kdfiqa reads {FORMAT}); delete it to "
                                  "rebuild it")
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
                                  f"({spelled('--view-cache', 'distill.view_cache')}); delete it to rebuild it, or ask for the views it holds")
        return cache


def _checked_fields(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a loaded cache file, each checked for presence, type, shape and range: names a
    list of strings; ``boxes`` float64 (N, K, 4) with 0 <= left < right and 0 <= top <
    bottom; ``flips`` bool (N, K); ``logits`` float32 (N, K) and finite; K >= 1; and the augmentation
    fields (:func:`_checked_augment`)."""

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: field {field!r} {problem}; the file is damaged: delete it to rebuild it")

    for field, kind in (("teacher", str), ("transform", dict), ("names", list), ("boxes", Tensor), ("flips", Tensor),
                        ("logits", Tensor), ("kind_names", list), *((field, Tensor) for field in AUGMENT_FIELDS)):
        if field not in data:
            raise bad(field, "is missing")
        if not isinstance(data[field], kind):
            raise bad(field, f"is a {type(data[field]).__name__}, not a {kind.__name__}")
    names, boxes, flips, logits = data["names"], data["boxes"], data["flips"], data["logits"]
    if not all(isinstance(name, str) for name in names):
        raise bad("names", "must be strings")
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
    _checked_augment(data, n, k, bad)
    return {"teacher": data["teacher"], "transform": data["transform"], "names": list(names), "boxes": boxes,
            "flips": flips, "logits": logits, "kind_names": list(data["kind_names"]),
            **{field: data[field] for field in AUGMENT_FIELDS}}


def _checked_augment(data: Mapping[str, Any], n: int, k: int, bad: Any) -> None:
    """The augmentation fields of a cache of ``n`` images and ``k`` views, whole: ``kind_names``
    distinct degradation names; ``kinds`` int64 in [-1, len(kind_names)); ``severities`` float64,
    finite, in [0, 1], 0 without a degradation; ``seeds`` int64 >= 0; ``partners`` int64 in
    [-1, n), never the image itself; ``lams`` float64, finite, in (0, 1], 1 without a partner."""
    kind_names = data["kind_names"]
    if not all(isinstance(name, str) and name in DEGRADATIONS for name in kind_names) \
            or len(set(kind_names)) != len(kind_names):
        raise bad("kind_names", f"must be distinct degradation names ({', '.join(DEGRADATIONS)})")
    for field, dtype in (("kinds", torch.int64), ("severities", torch.float64), ("seeds", torch.int64),
                         ("partners", torch.int64), ("lams", torch.float64)):
        value = data[field]
        if value.dtype != dtype or tuple(value.shape) != (n, k):
            raise bad(field, f"is {value.dtype} {tuple(value.shape)}, not {str(dtype).replace('torch.', '')} {(n, k)}")
    kinds, severities, seeds, partners, lams = (data[field] for field in AUGMENT_FIELDS)
    if ((kinds < -1) | (kinds >= len(kind_names))).any():
        raise bad("kinds", f"holds an index outside [-1, {len(kind_names)}) (the kind_names)")
    if not torch.isfinite(severities).all() or ((severities < 0) | (severities > 1)).any() \
            or (severities[kinds < 0] != 0).any():
        raise bad("severities", "holds a severity outside [0, 1] (or one without a degradation)")
    if (seeds < 0).any():
        raise bad("seeds", "holds a negative seed")
    own = torch.arange(n).reshape(-1, 1)
    if ((partners < -1) | (partners >= n) | (partners == own)).any():
        raise bad("partners", f"holds a row outside [-1, {n}) or the image itself")
    if not torch.isfinite(lams).all() or ((lams <= 0) | (lams > 1)).any() or (lams[partners < 0] != 1).any():
        raise bad("lams", "holds a mixup share outside (0, 1] (or one without a partner)")


def _views_of(dataset: Any) -> Any:
    views = getattr(dataset, "transform", None)
    if getattr(views, "spec", None) is None or "teacher_image" not in getattr(views, "views", {}):
        raise ConfigError("a teacher view cache needs a training transform built by build_transform with a "
                          "teacher view (teacher_size)")
    if views.geometry.stacked:
        raise ConfigError("a teacher view cache stores one crop per view; a multi-crop transform cannot be cached")
    return views


KIND_NAMES = tuple(DEGRADATIONS)
"""The ``kind_names`` a cache is built with."""


def draw_seed(seed: int, index: int) -> int:
    """The seed of torch's generator for image ``index``'s draws in a cache built with ``seed``: one
    stream per image, so that the draws do not depend on which process or worker makes them."""
    return seed * 1_000_003 + index


class _Draws(Dataset):
    """Image ``i``'s K draws: the quality augmentation, boxes and flips (drawn in the order the data
    set's own items draw them), and the teacher views rendered from them, drawn from torch's
    generator seeded by :func:`draw_seed`: the same whichever process or worker draws them."""

    def __init__(self, dataset: Any, views: int, seed: int) -> None:
        self.dataset, self.views, self.seed, self.transform = dataset, views, seed, _views_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        boxes, flips, augments, rendered = [], [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw_seed(self.seed, index))
            for _ in range(self.views):
                augment = self.dataset.draw_augment(index)
                img = self.dataset.source(index, augment)
                drawn, flip = self.transform.draw(img)
                boxes.append(drawn[0])
                flips.append(flip)
                augments.append(augment or Augment())
                rendered.append(self.transform.render(img, drawn, flip, views=["teacher_image"])["teacher_image"])
        return {"boxes": torch.tensor(boxes, dtype=torch.float64), "flips": torch.tensor(flips),
                "kinds": torch.tensor([-1 if a.kind is None else KIND_NAMES.index(a.kind) for a in augments],
                                      dtype=torch.int64),
                "severities": torch.tensor([a.severity for a in augments], dtype=torch.float64),
                "seeds": torch.tensor([a.seed for a in augments], dtype=torch.int64),
                "partners": torch.tensor([-1 if a.partner is None else a.partner for a in augments],
                                         dtype=torch.int64),
                "lams": torch.tensor([a.lam for a in augments], dtype=torch.float64),
                "teacher_image": torch.stack(rendered)}


def build_view_cache(teacher: nn.Module, dataset: Any, *, views: int = 8, batch_size: int = 8,
                     num_workers: int = 0, seed: int = 0, ctx: DistContext | None = None) -> ViewCache:
    """Draw ``views`` random views of every image of ``dataset`` (an :class:`~kdfiqa.data.ImageSamples`
    whose transform has a teacher view; its samples labeled or not) and score each teacher view with
    ``teacher``. Each view is drawn as the data set's own items are (the transform's quality
    augmentation, then the crop boxes and flip), and all of it is stored, so a cached view is the
    view drawn here, pixel for pixel.

    Image ``i``'s draws come from torch's generator seeded by :func:`draw_seed` (``seed``, ``i``):
    the same data, transform, seed and teacher give the same cache, however many workers draw and under
    ``torchrun`` (``ctx``) however many ranks score it (:func:`~kdfiqa.engine.sharded.map_sharded`:
    each image once; every rank gets the whole cache).
    """
    from ..engine.distributed import local_context
    from ..engine.sharded import flatten, map_sharded

    if views < 1:
        raise ConfigError(f"a teacher view cache needs at least one view per image, got {views}")
    draws = _Draws(dataset, views, seed)
    names = ("boxes", "flips", *AUGMENT_FIELDS)

    def score(batch: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
        images = batch["teacher_image"].flatten(0, 1)
        scored = teacher({"image": images, "teacher_image": images}).reshape(-1, views).float().cpu()
        return [{"logits": scored[i], **{field: batch[field][i] for field in names}} for i in range(len(scored))]

    rows = flatten(map_sharded(draws, score, ctx if ctx is not None else local_context("cpu"),
                               batch_size=batch_size, num_workers=num_workers))
    stored = {field: torch.stack([row[field] for row in rows]) for field in ("logits", *names)}
    return ViewCache(teacher_fingerprint(teacher), dict(draws.transform.spec), list(dataset.names),
                     kind_names=list(KIND_NAMES), **stored)


def _same_transform(stored: Any, transform: Mapping[str, Any]) -> bool:
    """Whether a cache's stored transform spec is ``transform``, however either writes its sizes."""
    try:
        return TransformSpec.parse(stored) == TransformSpec.parse(transform)
    except ConfigError:
        return False


class CachedViews(Dataset):
    """A training set of stored views: item ``i`` is one of sample ``i``'s K views of ``cache``,
    picked at random (torch's generator, so seeded runs repeat), rendered at the student's size with
    the stored quality augmentation, box and flip, with the teacher's stored logit as
    ``"teacher_logit"``; an altered view's ``"score"`` is NaN, as in the data set's own items.

    The cache's rows are ``dataset``'s samples in order (a mixup partner is a row, so a sample's
    index); a cache whose names differ from the data set's is refused, naming the first difference.
    """

    def __init__(self, dataset: Any, cache: ViewCache) -> None:
        self.dataset = dataset
        self.transform = _views_of(dataset)
        self.cache = cache
        names = list(dataset.names)
        if names != cache.names:
            row = next((i for i, (a, b) in enumerate(zip(names, cache.names)) if a != b), min(len(names),
                                                                                            len(cache.names)))
            theirs = repr(cache.names[row]) if row < len(cache.names) else "no image"
            ours = repr(names[row]) if row < len(names) else "no image"
            raise DataError(f"the teacher view cache was built for another training set (sample {row}: {theirs} "
                            f"in the cache, {ours} here; {len(cache.names)} vs {len(names)} samples); "
                            "delete it to rebuild it for this training set")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def scores(self) -> Any:
        return self.dataset.scores

    @property
    def samples(self) -> list[Any]:
        """The data set's samples, one per item (what samplers split into labeled and unlabeled streams)."""
        return self.dataset.samples

    def view(self, index: int, k: int, views: list[str] | None = None) -> dict[str, Any]:
        """The item of stored view ``k`` of sample ``index`` (the cache's row ``index``): its ``views`` (default: the student's)
        rendered from the stored augmentation, box and flip."""
        box = tuple(float(v) for v in self.cache.boxes[index, k].tolist())
        augment = self.cache.augment(index, k)
        img = self.dataset.source(index, augment)
        if box[2] > img.width or box[3] > img.height:
            raise DataError(f"the teacher view cache's box {box} of image {self.cache.names[index]!r} lies outside "
                            f"its {img.width}x{img.height} pixels: the image changed since the cache was built; "
                            "delete the cache to rebuild it")
        rendered = self.transform.render(img, [box], bool(self.cache.flips[index, k]), views=views or ["image"])
        item = self.dataset.item(index, rendered, augment or (Augment() if self.transform.augment else None))
        item["teacher_logit"] = self.cache.logits[index, k].reshape(1)
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.view(index, int(torch.randint(self.cache.views, ())))


class CachedTeacher(nn.Module):
    """The teacher of a :class:`CachedViews` run: ``batch["teacher_logit"]`` as (B, 1), no network run."""

    input_size = None

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        if "teacher_logit" not in batch:
            raise DataError("this batch has no cached teacher logits: train on kdfiqa.distill.CachedViews")
        return batch["teacher_logit"].reshape(-1, 1).to(batch["image"].device)
