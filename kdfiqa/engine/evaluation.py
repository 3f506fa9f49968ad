"""Predict a FIQA model over a data set and score it with the challenge metrics.

Batches are the data set's sample dicts collated by torch: ``"image"`` is (B, 3, H, W), or
(B, N, 3, H, W) for multi-crop evaluation, where the prediction is the mean over the N crops (the
challenge baseline averages 20 random crops). Under ``torchrun`` every rank predicts its share and
the predictions are gathered by sample ``"index"``, so the padding a distributed sampler adds never
counts twice and the metrics are those of the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import DataError, first_line, spelled
from ..modes import evaluating
from .amp import autocast
from .distributed import DistContext, all_gather_objects

__all__ = ["Predictions", "predict", "gather_predictions", "validation_loader", "evaluate_model"]


@dataclass
class Predictions:
    """Scores of a set of samples, ordered by sample index; ``mos`` is None for unlabeled data."""

    index: list[int]
    names: list[str]
    scores: Tensor
    mos: Tensor | None

    def __len__(self) -> int:
        return len(self.index)


def _scores(model: nn.Module, images: Tensor) -> Tensor:
    """One score per sample: a (B, N, 3, H, W) multi-crop batch is averaged over its N crops."""
    if images.dim() == 5:
        b, n = images.shape[:2]
        return model(images.flatten(0, 1)).reshape(b, n).float().mean(dim=1)
    return model(images).reshape(images.shape[0]).float()


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device | str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
) -> Predictions:
    """Run ``model`` (eval mode, no gradients) over ``loader`` in this process.

    The model's train/eval mode is restored afterwards. Samples of different sizes in one batch
    raise a :class:`~kdfiqa.errors.DataError` suggesting batch size 1 (native resolution).
    """
    device = torch.device(device)
    index: list[int] = []
    names: list[str] = []
    scores: list[Tensor] = []
    mos: list[Tensor] = []
    labeled = True
    with evaluating(model):
        for batch in _batches(loader):
            images = batch["image"].to(device, non_blocking=True)
            if channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                try:
                    scores.append(_scores(model, images).cpu())
                except RuntimeError as exc:  # e.g. an image smaller than the network's stride, at native size
                    raise DataError(
                        f"{batch['name'][0]} (batch of {images.shape[0]} at {images.shape[-2]}x{images.shape[-1]}): "
                        f"the model cannot score it ({first_line(exc)}); score it at the model's size ("
                        f"{spelled('no --native, or --input HxW', 'native=False, or input_size=(H, W)')})") from None
            index.extend(int(i) for i in batch["index"])
            names.extend(batch["name"])
            labeled = labeled and "score" in batch
            if labeled:
                mos.append(batch["score"].reshape(-1).float())
    return Predictions(
        index=index,
        names=names,
        scores=torch.cat(scores) if scores else torch.empty(0),
        mos=(torch.cat(mos) if mos else torch.empty(0)) if labeled else None,
    )


def _batches(loader: DataLoader):
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            if "stack expects each tensor to be equal size" in str(exc):
                raise DataError(
                    "evaluation images in one batch have different sizes; use batch size 1 for "
                    "native-resolution evaluation (val_batch_size=1)"
                ) from None
            raise
        yield batch


def gather_predictions(preds: Predictions, ctx: DistContext) -> Predictions:
    """All ranks' predictions merged by sample index, in index order.

    A sample seen twice (the padding a distributed sampler adds) counts once.
    """
    mos = preds.mos.tolist() if preds.mos is not None else [None] * len(preds)
    rows = list(zip(preds.index, preds.names, preds.scores.tolist(), mos))
    merged: dict[int, tuple[str, float, float | None]] = {}
    for part in all_gather_objects(rows, ctx):
        for idx, name, score, label in part:
            merged.setdefault(idx, (name, score, label))
    order = sorted(merged)
    return Predictions(
        index=order,
        names=[merged[i][0] for i in order],
        scores=torch.tensor([merged[i][1] for i in order], dtype=torch.float64),
        mos=(
            torch.tensor([merged[i][2] for i in order], dtype=torch.float64)
            if preds.mos is not None
            else None
        ),
    )


def validation_loader(
    dataset: Dataset, ctx: DistContext, *, batch_size: int = 1, num_workers: int = 0
) -> DataLoader:
    """A loader over ``dataset`` in order, split across ranks when distributed (every sample kept)."""
    sampler = (
        DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)
        if ctx.distributed
        else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
    )


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    ctx: DistContext,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    amp: str = "none",
    channels_last: bool = False,
    fitted: bool = False,
) -> tuple[dict[str, Any], Predictions]:
    """Challenge metrics of ``model`` on the whole labeled ``dataset`` and the gathered predictions.

    Metrics come from :func:`kdfiqa.metrics.evaluate` (srcc, plcc, krcc, rmse, score, n) and are the
    same on every rank. ``fitted`` adds ``fitted_plcc`` and ``fitted_score``: PLCC and the score
    after the 4-parameter logistic fitted to the labels (``fit="logistic4"``, VQEG practice and the
    ECNU-SJTU winner's selection metric).
    """
    from ..metrics import evaluate

    loader = validation_loader(dataset, ctx, batch_size=batch_size, num_workers=num_workers)
    local = predict(model, loader, device=ctx.device, amp=amp, channels_last=channels_last)
    preds = gather_predictions(local, ctx)
    if preds.mos is None:
        raise DataError("the evaluation data set has no scores; evaluation needs labeled data")
    scores, mos = preds.scores.numpy(), preds.mos.numpy()
    metrics: dict[str, Any] = evaluate(scores, mos)
    if fitted:
        with_fit = evaluate(scores, mos, fit="logistic4")
        metrics.update(fitted_plcc=with_fit["plcc"], fitted_score=with_fit["score"])
    return metrics, preds
