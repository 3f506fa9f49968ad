"""Ranking losses: the pairwise logistic rank loss and RankCORE's adaptive-margin ranking loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import as_score_pair, as_scores, check_range
from .registry import register_loss

__all__ = ["RankLoss", "AdaptiveMarginLoss"]


@register_loss(name="rank")
class RankLoss(nn.Module):
    """Pairwise logistic rank loss, a smooth surrogate of SRCC (seed Eq. 2, Conquerit team).

    ``L = E_ij[ log(1 + exp(−(ŷ_i − ŷ_j)·sign(y_i − y_j))) ]`` over ordered pairs ``i ≠ j``.
    Pairs with equal targets carry no order and contribute nothing: the mean is taken over the
    pairs with ``y_i ≠ y_j`` only, and a batch without such a pair (e.g. of one) gives 0. The loss
    depends on the targets only through their ordering.
    """

    kind = "task"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        order = torch.sign(target[:, None] - target[None, :])
        informative = order != 0
        terms = F.softplus(-(pred[:, None] - pred[None, :]) * order)
        count = informative.sum()
        return (terms * informative).sum() / count.clamp_min(1)


@register_loss(name="adaptive_margin")
class AdaptiveMarginLoss(nn.Module):
    """Severity-adaptive margin ranking loss (RankCORE SSAR, ISeeCV team, seed appendix 2).

    For an image I, its degraded copy I' = T_s(I) and severity ``s ∈ [0, 1]``, with margin
    ``m(s) = λ·s``: ``L = mean(max(0, −(q̂(I) − q̂(I')) + m(s)))``. Harsher degradations demand a
    wider quality gap. ``forward(q_ref, q_deg, severity)``, severity per pair or one for all;
    ``margin_scale`` is λ > 0 (default 0.1: the seed gives no value; scores lie in (0, 1)).
    """

    kind = "pair"

    def __init__(self, margin_scale: float = 0.1) -> None:
        super().__init__()
        self.margin_scale = check_range("margin_scale", margin_scale, 0.0, open_low=True)

    def forward(self, q_ref: torch.Tensor, q_deg: torch.Tensor, severity: torch.Tensor) -> torch.Tensor:
        q_ref, q_deg = as_score_pair(q_ref, q_deg, ("q_ref", "q_deg"))
        severity = torch.as_tensor(severity, dtype=q_ref.dtype, device=q_ref.device)
        severity = severity.expand_as(q_ref) if severity.dim() == 0 else as_scores(severity, "severity")
        if severity.shape != q_ref.shape:
            raise ValueError(f"severity has {severity.shape[0]} values but q_ref has {q_ref.shape[0]}")
        return F.relu(-(q_ref - q_deg) + self.margin_scale * severity).mean()

    def extra_repr(self) -> str:
        return f"margin_scale={self.margin_scale}"
