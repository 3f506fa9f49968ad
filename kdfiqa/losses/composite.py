"""Weighted combinations of the component losses that the seed's teams trained with.

Each composite holds its components as sub-modules and adds their outputs; none re-implements them.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import check_range
from .correlation import PLCCLoss
from .ranking import RankLoss
from .regression import FocalSmoothLoss, WingLoss
from .registry import register_loss

__all__ = ["CorrLoss", "HybridLoss", "ConquerItLoss", "CoReFaceLoss"]


@register_loss(name="corr")
class CorrLoss(nn.Module):
    """``L_corr = α·L_PLCC + (1 − α)·L_Rank`` (seed Eq. 1, Conquerit team).

    ``L_PLCC`` is :class:`PLCCLoss` (Eq. 9) and ``L_Rank`` is :class:`RankLoss` (Eq. 2);
    ``α ∈ [0, 1]`` (default 0.5: the seed gives no value).
    """

    kind = "task"

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.plcc = PLCCLoss()
        self.rank = RankLoss()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.plcc(pred, target) + (1.0 - self.alpha) * self.rank(pred, target)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_loss(name="hybrid")
class HybridLoss(CorrLoss):
    """``α·L_PLCC + (1 − α)·L_Rank`` with ``α = 0.75``: the HybridLoss of the 2077Agent team.

    The seed names it (with α = 0.75) without spelling it out; kdfiqa defines it as the Conquerit
    correlation loss (seed Eq. 1 with Eqs. 9 and 2), one term aimed at PLCC and one at SRCC.
    """

    def __init__(self, alpha: float = 0.75) -> None:
        super().__init__(alpha)


@register_loss(name="conquerit")
class ConquerItLoss(nn.Module):
    """``L_total = λ·L_corr + (1 − λ)·L_focal-smooth`` (seed Eq. 7, Conquerit team).

    ``L_corr`` is :class:`CorrLoss` (Eq. 1) with ``alpha``; ``L_focal-smooth`` is
    :class:`FocalSmoothLoss` (Eqs. 3–6) with ``epsilon``, ``gamma``, ``scale``, ``seed``.
    ``λ ∈ [0, 1]`` (default 0.5: the seed gives no value).
    """

    kind = "task"

    def __init__(
        self,
        lam: float = 0.5,
        alpha: float = 0.5,
        epsilon: float = 0.02,
        gamma: float = 2.0,
        scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.lam = check_range("lam", lam, 0.0, 1.0)
        self.corr = CorrLoss(alpha)
        self.focal_smooth = FocalSmoothLoss(epsilon, gamma, scale, seed)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lam * self.corr(pred, target) + (1.0 - self.lam) * self.focal_smooth(pred, target)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


@register_loss(name="coreface")
class CoReFaceLoss(nn.Module):
    """``CoReFaceLoss = α·WingLoss + β·PLCCLoss`` (seed Eq. 10, ISeeCV team).

    WingLoss is :class:`WingLoss` (Eq. 8, ``omega``, ``epsilon``), PLCCLoss is :class:`PLCCLoss`
    (Eq. 9). ``α, β ≥ 0`` (default 1 each: the seed gives no values).
    """

    kind = "task"

    def __init__(
        self, alpha: float = 1.0, beta: float = 1.0, omega: float = 0.03, epsilon: float = 2.0
    ) -> None:
        super().__init__()
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        self.wing = WingLoss(omega, epsilon)
        self.plcc = PLCCLoss()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.wing(pred, target) + self.beta * self.plcc(pred, target)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"
