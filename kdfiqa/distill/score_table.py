"""Precomputed teacher scores (offline distillation): a CSV looked up by image name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..data.labels import image_file_name, read_labels
from ..errors import DataError

__all__ = ["LOGIT_EPS", "score_to_logit", "ScoreTable"]

LOGIT_EPS = 1e-4
"""Scores are clamped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, so 0 and 1 stay finite."""


def score_to_logit(scores: Tensor, eps: float = LOGIT_EPS) -> Tensor:
    """The clamped logit log(p / (1 - p)), p = clamp(score, eps, 1 - eps): the inverse of the sigmoid
    a FIQA model applies to its logits, finite at scores of exactly 0 and 1."""
    return torch.logit(scores, eps=eps)


def batch_names(batch: Mapping[str, Any]) -> list[str]:
    """The batch's image names as a list (a single item's name is a plain string)."""
    names = batch["name"]
    return [names] if isinstance(names, str) else list(names)


class ScoreTable(nn.Module):
    """Teacher scores read from a CSV (challenge format or headed, see :mod:`kdfiqa.data.labels`).

    ``forward(batch)`` looks up every ``batch["name"]`` and returns the clamped logits (B, 1) of their
    scores (:func:`score_to_logit`), on the device of ``batch["image"]`` when the batch has one. Names
    are matched by the file they refer to, so ``img_01`` and ``img_01.png`` are the same image. A name
    the CSV does not score raises :class:`~kdfiqa.errors.DataError` naming it: no score is ever
    made up.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.scores = {image_file_name(label.name): label.score for label in read_labels(self.path)}

    def require(self, names: Sequence[str], where: str = "in this batch") -> None:
        """Raise :class:`~kdfiqa.errors.DataError` naming the first of ``names`` without a score."""
        missing = [name for name in names if image_file_name(name) not in self.scores]
        if missing:
            more = f" (and {len(missing) - 1} more {where})" if len(missing) > 1 else ""
            raise DataError(
                f"{self.path}: no teacher score for image {missing[0]!r}{more}; "
                "score every training image with `kdfiqa pseudo-label` or train without it"
            )

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        names = batch_names(batch)
        self.require(names)
        device = batch["image"].device if "image" in batch else None
        scores = torch.tensor([self.scores[image_file_name(n)] for n in names], dtype=torch.float32, device=device)
        return score_to_logit(scores).reshape(-1, 1)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, images={len(self.scores)}"
