"""Response distillation losses on pre-sigmoid logits of a student and a frozen teacher.

The teacher's logits are detached: a distillation loss never sends gradients into the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import as_score_pair, check_range
from .registry import register_loss

__all__ = ["TemperatureMSELoss", "RankKDLoss"]


@register_loss(name="temperature_mse")
class TemperatureMSELoss(nn.Module):
    """``T² · mean((σ(z_s/T) − σ(z_t/T))²)``: the 2077Agent team's MSE distillation loss.

    The seed (2077Agent team, knowledge distillation after Hinton et al.) uses an MSE distillation
    loss at temperature 4.0 with weight 0.5; kdfiqa softens both logits by T through the sigmoid
    that maps them to scores, and multiplies by T² so gradient magnitudes do not shrink with T.
    """

    kind = "distill"

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_range("temperature", temperature, 0.0, open_low=True)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        zs, zt = as_score_pair(student_logits, teacher_logits.detach(), ("student_logits", "teacher_logits"))
        t = self.temperature
        return t * t * (torch.sigmoid(zs / t) - torch.sigmoid(zt / t)).pow(2).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@register_loss(name="rank_kd")
class RankKDLoss(nn.Module):
    """ListNet-style ranking distillation: ``KL(softmax_B(z_t/T) ‖ softmax_B(z_s/T))``.

    The softmaxes run over the batch, so each is a distribution over which image is best; matching
    them transfers the teacher's ordering, which SRCC measures (Cao et al., ICML 2007, top-one
    probabilities). ``KL(p‖q) = Σ_i p_i (log p_i − log q_i)``; 0 for a batch of one. kdfiqa defines
    it as a ranking-oriented complement to the seed's 2077Agent distillation, aimed at SRCC.
    """

    kind = "distill"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_range("temperature", temperature, 0.0, open_low=True)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        zs, zt = as_score_pair(student_logits, teacher_logits.detach(), ("student_logits", "teacher_logits"))
        log_q = F.log_softmax(zs / self.temperature, dim=0)
        log_p = F.log_softmax(zt / self.temperature, dim=0)
        return (log_p.exp() * (log_p - log_q)).sum()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
