"""Correlation losses over a batch: 1 − PLCC and the norm-in-norm PLCC loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._validate import as_score_pair
from .registry import register_loss

__all__ = ["PLCCLoss", "NormInNormPLCCLoss", "batch_pearson"]


def centred_unit(x: torch.Tensor) -> torch.Tensor:
    """``(x − mean x) / ‖x − mean x‖``, and the (all-zero) centred ``x`` itself when x is constant.

    Dividing by 1 instead of 0 in the constant case keeps values and gradients finite and bounded.
    """
    centred = x - x.mean()
    norm = torch.linalg.vector_norm(centred)
    return centred / torch.where(norm > 0, norm, torch.ones_like(norm))


def batch_pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson ρ of two (B,) tensors (seed Eq. 9's fraction); 0 when either side is constant."""
    return (centred_unit(pred) * centred_unit(target)).sum()


@register_loss(name="plcc")
class PLCCLoss(nn.Module):
    """``1 − ρ(ŷ, y)``, Pearson's ρ over the batch (seed Eq. 9, ISeeCV team, CoReFace).

    ``ρ = Σ(y_i − ȳ)(ŷ_i − mean ŷ) / (√Σ(y_i − ȳ)² · √Σ(ŷ_i − mean ŷ)²)``, exactly, so the loss is
    invariant to positive affine maps of ŷ; range [0, 2]. When ŷ or y is constant (or the batch
    has one sample) ρ is undefined: it is taken as 0 (loss 1), and the gradient is that of
    ``−Σ(ŷ_i − mean ŷ)·u_i`` with u the normalised centred targets, which is bounded and points
    the predictions towards the targets' order. Near-constant predictions give large gradients
    (∝ 1/‖ŷ − mean ŷ‖), as the equation implies.
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
