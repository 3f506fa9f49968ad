"""Checkpoints of the ECNU-SJTU winner's released models in kdfiqa's layout.

Their code (github sunwei925/Efficient-FIQA, ``models/FIQA_model.py``) names the student's weights
``feature_extraction.*`` (timm's EdgeNeXt-XXS) and ``quality.*`` (the two linear layers), and the
teacher's ``feature_extraction.feature_extraction.*`` (torchvision's Swin-B inside their
``Swin_b_IQA``) and ``quality.*``. :func:`load_ecnu_sjtu_state_dict` maps either onto
:func:`~kdfiqa.models.edgenext.ecnu_sjtu_student` or :func:`~kdfiqa.models.swin.ecnu_sjtu_teacher`.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from ..errors import ConfigError
from .deploy import deploy_config

__all__ = ["ECNU_SJTU_KEY_MAPS", "load_ecnu_sjtu_state_dict"]

_HEAD = (("quality.0.", "head.mlp.0."), ("quality.1.", "head.fc."))
ECNU_SJTU_KEY_MAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "ecnu_sjtu_student": (("feature_extraction.", "backbone.model."), *_HEAD),
    "ecnu_sjtu_teacher": (("feature_extraction.feature_extraction.", "backbone."), *_HEAD),
}
"""Per registered model, prefixes of the winner's state-dict keys -> kdfiqa's."""


def load_ecnu_sjtu_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load a state dict in the winner's layout (as their released checkpoints hold it, a
    ``module.`` prefix of DataParallel removed) into ``model``, an ``ecnu_sjtu_student`` or
    ``ecnu_sjtu_teacher``, strictly."""
    name = deploy_config(model).name
    if name not in ECNU_SJTU_KEY_MAPS:
        raise ConfigError(f"the ECNU-SJTU layout loads into {' or '.join(ECNU_SJTU_KEY_MAPS)}, not {name!r}")
    key_map = ECNU_SJTU_KEY_MAPS[name]
    mapped = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        old, new = next(((o, n) for o, n in key_map if key.startswith(o)), (None, None))
        if old is None:
            layout = ", ".join(f"{o}*" for o, _ in key_map[:2])
            raise ConfigError(f"state dict key {key!r} is not of the ECNU-SJTU {name} layout ({layout})")
        mapped[new + key[len(old):]] = value
    model.load_state_dict(mapped, strict=True)
    return model
