"""Score images with a trained model: the library behind ``kdfiqa predict`` and ``kdfiqa evaluate``.

* :func:`load_inference_model` loads a checkpoint (or builds any target ``kdfiqa budget`` accepts)
  together with its evaluation transform: the one its deploy config names
  (:class:`~kdfiqa.models.deploy.DeployConfig`, restored from the checkpoint; for files written
  before checkpoints stored it, the run's ``config.data.eval_transform``, else a resize to the
  model's default input size). ``input_size``, ``native`` (no resize: the seed's DERS evaluation at
  the original resolution) and ``multi_crop`` (mean over N random crops: the challenge baseline's
  20-crop test) override it. By default the model is put in its inference form
  (:func:`kdfiqa.models.fuse`: batch norms folded, activations in place, EMO blocks with fewer
  copies, channels-last weights) once that form is verified on one random batch
  (:func:`verified_inference_form`); ``fuse=False`` (``--no-fuse``) keeps the training form.
* :func:`predict_images` scores files and folders (searched recursively for image extensions) of any
  resolution; :func:`write_scores_csv` writes them as ``image,score`` with that header line.
* :func:`evaluate_csv` scores a labeled CSV under an image root and computes the challenge metrics
  (SRCC, PLCC, KRCC, RMSE and the challenge score), optionally after a 4-parameter logistic mapping
  of the predictions.

Under ``torchrun`` :func:`predict_images` and :func:`evaluate_csv` split the images across the
ranks (:func:`score_images`, through :func:`kdfiqa.engine.sharded.map_sharded`: each image once,
in the batches one process forms) and gather every score in order, so the CSV and the metrics are
those of one process, to the bit. ``amp="bf16"`` and ``channels_last`` speed scoring up on CUDA
and change nothing on the CPU (:func:`speed_note`).

torch, the data pipeline and the metrics are imported by the functions that use them, so the
constants (:data:`DEVICES`) cost nothing to import: command-line parsers use them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .budget import InputSize
from .errors import ConfigError, DataError, spelled
from .size import Size

if TYPE_CHECKING:
    from torch import nn

    from .engine.distributed import DistContext

__all__ = [
    "InferenceModel",
    "ImageScores",
    "resolve_eval_transform",
    "load_inference_model",
    "verified_inference_form",
    "FUSE_TOLERANCE",
    "predict_images",
    "write_scores_csv",
    "SCORE_FORMATS",
    "evaluate_csv",
    "score_images",
    "speed_note",
    "DEVICES",
]

DEVICES = ("auto", "cpu", "cuda")
"""Where to score: ``auto`` is CUDA when available; under ``torchrun`` each rank uses its own GPU."""

FUSE_TOLERANCE = 1e-5
"""Largest absolute difference between the inference and training forms' outputs that
:func:`verified_inference_form` accepts."""

log = logging.getLogger(__name__)


@dataclass
class InferenceModel:
    """A model ready to score images, with the transform spec its inputs go through."""

    model: nn.Module
    transform_spec: dict[str, Any]
    source: str
    fused: bool = False
    """Whether :attr:`model` is the verified inference form (:func:`kdfiqa.models.fuse`)."""

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """The (C, H, W) the model sees, or ``None`` at native resolution."""
        size = self.transform_spec.get("size")
        if size is None or self.native:
            return None
        return Size.parse(size, "transform field 'size'").chw

    @property
    def native(self) -> bool:
        return self.transform_spec.get("mode") == "native"

    def transform(self) -> Callable:
        """The image → tensor callable built from :attr:`transform_spec` by :mod:`kdfiqa.data`."""
        from .data.transforms import build_transform

        return build_transform(self.transform_spec)


def _check_eval_overrides(input_size: InputSize | None, native: bool, multi_crop: int | None) -> None:
    """The evaluation overrides that contradict each other, refused (before any model is loaded)."""
    if native and multi_crop:
        raise ConfigError(f"{spelled('--native')} and {spelled('--multi-crop')} cannot be combined: choose one "
                          "evaluation mode")
    if native and input_size is not None:
        raise ConfigError(f"{spelled('--native')} and {spelled('--input', 'input_size')} cannot be combined: "
                          f"{spelled('--native')} keeps each image's own size")
    if multi_crop is not None and multi_crop < 1:
        raise ConfigError(f"{spelled('--multi-crop')} must be a positive number of crops, got {multi_crop}")


def resolve_eval_transform(base: str | dict[str, Any] | None, model: nn.Module, *,
                           input_size: InputSize | None = None, native: bool = False,
                           multi_crop: int | None = None) -> dict[str, Any]:
    """The evaluation transform spec (:func:`kdfiqa.data.build_transform` keys) after overrides.

    ``base`` is a spec (a dict, a preset name or ``{"preset": ...}``) completed against ``model``'s
    deploy config (its size and normalisation fill what the spec leaves out; the teacher view and
    flips of a training spec are dropped), or ``None`` for the deploy config's own evaluation
    transform. ``input_size`` moves the transform to that size
    (:meth:`~kdfiqa.data.transform_spec.TransformSpec.rescaled`; a native one becomes a resize to
    it); ``native`` keeps each image at its own resolution (scored one at a time);
    ``multi_crop=N`` scores N random crops of the size and averages them.
    """
    from .models.deploy import deploy_config

    _check_eval_overrides(input_size, native, multi_crop)
    deploy = deploy_config(model)
    if base is not None:
        deploy = deploy.replace(eval_transform={"preset": base} if isinstance(base, str) else base)
    if input_size is not None:
        size = Size.parse(input_size, spelled("--input", "input_size"), rgb=True)
        moved = {"eval_transform": {"mode": "resize"}} if deploy.eval_transform.mode == "native" else {}
        deploy = deploy.replace(input_size=size, **moved)
    if native:
        return {"mode": "native", "normalize": deploy.normalize}
    if multi_crop:
        return {"mode": "multi_crop", "size": list(deploy.input_size[1:]), "num_crops": int(multi_crop),
                "normalize": deploy.normalize}
    return deploy.eval_transform.to_dict()


def load_inference_model(target: str | Path, *, input_size: InputSize | None = None,
                         native: bool = False, multi_crop: int | None = None,
                         fuse: bool = True) -> InferenceModel:
    """Load a checkpoint (or build a model target) in eval mode with its evaluation transform spec:
    its deploy config's, after the overrides of :func:`resolve_eval_transform`. With ``fuse`` the
    model is its verified inference form (:func:`verified_inference_form`), else the training form."""
    from .targets import load_target

    _check_eval_overrides(input_size, native, multi_crop)
    model = load_target(str(target)).eval()
    spec = resolve_eval_transform(None, model, input_size=input_size, native=native, multi_crop=multi_crop)
    size = spec.get("size") if spec.get("mode") != "native" else None
    fused = verified_inference_form(model, size, source=str(target)) if fuse else None
    return InferenceModel(model=model if fused is None else fused, transform_spec=spec, source=str(target),
                          fused=fused is not None)


def verified_inference_form(model: nn.Module, input_size: InputSize | None = None, *,
                            source: str = "model", batch_size: int = 2) -> nn.Module | None:
    """``kdfiqa.models.fuse(model)`` if its outputs on one random batch of ``batch_size`` images at
    ``input_size`` (default: the deploy config's) are within :data:`FUSE_TOLERANCE` of ``model``'s
    eval outputs; otherwise ``None``, with a one-line warning saying by how much they differ (or
    why the model could not be fused)."""
    import torch

    from .models.deploy import deploy_config
    from .models.fuse import fuse

    if input_size is None:
        size = deploy_config(model).input_size
    else:
        size = Size.parse(input_size, "input_size").chw
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0))
    try:
        fused = fuse(model, input_size=size)
        with torch.inference_mode():
            diff = (fused(x) - model(x)).abs().max().item()
    except Exception as exc:  # any model may fail to trace or fold: the training form still works
        log.warning("%s: inference form unavailable (%s: %s); using the training form", source,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    if not diff <= FUSE_TOLERANCE:
        log.warning("%s: inference form differs from the training form by %.3g (> %g) on a random batch; "
                    "using the training form", source, diff, FUSE_TOLERANCE)
        return None
    return fused


@dataclass
class ImageScores:
    """Scores of image files, in the order the files were found."""

    names: list[str]
    scores: list[float]
    skipped: int = 0
    """How many unreadable files were left out with ``skip_bad`` (each one is logged)."""

    def ranked(self) -> list[tuple[str, float]]:
        """(name, score) pairs, best score first; ties keep the order the files were found."""
        return sorted(zip(self.names, self.scores), key=lambda pair: -pair[1])


def predict_images(loaded: InferenceModel, paths: Iterable[str | Path], *, batch_size: int = 32,
                   device: str = "auto", skip_bad: bool = False, num_workers: int = 0,
                   ctx: DistContext | None = None, amp: str = "none", channels_last: bool = False) -> ImageScores:
    """Score every image in ``paths`` (files, and folders searched recursively) of any resolution.

    Names are the paths as given (``folder/relative/name`` for files found in a folder). Unreadable
    images raise one :class:`DataError` listing all of them, unless ``skip_bad`` (then they are
    logged, left out and counted). Under ``torchrun`` (``ctx``, default: this process alone on
    ``device``) every rank scores its share and every rank gets all scores in order
    (:func:`score_images`).
    """
    from .data.datasets import ImageSamples
    from .data.images import validate_images
    from .engine.distributed import local_context

    dataset = ImageSamples.from_paths(list(paths), transform=loaded.transform())
    skipped = validate_images(dataset, skip_bad=skip_bad)
    ctx = ctx if ctx is not None else local_context(device)
    names, scores, _ = score_images(loaded, dataset, ctx, batch_size=batch_size, num_workers=num_workers, amp=amp,
                                    channels_last=channels_last)
    return ImageScores(names=names, scores=scores, skipped=skipped)


def score_images(loaded: InferenceModel, dataset: Any, ctx: DistContext, *, batch_size: int = 32,
                 num_workers: int = 0, amp: str = "none",
                 channels_last: bool = False) -> tuple[list[str], list[float], list[float | None]]:
    """(names, scores, labels or None each) of every item of ``dataset`` in order, scored by
    ``loaded`` shared by the ranks of ``ctx`` (:func:`kdfiqa.engine.sharded.map_sharded`: each image
    once, no padding, every rank gets all of them) with the batches one process would form; ``amp``
    (``bf16``) and ``channels_last`` apply on CUDA (:func:`kdfiqa.engine.evaluation.predict`).
    Non-finite scores are refused."""
    import torch

    from .engine.evaluation import predict
    from .engine.sharded import flatten, map_sharded

    model = loaded.model.to(ctx.device)
    if channels_last and ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def score(batch: Any) -> list[tuple]:
        out = predict(model, [batch], device=ctx.device, amp=amp, channels_last=channels_last)
        labels = out.mos.tolist() if out.mos is not None else [None] * len(out)
        return list(zip(out.names, out.scores.tolist(), labels))

    rows = flatten(map_sharded(dataset, score, ctx, batch_size=_batch_size(loaded, batch_size),
                               num_workers=num_workers))
    names, scores, labels = [list(column) for column in zip(*rows)] if rows else ([], [], [])
    _require_finite(loaded, names, scores)
    return names, [float(s) for s in scores], labels


def speed_note(device: Any, amp: str, channels_last: bool) -> str | None:
    """The note a command prints when ``--amp``/``--channels-last`` were asked for off CUDA, where
    they change nothing (scoring stays float32, contiguous); ``None`` otherwise."""
    asked = [spelled(f"--amp {amp}") if amp != "none" else "", spelled("--channels-last") if channels_last else ""]
    asked = [flag for flag in asked if flag]
    if not asked or str(getattr(device, "type", device)) == "cuda":
        return None
    return f"{' and '.join(asked)} apply on CUDA only; scoring on the CPU in float32"


def _require_finite(loaded: InferenceModel, names: Any, scores: Any) -> None:
    """Refuse non-finite scores (a model whose weights are NaN) rather than write or rank them."""
    import torch

    bad = [name for name, ok in zip(names, torch.isfinite(torch.as_tensor(scores)).tolist()) if not ok]
    if bad:
        raise DataError(f"{loaded.source}: the model gave non-finite scores for {len(bad)} of {len(scores)} "
                        f"image(s) (e.g. {bad[0]}); its weights may be damaged: use another checkpoint")


SCORE_FORMATS = ("table", "challenge")
"""What :func:`write_scores_csv` writes: ``table``, the header line ``image,score`` then the names as
found; ``challenge``, the challenge's submission (no header, ``image_name,score`` rows, each name
relative to the test folder)."""


def write_scores_csv(path: str | Path, scores: ImageScores, *, sort: bool = False, overwrite: bool = True,
                     format: str = "table", folder: str | Path | None = None) -> Path:
    """Write one row per image, best first when ``sort``, atomically, in ``format``
    (:data:`SCORE_FORMATS`): ``table`` with the header line ``image,score``; ``challenge`` without a
    header, each name relative to ``folder`` (the one test folder the images were found in). Without
    ``overwrite`` an existing file, even one another process wrote meanwhile, is refused
    (:func:`kdfiqa.data.csv_files.write_scores`)."""
    from .data.csv_files import write_scores

    if format not in SCORE_FORMATS:
        raise ConfigError(f"{spelled('--format')} {format!r} is not one of {', '.join(SCORE_FORMATS)}")
    pairs = scores.ranked() if sort else list(zip(scores.names, scores.scores))
    names = [n for n, _ in pairs]
    if format == "challenge":
        if folder is None:
            raise ConfigError(f"{spelled('--format challenge', 'format=challenge')}: give the test folder, whose image "
                              f"names the rows hold{spelled('', ' (folder=...)')}")
        names = [Path(n).relative_to(folder).as_posix() for n in names]
    return write_scores(path, names, [s for _, s in pairs], header=format == "table", float_format=".6f",
                        overwrite=overwrite)


def evaluate_csv(loaded: InferenceModel, root: str | Path, csv_path: str | Path, *,
                 batch_size: int = 32, device: str = "auto", fit: str | None = None,
                 num_workers: int = 0, skip_bad: bool = False,
                 allow_outside_root: bool = False, amp: str = "none",
                 channels_last: bool = False) -> dict[str, float | int]:
    """Challenge metrics of ``loaded`` on the labeled ``csv_path`` (image names relative to ``root``).

    Returns ``{"srcc", "plcc", "krcc", "rmse", "score", "n"}`` (:func:`kdfiqa.metrics.evaluate`).
    With ``fit="logistic4"`` PLCC and RMSE are computed after a 4-parameter logistic mapping fitted on
    this set (the ECNU-SJTU evaluation); SRCC and KRCC do not change. Under ``torchrun`` each rank
    scores its share (:func:`score_images`: each image once, no padding duplicates) and every rank
    gets the metrics of the full set gathered from all ranks, the same numbers as one process.
    ``skip_bad`` leaves unreadable images out (each logged) instead of stopping;
    ``allow_outside_root`` accepts names that resolve outside ``root``.
    """
    import numpy as np

    from .data.datasets import FIQADataset
    from .data.images import ImageSource, validate_images
    from .engine.distributed import init_distributed
    from .metrics import FITS, evaluate

    if fit is not None and fit not in FITS:
        raise ConfigError(f"{spelled('--fit')} {fit!r} is unknown; choose from {', '.join(FITS)}")
    dataset = FIQADataset(root, csv_path, transform=loaded.transform(), allow_outside_root=allow_outside_root)
    ImageSource(dataset, spelled("--csv", "csv_path"), str(csv_path), str(root), spelled("--root")).check_root()
    validate_images(dataset, skip_bad=skip_bad)
    ctx = init_distributed(device)
    _, scores, labels = score_images(loaded, dataset, ctx, batch_size=batch_size, num_workers=num_workers, amp=amp,
                                     channels_last=channels_last)
    if not scores or any(label is None for label in labels):
        raise DataError(f"{csv_path}: no labeled images to evaluate; give a labeled CSV")
    return evaluate(np.array(scores, dtype=np.float64), np.array(labels, dtype=np.float64), fit=fit)


def _batch_size(loaded: InferenceModel, batch_size: int) -> int:
    if batch_size < 1:
        raise ConfigError(f"{spelled('--batch-size')} must be positive, got {batch_size}")
    return 1 if loaded.native else batch_size
