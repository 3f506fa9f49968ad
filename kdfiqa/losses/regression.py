"""Point-wise regression losses between predicted scores and MOS: MSE, L1, Wing, Focal-Smooth."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._validate import as_score_pair, check_range
from .registry import register_loss

__all__ = ["MSELoss", "L1Loss", "WingLoss", "FocalSmoothLoss"]


@register_loss(name="mse")
class MSELoss(nn.Module):
    """Mean squared error ``mean((ŷ − y)²)``, the loss of the challenge baseline and DERS (seed §1.4)."""

    kind = "task"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        return (pred - target).pow(2).mean()


@register_loss(name="l1")
class L1Loss(nn.Module):
    """Mean absolute error ``mean(|ŷ − y|)``, the L1 loss the seed contrasts with Wing (§2, CoReFace)."""

    kind = "task"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        return (pred - target).abs().mean()


@register_loss(name="wing")
class WingLoss(nn.Module):
    """Wing loss on the error x = ŷ − y, mean over the batch (seed Eq. 8, ISeeCV team, CoReFace).

    ``w·ln(1 + |x|/ε)`` if ``|x| < w``, else ``|x| − C`` with ``C = w − w·ln(1 + w/ε)``, which makes
    the two pieces meet at ``|x| = w``. Defaults ``w = 0.03``, ``ε = 2`` as in the seed.
    """

    kind = "task"

    def __init__(self, omega: float = 0.03, epsilon: float = 2.0) -> None:
        super().__init__()
        self.omega = check_range("omega", omega, 0.0, open_low=True)
        self.epsilon = check_range("epsilon", epsilon, 0.0, open_low=True)
        self.c = self.omega - self.omega * math.log1p(self.omega / self.epsilon)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        x = (pred - target).abs()
        log_part = self.omega * torch.log1p(x / self.epsilon)
        return torch.where(x < self.omega, log_part, x - self.c).mean()

    def extra_repr(self) -> str:
        return f"omega={self.omega}, epsilon={self.epsilon}"


@register_loss(name="focal_smooth")
class FocalSmoothLoss(nn.Module):
    """Focal label-smoothing regression loss (seed Eqs. 3–6, Conquerit team).

    * Eq. 3: ``ỹ = y + ε·N(0, 1)``, noise drawn in training mode only, from ``generator`` (a
      ``torch.Generator`` the caller may seed, or one made from ``seed``); ``ỹ = y`` in eval mode.
    * Eq. 4: ``MSE_i = (ŷ_i − ỹ_i)²`` per sample.
    * Eq. 5: ``w_i = (1 − exp(−MSE_i))^γ``, larger for harder samples (kept in the graph).
    * Eq. 6: ``L = s · mean_i(w_i · MSE_i)``.

    The seed gives no values; defaults are ``ε = 0.02`` (scores lie in [0, 1]), ``γ = 2`` (the
    usual focal exponent) and ``s = 1``. Since ``w ≈ MSE^γ`` for small errors, ``s`` is the knob that
    restores the loss's magnitude.
    """

    kind = "task"

    def __init__(
        self,
        epsilon: float = 0.02,
        gamma: float = 2.0,
        scale: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.epsilon = check_range("epsilon", epsilon, 0.0)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.scale = check_range("scale", scale, 0.0, open_low=True)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator

    def smooth(self, target: torch.Tensor) -> torch.Tensor:
        """Eq. 3: the target with label noise in training mode, unchanged in eval mode."""
        if not self.training or self.epsilon == 0.0:
            return target
        device = self.generator.device if self.generator is not None else target.device
        noise = torch.randn(target.shape, generator=self.generator, device=device, dtype=target.dtype)
        return target + self.epsilon * noise.to(target.device)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = as_score_pair(pred, target, ("pred", "target"))
        mse = (pred - self.smooth(target)).pow(2)
        # 1 − e^(−MSE) as −expm1(−MSE) for precision; the floor keeps γ < 1 free of 0^(γ−1) grads.
        weight = (-torch.expm1(-mse)).clamp_min(torch.finfo(mse.dtype).tiny).pow(self.gamma)
        return self.scale * (weight * mse).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, gamma={self.gamma}, scale={self.scale}"
