"""FIQA models: EMO/EMOv2 building blocks and backbones, the quality head, the seed's model zoo."""

from .registry import (
    ModelInfo,
    create_backbone,
    create_model,
    list_backbones,
    list_models,
    model_info,
    register_backbone,
    register_model,
)

__all__ = [
    "ModelInfo",
    "create_backbone",
    "create_model",
    "list_backbones",
    "list_models",
    "model_info",
    "register_backbone",
    "register_model",
]
