"""MobileNet FIQA models of the seed: MobileNetV3 (Conquerit, seed §1.1) and the MobileNetV2 baseline.

Each is a timm MobileNet without its classifier (timm's own pooling and pre-logits layers kept, so
``pretrained=True`` starts from timm's ImageNet weights) under a
:class:`~kdfiqa.models.heads.QualityHead`. The Conquerit model expects inputs normalised to (-1, 1)
(``normalize="symmetric"``), as its recipe trains and tests it.
"""

from __future__ import annotations

from typing import Any

from .heads import FIQARegressor
from .registry import register_model
from .timm_backbone import TIMM_BACKBONE_KWARGS, timm_regressor

__all__ = ["mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa", "mobilenetv2_fiqa"]

INPUT_SIZE = (3, 224, 224)


@register_model(name="mobilenetv3_large_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                normalize="symmetric", forwards=(TIMM_BACKBONE_KWARGS,))
def mobilenetv3_large_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV3-Large (Conquerit, seed §1.1) with the default quality head, 224x224, inputs in (-1, 1)."""
    return timm_regressor("mobilenetv3_large_100", pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults={}, head=head, **kwargs)


@register_model(name="mobilenetv3_small_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,))
def mobilenetv3_small_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV3-Small with the default quality head, 224x224."""
    return timm_regressor("mobilenetv3_small_100", pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults={}, head=head, **kwargs)


@register_model(name="mobilenetv2_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,))
def mobilenetv2_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV2 challenge baseline: pooled 1280 features → one linear output → sigmoid, 224x224."""
    return timm_regressor("mobilenetv2_100", pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults={"hidden": ()}, head=head, **kwargs)
