"""EdgeNeXt-XXS FIQA students of the challenge winner (ECNU-SJTU).

:func:`ecnu_sjtu_student` is the winner's released model exactly (github sunwei925/Efficient-FIQA,
``models/FIQA_model.py``): timm ``edgenext_xx_small`` with its whole head replaced by an identity, average
pooling, Linear(168, 128) -> Linear(128, 1), no activation, a linear output; 1,179,641 parameters and
331,310,822 fvcore FLOPs at 288x288. :func:`kdfiqa.models.ecnu_sjtu.load_ecnu_sjtu_state_dict` loads
their checkpoints.

:func:`edgenext_xxs_fiqa` is kdfiqa's deliberate variant, described below:

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
from .timm_backbone import TIMM_BACKBONE_KWARGS, TIMM_BOUNDS, TimmBackbone, timm_regressor

__all__ = ["edgenext_xxs_fiqa", "ecnu_sjtu_student"]

INPUT_SIZE = (3, 224, 224)
WINNER_HEAD = {"hidden": (128,), "norm": None, "act": "relu"}


@register_model(name="edgenext_xxs_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,), bounds=TIMM_BOUNDS)
def edgenext_xxs_fiqa(pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any) -> FIQARegressor:
    """EdgeNeXt-XXS with head Linear(168,128) → ReLU → Linear(128,1) (challenge winner's student), 224x224."""
    return timm_regressor("edgenext_xx_small", pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults=WINNER_HEAD, head=head, **kwargs)


ECNU_SJTU_INPUT = (3, 352, 352)
"""The winner's training and test resolution (``config_Edgenet.py``: Resize(352) + crop 352)."""
ECNU_SJTU_HEAD = {"pool": "avg", "hidden": (128,), "norm": None, "act": None, "out_activation": None}
"""``models/FIQA_model.py``: AdaptiveAvgPool2d(1) -> Linear(168, 128) -> Linear(128, 1), no activation."""
@register_model(name="ecnu_sjtu_student", default_input_size=ECNU_SJTU_INPUT, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,), bounds=TIMM_BOUNDS)
def ecnu_sjtu_student(pretrained: bool = False, **kwargs: Any) -> FIQARegressor:
    """The ECNU-SJTU winner's EdgeNeXt-XXS, exactly: timm's head stripped, avg pool -> Linear(168,128) -> Linear(128,1), linear output, 352x352."""
    return FIQARegressor(TimmBackbone("edgenext_xx_small", pretrained, strip_head=True, **kwargs),
                         head=dict(ECNU_SJTU_HEAD), default_input_size=ECNU_SJTU_INPUT)
