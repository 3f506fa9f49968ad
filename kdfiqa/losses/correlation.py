"""Correlation losses over a batch: 1 − PLCC and the norm-in-norm PLCC loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._validate import as_score_pair
from .registry import register_loss

__all__ = ["PLCCLoss", "NormInNormPLCCLoss", "batch_pearson", "centred_unit", "MIN_NORM"]


MIN_NORM = 1e-3
"""Floor of ‖x − mean x‖ in :func:`centred_unit` (score units): a batch whose centred norm is below it
counts as (near-)constant."""


def centred_unit(x: torch.Tensor) -> torch.Tensor:
    """``(x − mean x) / ‖x − mean x‖``, and the centred ``x`` itself (divided by 1) when that norm is
    below :data:`MIN_NORM`.

    For any batch whose spread is not tiny this is the unit centred vector of the equations. A
    constant or near-constant batch (where a constant such as 0.3 leaves float rounding residue of
    about 1e-17 rather than exact zeros) keeps its tiny centred values: ρ is then about 0, and the
    gradient of a correlation with it is bounded (by 1 for a constant batch, by about 1/MIN_NORM
    anywhere) instead of growing as 1/‖x − mean x‖ with the residue.
    """
    centred = x - x.mean()
    norm = torch.linalg.vector_norm(centred)
    return centred / torch.where(norm >= MIN_NORM, norm, torch.ones_like(norm))


def batch_pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson ρ of two (B,) tensors (seed Eq. 9's fraction); 0 when either side is constant."""
    return (centred_unit(pred) * centred_unit(target)).sum()


@register_loss(name="plcc")
class PLCCLoss(nn.Module):
    """``1 − ρ(ŷ, y)``, Pearson's ρ over the batch (seed Eq. 9, ISeeCV team, CoReFace).

    ``ρ = Σ(y_i − ȳ)(ŷ_i − mean ŷ) / (√Σ(y_i − ȳ)² · √Σ(ŷ_i − mean ŷ)²)``, exactly, so the loss is
    invariant to positive affine maps of ŷ (for batches that are not near-constant); range [0, 2].
    When ŷ or y is constant or near-constant (centred norm below
    :data:`~kdfiqa.losses.correlation.MIN_NORM`, or one sample) ρ is undefined: it tends to 0 (loss
    1), and the gradient, bounded by about 1/MIN_NORM, points the predictions towards the targets'
    order (:func:`centred_unit`).
    """

    kind = "task"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        return 1.0 - batch_pearson(pred, target)


@register_loss(name="plcc_nin")
class NormInNormPLCCLoss(nn.Module):
    """Norm-in-norm style PLCC loss (Li et al., ACM MM 2020), as the challenge winner trained with.

    Both sides are mean-centred and divided by their population standard deviation:
    ``p = (ŷ − mean ŷ)/σ_ŷ``, ``t = (y − ȳ)/σ_y`` (a constant side becomes all zeros, as in
    :class:`PLCCLoss`). With ``ρ = mean(p·t)``,

    ``L = ½·[ mean((p − t)²)/4 + mean((ρ·p − t)²)/4 ]``,

    an MSE between normalised scores plus the ρ-scaled term. Since ``mean(p²) = mean(t²) = 1``
    this equals ``(1 − ρ)/4 + (1 − ρ²)/8``: zero for perfect linear agreement, at most 1/2, and
    invariant to positive affine maps of ŷ. kdfiqa defines it this way, after the seed's
    description of the ECNU-SJTU entry (MSE plus a PLCC loss), for comparison with ``plcc``.
    """

    kind = "task"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        root_n = math.sqrt(pred.shape[0])
        p, t = centred_unit(pred) * root_n, centred_unit(target) * root_n
        rho = (p * t).mean()
        return 0.5 * ((p - t).pow(2).mean() / 4 + (rho * p - t).pow(2).mean() / 4)
