"""Correlation losses over a batch: 1 − PLCC and the norm-in-norm PLCC loss."""

from __future__ import annotations

import torch
from torch import nn

from ._validate import as_score_pair, check_range
from .registry import register_loss

__all__ = ["PLCCLoss", "NormInNormPLCCLoss"]


def batch_pearson(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Pearson ρ of two (B,) tensors, ``Σab / (√(Σa² + eps)·√(Σb² + eps))`` on centred a, b.

    ``eps`` keeps ρ and its gradient finite when either side is constant (then ρ = 0).
    """
    a = pred - pred.mean()
    b = target - target.mean()
    return (a * b).sum() / (torch.sqrt(a.pow(2).sum() + eps) * torch.sqrt(b.pow(2).sum() + eps))


@register_loss(name="plcc")
class PLCCLoss(nn.Module):
    """``1 − ρ(ŷ, y)``, Pearson's ρ over the batch (seed Eq. 9, ISeeCV team, CoReFace).

    ``ρ = Σ(y_i − ȳ)(ŷ_i − mean ŷ) / (√Σ(y_i − ȳ)² · √Σ(ŷ_i − mean ŷ)²)``, with ``eps`` added
    under each square root so that a constant batch (or a batch of one) gives ρ = 0, loss 1, and
    finite gradients. Invariant to positive affine maps of ŷ. Range [0, 2].
    """

    kind = "task"

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = check_range("eps", eps, 0.0, open_low=True)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        return 1.0 - batch_pearson(pred, target, self.eps)


@register_loss(name="plcc_nin")
class NormInNormPLCCLoss(nn.Module):
    """Norm-in-norm style PLCC loss (Li et al., ACM MM 2020), the form used by the challenge winner.

    Both sides are mean-centred and divided by their population standard deviation:
    ``p = (ŷ − mean ŷ)/(σ_ŷ + eps)``, ``t = (y − ȳ)/(σ_y + eps)`` with ``σ = √(mean(c²) + eps²)``
    on the centred values c (finite gradients for constant batches). With ``ρ = mean(p·t)``,

    ``L = ½·[ mean((p − t)²)/4 + mean((ρ·p − t)²)/4 ]``,

    an MSE between normalised scores plus the ρ-scaled term. Since ``mean(p²) = mean(t²) = 1``
    this equals ``(1 − ρ)/4 + (1 − ρ²)/8``: zero for perfect linear agreement, at most 1/2, and
    invariant to positive affine maps of ŷ. kdfiqa defines it this way for comparison with ``plcc``.
    """

    kind = "task"

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = check_range("eps", eps, 0.0, open_low=True)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean()
        return centred / (torch.sqrt(centred.pow(2).mean() + self.eps**2) + self.eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        p, t = self._normalise(pred), self._normalise(target)
        rho = (p * t).mean()
        return 0.5 * ((p - t).pow(2).mean() / 4 + (rho * p - t).pow(2).mean() / 4)
