"""MobileNet FIQA models of the seed: MobileNetV3 (Conquerit, seed §1.1) and the MobileNetV2 baseline.

Each is a timm MobileNet without its classifier (timm's own pooling and pre-logits layers kept, so
``pretrained=True`` starts from timm's ImageNet weights) under a
:class:`~kdfiqa.models.heads.QualityHead`. The Conquerit model expects inputs normalised to (-1, 1)
(``normalize="symmetric"``), as its recipe trains and tests it.

``mobilenetv3_large_fiqa``, ``mobilenetv3_small_fiqa`` and ``mobilenetv2_fiqa`` take a ``width`` (channel multiplier): one of the
widths timm registers the network at (:data:`WIDTHS`), built from timm's own variant of that width
(``mobilenetv2_075`` for ``width=0.75``); the default, 1.0, is the network above.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .heads import FIQARegressor
from .registry import register_model
from .timm_backbone import TIMM_BACKBONE_KWARGS, TIMM_BOUNDS, timm_regressor

__all__ = ["WIDTHS", "mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa", "mobilenetv2_fiqa"]

INPUT_SIZE = (3, 224, 224)

WIDTHS = {"mobilenetv3_large": (0.75, 1.0), "mobilenetv3_small": (0.5, 0.75, 1.0),
          "mobilenetv2": (0.35, 0.5, 0.75, 1.0, 1.4)}
"""The channel multipliers timm registers each network at (``mobilenetv2_035`` ... ``mobilenetv2_140``)."""


def _timm_variant(network: str, width: float) -> str:
    """timm's name of ``network`` at channel multiplier ``width``: ``mobilenetv2`` at 0.75 is
    ``mobilenetv2_075``."""
    if isinstance(width, bool) or width not in WIDTHS[network]:
        raise ConfigError(f"{network}: width {width!r} is not one timm builds; choose one of "
                          f"{', '.join(map(str, WIDTHS[network]))}")
    return f"{network}_{round(width * 100):03d}"


@register_model(name="mobilenetv3_large_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                normalize="symmetric", forwards=(TIMM_BACKBONE_KWARGS,), bounds=TIMM_BOUNDS)
def mobilenetv3_large_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, width: float = 1.0, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV3-Large (Conquerit, seed §1.1) with the default quality head, 224x224, inputs in (-1, 1)."""
    return timm_regressor(_timm_variant("mobilenetv3_large", width), pretrained=pretrained,
                          default_input_size=INPUT_SIZE, head_defaults={}, head=head, **kwargs)


@register_model(name="mobilenetv3_small_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,), bounds=TIMM_BOUNDS)
def mobilenetv3_small_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, width: float = 1.0, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV3-Small with the default quality head, 224x224."""
    return timm_regressor(_timm_variant("mobilenetv3_small", width), pretrained=pretrained,
                          default_input_size=INPUT_SIZE,
                          head_defaults={}, head=head, **kwargs)


@register_model(name="mobilenetv2_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(TIMM_BACKBONE_KWARGS,), bounds=TIMM_BOUNDS)
def mobilenetv2_fiqa(
    pretrained: bool = False, head: dict[str, Any] | None = None, width: float = 1.0, **kwargs: Any
) -> FIQARegressor:
    """MobileNetV2 challenge baseline: pooled 1280 features → one linear output → sigmoid, 224x224."""
    return timm_regressor(_timm_variant("mobilenetv2", width), pretrained=pretrained, default_input_size=INPUT_SIZE,
                          head_defaults={"hidden": ()}, head=head, **kwargs)
