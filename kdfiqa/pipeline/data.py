"""A run's data: the training and validation sets (labels, split, pseudo-labels, unlabeled images used
online, every image decoded once), the sampler, and the refusal of images shared between sets."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from torch.utils.data import Dataset, Sampler

from ..config import RunConfig
from ..errors import DataError, spelled
from .checks import required
from .results import Labels, label_sets

__all__ = ["labeled_data", "sampler_of", "training_streams", "refuse_shared_images", "refuse_labeled_in_unlabeled"]

log = logging.getLogger("kdfiqa.pipeline")


def labeled_data(config: RunConfig, pseudo: Labels | Sequence[Labels] | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) data sets of a config whose transforms are resolved.

    Validation is ``data.val_csv`` or a ``val_fraction`` split of ``data.csv`` seeded by
    ``split_seed`` (drawn by ``split_method``); pseudo-labels (``pseudo``: one set or several sets
    of the same images, each image then once per set; else ``data.pseudo_csv`` under
    ``data.pseudo_root``) join the training part only. With ``distill.unlabeled_use = "online"`` the
    images of ``data.unlabeled`` join it too, as label-less samples: their ``"score"`` is NaN
    (:func:`~kdfiqa.distill.objective.label_mask`), so only the teacher's online targets train on
    them. A label file whose images are mostly missing is refused first, naming the option of the
    root it was read against; then every image is decoded once up front, so a bad file fails the run
    before its first step.
    """
    from ..data import FIQADataset, build_transform, split_dataset, validate_images
    from ..data.images import ImageSource

    data = config.data
    train_tf, eval_tf = build_transform(data.train_transform), build_transform(data.eval_transform)
    outside = data.allow_outside_root
    labeled = FIQADataset(data.root, data.csv, transform=train_tf, allow_outside_root=outside)
    ImageSource(labeled, spelled("--csv", "data.csv"), str(data.csv), str(data.root),
                spelled("--root", "data.root")).check_root()
    if data.val_csv:
        train_set, val = labeled, FIQADataset(data.val_root or data.root, data.val_csv, transform=eval_tf,
                                              allow_outside_root=outside)
        ImageSource(val, spelled("--val-csv", "data.val_csv"), str(data.val_csv), str(data.val_root or data.root),
                    spelled("--val-root", "data.val_root"),
                    defaulted=not data.val_root).check_root()
        refuse_shared_images(train_set.samples, data.csv, {f"the validation set ({data.val_csv})": val},
                              kind="training images")
    else:
        train_set, val = split_dataset(labeled, data.val_fraction, data.split_seed, data.split_method)
        val = val.with_transform(eval_tf)
    defaulted = pseudo is None and not data.pseudo_root  # the pseudo-labels' root then is --root's
    if pseudo is None and data.pseudo_csv:
        pseudo = Labels(Path(data.pseudo_csv), Path(data.pseudo_root or data.root))
    sets = label_sets(pseudo)
    if sets:
        extra = [labels.dataset(train_tf, allow_outside_root=outside) for labels in sets]
        if config.distill.unlabeled_use == "both":  # the pseudo-labels of data.unlabeled: its stream
            for dataset in extra:
                dataset.samples = [dataclasses.replace(sample, from_unlabeled=True) for sample in dataset.samples]
        for labels, dataset in zip(sets, extra):
            ImageSource(dataset, spelled("--pseudo-csv", "data.pseudo_csv"), str(labels.csv), str(labels.root),
                        spelled("--pseudo-root", "data.pseudo_root"),
                        defaulted=defaulted).check_root()
            refuse_shared_images(dataset.samples, labels.csv,
                                   {"the validation set": val, "the labeled training share": train_set})
        train_set = FIQADataset.merge([train_set, *extra], repeats=range(1, len(sets) + 1))
        log.info("training on %d labeled + %s pseudo-labeled images", len(train_set) - sum(map(len, extra)),
                 " + ".join(str(len(e)) for e in extra))
    if data.unlabeled and config.distill.unlabeled_use == "online":
        train_set = _with_label_less(config, train_set, val, train_tf)
    skipped = validate_images([train_set, val], skip_bad=data.skip_bad,  # every bad file of both, listed at once
                              num_workers=config.train.num_workers)
    if skipped:
        log.warning("skipped %d unreadable image(s) (%s); training on %d, validating on %d",
                    skipped, spelled("--skip-bad", "data.skip_bad"), len(train_set), len(val))
    return train_set, val


def _with_label_less(config: RunConfig, train_set: Dataset, val: Dataset, transform: Any) -> Dataset:
    """``train_set`` with the images of ``data.unlabeled`` added as label-less samples (score NaN)."""
    from ..data import FIQADataset, UnlabeledImageFolder

    data = config.data
    folder = UnlabeledImageFolder(data.unlabeled, transform=transform, allow_outside_root=data.allow_outside_root)
    refuse_shared_images(folder.samples, data.unlabeled,
                         {"the validation set": val, "the labeled training share": train_set}, kind="unlabeled images")
    folder.samples = [dataclasses.replace(sample, score=math.nan, from_unlabeled=True) for sample in folder.samples]
    log.info("training on %d labeled + %d unlabeled images (online: the teacher scores their views)",
             len(train_set), len(folder))
    return FIQADataset.merge([train_set, folder])


def refuse_shared_images(samples: Iterable[Any], source: Path | str, shares: Mapping[str, Any], *,
                          kind: str = "pseudo-labels") -> None:
    """Refuse ``samples`` (``kind``, from ``source``: a CSV or a folder) that are images of any of
    ``shares`` (description → data set: the validation set, the labeled training share): training
    on a validation image would inflate the metrics ``best.pt`` is chosen by, and a labeled image
    would be trained on twice."""
    from ..data.images import image_identity

    where = {image_identity(s.path): (share, s.name) for share, data in shares.items() for s in data.samples}
    for sample in samples:
        hit = where.get(image_identity(sample.path))
        if hit is not None:
            share, name = hit
            raise DataError(f"{source}: image {sample.path} is also in {share} (as {name!r}); {kind} must come "
                            "from other images: remove it from one of them")


def sampler_of(config: RunConfig, train_set: Dataset) -> Sampler[int] | None:
    """Batches of ``distill.labeled_per_batch`` labels and the rest ``data.unlabeled`` images
    (:class:`~kdfiqa.data.samplers.TwoStreamSampler`, the streams of :func:`training_streams`), SSUS
    (``data.sampler``), fixed-length epochs (``data.samples_per_epoch``) or ``None`` (the Trainer's
    shuffled passes, labeled and unlabeled samples mixed)."""
    from ..data.samplers import FixedLengthSampler, SSUSSampler, TwoStreamSampler

    if config.distill.labeled_per_batch is not None:
        labeled, unlabeled = training_streams(train_set)
        per_epoch = config.data.samples_per_epoch
        return TwoStreamSampler(labeled, unlabeled, config.train.batch_size, config.distill.labeled_per_batch,
                                seed=config.train.seed,
                                batches=None if per_epoch is None else max(1, per_epoch // config.train.batch_size))
    if config.data.sampler == "ssus":
        return SSUSSampler(train_set.scores, num_strata=config.data.strata, seed=config.train.seed)
    if config.data.samples_per_epoch is not None:
        return FixedLengthSampler(len(train_set), config.data.samples_per_epoch, seed=config.train.seed)
    return None


def training_streams(train_set: Dataset) -> tuple[list[int], list[int]]:
    """(indices of the labeled share, indices of the images of ``data.unlabeled``) in ``train_set`` as
    :func:`labeled_data` built it: the latter label-less (``distill.unlabeled_use = "online"``) or
    pseudo-labeled (``"both"``), as each sample was tagged when its set was read."""
    unlabeled = [sample.from_unlabeled for sample in train_set.samples]
    return [i for i, tagged in enumerate(unlabeled) if not tagged], [i for i, tagged in enumerate(unlabeled) if tagged]


def refuse_labeled_in_unlabeled(config: RunConfig) -> None:
    """Before the teacher scores ``data.unlabeled``: none of its images may be a labeled or a
    validation image (:func:`refuse_shared_images`), which would otherwise fail only after labelling."""
    from ..data import FIQADataset, UnlabeledImageFolder

    data = config.data
    outside = data.allow_outside_root
    shares = {f"the labels ({data.csv})": FIQADataset(data.root, data.csv, allow_outside_root=outside)}
    if data.val_csv:
        shares[f"the validation set ({data.val_csv})"] = FIQADataset(data.val_root or data.root, data.val_csv,
                                                                     allow_outside_root=outside)
    folder = UnlabeledImageFolder(required(data.unlabeled, spelled("--unlabeled DIR", "data.unlabeled")), allow_outside_root=outside)
    refuse_shared_images(folder.samples, data.unlabeled, shares)
