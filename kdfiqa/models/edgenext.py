"""EdgeNeXt-XXS FIQA student of the challenge winner (ECNU-SJTU).

The winner's student is timm ``edgenext_xx_small`` whose classifier is replaced by
Linear(168, 128) → Linear(128, 1) (see the design notes). timm's pooling and post-pooling LayerNorm
are kept, so the two linear layers see the same 168 features as in timm's classifier. The description
names only the two linear layers; kdfiqa puts a ReLU between them (without one they collapse to a single
linear map) and, like every kdfiqa model, a sigmoid on the output.
"""

from __future__ import annotations

from typing import Any

from .heads import FIQARegressor
from .registry import register_model
from .timm_backbone import TIMM_BACKBONE_KWARGS, timm_regressor

__all__ = ["edgenext_xxs_fiqa"]

INPUT_SIZE = (3, 224, 224)
WINNER_HEAD = {"hidden": (128,), "norm": None, "act": "relu"}


@register_model(name="edgenext_xxs_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,))
def edgenext_xxs_fiqa(pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any) -> FIQARegressor:
    """EdgeNeXt-XXS with head Linear(168,128) → ReLU → Linear(128,1) (challenge winner's student), 224x224."""
    return timm_regressor("edgenext_xx_small", pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults=WINNER_HEAD, head=head, **kwargs)
