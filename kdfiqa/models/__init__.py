"""FIQA models: EMO/EMOv2 building blocks and backbones, the quality head, the seed's model zoo, the
deployment config every model built here carries, and :func:`fuse`, a model's inference form."""

from .deploy import DeployConfig, deploy_config, set_deploy_config
from .registry import (
    MAX_PARAMETERS,
    Bound,
    ModelInfo,
    create_backbone,
    create_model,
    list_backbones,
    list_models,
    model_info,
    register_backbone,
    register_model,
    restorable_kwargs,
)
from . import emo  # noqa: F401  (registers EMO backbones)
from .emo import EMOBackbone, load_official_emo_weights
from .emo_blocks import iiRMB, iRMB
from .fuse import fuse
from .heads import FIQARegressor, QualityHead
from .timm_backbone import TimmBackbone
from . import dualbranch, edgenext, lighthspa, mobilenet, swin  # noqa: F401  (register the seed's model zoo)

__all__ = [
    "Bound",
    "DeployConfig",
    "EMOBackbone",
    "FIQARegressor",
    "MAX_PARAMETERS",
    "ModelInfo",
    "QualityHead",
    "TimmBackbone",
    "create_backbone",
    "create_model",
    "deploy_config",
    "fuse",
    "iiRMB",
    "iRMB",
    "list_backbones",
    "list_models",
    "load_official_emo_weights",
    "model_info",
    "register_backbone",
    "register_model",
    "restorable_kwargs",
    "set_deploy_config",
]
