"""Feature distillation: a student feature, through a learnable projector, against a teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import register_loss

__all__ = ["FeatureLoss"]

FEATURE_MODES = ("mse", "cosine")


@register_loss(name="feature")
class FeatureLoss(nn.Module):
    """MSE or cosine distance between ``P(f_s)`` and the teacher feature ``f_t`` (FitNets-style hint).

    kdfiqa defines it for intermediate-feature distillation (the seed's 2077Agent team distils the
    output only). ``P`` is a learnable 1×1 convolution from ``student_channels`` to ``teacher_channels``; on
    vectors (B, C) it acts as a Linear layer. It lives in this loss, never in the student, so the
    student's parameter count stays what the budget measured. ``student_channels=None`` sizes it on
    the first call. Maps of different spatial size are aligned by adaptive average pooling of
    ``P(f_s)`` to the teacher's size. The teacher feature is detached.

    * ``mode="mse"``: ``mean((P(f_s) − f_t)²)`` over all elements;
    * ``mode="cosine"``: ``mean(1 − cos(P(f_s), f_t))``, cosine over channels at every position.
    """

    kind = "feature"

    def __init__(
        self, student_channels: int | None = None, teacher_channels: int | None = None, mode: str = "mse"
    ) -> None:
        super().__init__()
        if teacher_channels is None:
            raise ConfigError("feature loss needs teacher_channels (the teacher feature's channel count)")
        if mode not in FEATURE_MODES:
            raise ConfigError(f"feature loss mode {mode!r} is not one of {', '.join(FEATURE_MODES)}")
        self.mode = mode
        if student_channels is None:
            self.projector: nn.Module = nn.LazyConv2d(int(teacher_channels), kernel_size=1)
        else:
            self.projector = nn.Conv2d(int(student_channels), int(teacher_channels), kernel_size=1)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.dim() not in (2, 4) or student_feat.dim() != teacher_feat.dim():
            raise ValueError(
                "features must both be (B, C) vectors or both (B, C, H, W) maps, got "
                f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
            )
        teacher_feat = teacher_feat.detach()
        if student_feat.dim() == 2:
            projected = self.projector(student_feat[:, :, None, None])[:, :, 0, 0]
        else:
            projected = self.projector(student_feat)
            if projected.shape[-2:] != teacher_feat.shape[-2:]:
                projected = F.adaptive_avg_pool2d(projected, teacher_feat.shape[-2:])
        if self.mode == "mse":
            return (projected - teacher_feat.to(projected.dtype)).pow(2).mean()
        return (1.0 - F.cosine_similarity(projected, teacher_feat.to(projected.dtype), dim=1)).mean()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
