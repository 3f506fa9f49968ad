"""Score images with a trained model: the library behind ``kdfiqa predict`` and ``kdfiqa evaluate``.

* :func:`load_inference_model` loads a checkpoint (or builds any target ``kdfiqa budget`` accepts)
  together with its evaluation transform: ``ckpt["config"]["data"]["eval_transform"]`` as written by
  the training command, else a resize to the model's ``default_input_size`` with ImageNet
  normalisation. ``input_size``, ``native`` (no resize: the seed's DERS evaluation at the original
  resolution) and ``multi_crop`` (mean over N random crops: the challenge baseline's 20-crop test)
  override it.
* :func:`predict_images` scores files and folders (searched recursively for image extensions) of any
  resolution; :func:`write_scores_csv` writes them as ``image,score`` with that header line.
* :func:`evaluate_csv` scores a labeled CSV under an image root and computes the challenge metrics
  (SRCC, PLCC, KRCC, RMSE and the challenge score), optionally after a 4-parameter logistic mapping
  of the predictions. Under ``torchrun`` each rank scores its share and the metrics are computed on
  the full set gathered from every rank.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .budget import InputSize, parse_input_size
from .errors import ConfigError, DataError

__all__ = [
    "InferenceModel",
    "Predictions",
    "default_eval_transform",
    "resolve_eval_transform",
    "load_inference_model",
    "find_images",
    "predict_images",
    "write_scores_csv",
    "evaluate_csv",
    "LOGISTIC_FITS",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
IMAGENET = "imagenet"


@dataclass
class InferenceModel:
    """A model ready to score images, with the transform spec its inputs go through."""

    model: nn.Module
    transform_spec: dict[str, Any]
    source: str

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """The (C, H, W) the model sees, or ``None`` at native resolution."""
        size = self.transform_spec.get("size")
        return None if size is None or self.transform_spec.get("eval") == "native" else parse_input_size(
            tuple(size) if isinstance(size, list) else size)

    @property
    def native(self) -> bool:
        return self.transform_spec.get("eval") == "native"

    def transform(self) -> Callable:
        """The image → tensor callable built from :attr:`transform_spec` by :mod:`kdfiqa.data`."""
        from .data import build_transform

        return build_transform(self.transform_spec)


def default_eval_transform(model: nn.Module) -> dict[str, Any]:
    """Resize to ``model.default_input_size`` and normalise with ImageNet statistics."""
    _, h, w = parse_input_size(tuple(getattr(model, "default_input_size", (3, 224, 224))))
    return {"eval": "resize", "size": [h, w], "normalize": IMAGENET}


def resolve_eval_transform(base: dict[str, Any] | None, model: nn.Module, *,
                           input_size: InputSize | None = None, native: bool = False,
                           multi_crop: int | None = None) -> dict[str, Any]:
    """The evaluation transform spec: ``base`` (or the default) with the command-line overrides.

    ``input_size`` replaces the size; ``native`` keeps each image at its own resolution (batch size
    1); ``multi_crop=N`` stacks N random crops of the size, whose predictions are averaged.
    """
    if native and multi_crop:
        raise ConfigError("--native and --multi-crop cannot be combined: choose one evaluation mode")
    if multi_crop is not None and multi_crop < 1:
        raise ConfigError(f"--multi-crop must be a positive number of crops, got {multi_crop}")
    spec = dict(base) if base else default_eval_transform(model)
    if input_size is not None:
        _, h, w = parse_input_size(input_size)
        spec["size"] = [h, w]
    if native:
        spec = {"eval": "native", "normalize": spec.get("normalize", IMAGENET)}
    elif multi_crop:
        spec = {**spec, "eval": "multi_crop", "crops": int(multi_crop)}
        spec.setdefault("size", default_eval_transform(model)["size"])
    return spec


def load_inference_model(target: str | Path, *, input_size: InputSize | None = None,
                         native: bool = False, multi_crop: int | None = None) -> InferenceModel:
    """Load a checkpoint (or build a model target) in eval mode with its evaluation transform spec."""
    from .cli.targets import load_target

    target = str(target)
    base = None
    if target.endswith(CHECKPOINT_SUFFIXES):
        from .checkpoint import load_checkpoint

        config = load_checkpoint(target).get("config") or {}
        base = ((config.get("data") or {}) if isinstance(config, dict) else {}).get("eval_transform")
        if base is not None and not isinstance(base, dict):
            raise ConfigError(f"{target}: config.data.eval_transform must be a mapping, "
                              f"got {type(base).__name__}; pass --input to override it")
    model = load_target(target).eval()
    spec = resolve_eval_transform(base, model, input_size=input_size, native=native,
                                  multi_crop=multi_crop)
    return InferenceModel(model=model, transform_spec=spec, source=target)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files given directly, and image files found recursively (sorted) inside given folders.

    A named file is kept whatever its extension; folders contribute only files ending in one of
    :data:`kdfiqa.data.images.IMAGE_EXTENSIONS` (any case). Duplicates are dropped. A path that does
    not exist, or a folder holding no image, is a :class:`DataError`.
    """
    from .data.images import IMAGE_EXTENSIONS

    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise DataError(f"{path}: no images found (looked recursively for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


class _ImageFiles(Dataset):
    """Image files as unlabeled sample dicts ``{"image", "name", "index"}`` (the data contract).

    Implements the :class:`kdfiqa.data.images.ImageDataset` protocol, so
    :func:`~kdfiqa.data.images.validate_images` can check it and drop unreadable files.
    """

    def __init__(self, files: Sequence[Path], transform: Callable) -> None:
        from .data.images import MAX_PIXELS

        self.files = list(files)
        self.transform = transform
        self.max_pixels = MAX_PIXELS

    def image_paths(self) -> list[Path]:
        return self.files

    def exclude(self, indices: Sequence[int]) -> None:
        dropped = set(indices)
        self.files = [f for i, f in enumerate(self.files) if i not in dropped]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from .data.images import load_rgb

        path = self.files[index]
        image = load_rgb(path, max_pixels=self.max_pixels)
        return {"image": self.transform(image), "name": str(path), "index": index}


@dataclass
class Predictions:
    """Scores for image files, in the order the files were found."""

    names: list[str]
    scores: list[float]
    skipped: int = 0
    """How many unreadable files were left out with ``skip_bad`` (each one is logged)."""

    def sorted(self) -> list[tuple[str, float]]:
        """(name, score) pairs, best score first; ties keep the order the files were found."""
        return sorted(zip(self.names, self.scores), key=lambda pair: -pair[1])


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device!r} is not a device such as cpu, cuda or cuda:1 ({exc})") from None


def _loader(dataset: Dataset, loaded: InferenceModel, batch_size: int, num_workers: int,
            sampler: Any = None) -> DataLoader:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    return DataLoader(dataset, batch_size=1 if loaded.native else batch_size, shuffle=False,
                      num_workers=num_workers, sampler=sampler)


def predict_images(loaded: InferenceModel, paths: Iterable[str | Path], *, batch_size: int = 32,
                   device: str | torch.device | None = "cpu", skip_bad: bool = False,
                   num_workers: int = 0) -> Predictions:
    """Score every image in ``paths`` (files and folders) with ``loaded``'s model and transform.

    Unreadable images raise one :class:`DataError` listing all of them, unless ``skip_bad`` (then
    they are logged and listed in :attr:`Predictions.skipped`).
    """
    from .engine.evaluation import predict

    from .data.images import validate_images

    dataset = _ImageFiles(find_images(paths), loaded.transform())
    skipped = validate_images(dataset, skip_bad=skip_bad)
    model = loaded.model.to(_device(device))
    out = predict(model, _loader(dataset, loaded, batch_size, num_workers), device=_device(device))
    scores = [float(s) for s in out.scores]
    names = [str(dataset.files[i]) for i in out.indices]
    return Predictions(names=names, scores=scores, skipped=skipped)


def write_scores_csv(path: str | Path, predictions: Predictions, *, sort: bool = False) -> Path:
    """Write ``image,score`` rows (with that header line), best first when ``sort``."""
    path = Path(path)
    pairs = predictions.sorted() if sort else list(zip(predictions.names, predictions.scores))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerows((name, f"{score:.6f}") for name, score in pairs)
    return path


LOGISTIC_FITS = ("logistic4",)


def evaluate_csv(loaded: InferenceModel, root: str | Path, csv_path: str | Path, *,
                 batch_size: int = 32, device: str | torch.device | None = "cpu",
                 fit: str | None = None, num_workers: int = 0) -> dict[str, float]:
    """Challenge metrics of ``loaded`` on the labeled ``csv_path`` (images under ``root``).

    Returns ``{"srcc", "plcc", "krcc", "rmse", "score", "n"}`` from :func:`kdfiqa.metrics.evaluate`.
    With ``fit="logistic4"`` predictions are first mapped by a 4-parameter logistic fitted on this
    set (the ECNU-SJTU evaluation); SRCC and KRCC do not change, PLCC and RMSE do. Under
    ``torchrun`` the result covers the full set gathered from every rank, on every rank.
    """
    from .data import FIQADataset
    from .engine.evaluation import predict
    from .metrics import evaluate, fit_logistic4

    if fit is not None and fit not in LOGISTIC_FITS:
        raise ConfigError(f"--fit {fit!r} is unknown; choose from {', '.join(LOGISTIC_FITS)}")
    dataset = FIQADataset(root, csv_path, transform=loaded.transform())
    dev = _device(device)
    model = loaded.model.to(dev)
    out = predict(model, _loader(dataset, loaded, batch_size, num_workers), device=dev)
    pred, mos = out.scores, out.targets
    if fit == "logistic4":
        pred = fit_logistic4(pred, mos)(pred)
    return evaluate(pred, mos)
