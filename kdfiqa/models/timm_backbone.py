"""Any timm model as a FIQA backbone (``create_model("timm:NAME")``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .bounds import Bound
from .heads import FIQARegressor

__all__ = ["TIMM_KWARGS", "TIMM_BACKBONE_KWARGS", "TIMM_BOUNDS", "TimmBackbone", "timm_regressor"]

TIMM_KWARGS = frozenset({
    "in_chans", "img_size", "window_size", "output_stride", "global_pool",
    "drop_rate", "drop_path_rate", "drop_block_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate",
})
"""The ``timm.create_model`` keyword arguments a kdfiqa checkpoint may replay: architecture and
regularisation settings only. Never ``pretrained``, ``pretrained_cfg``, ``pretrained_cfg_overlay``,
``checkpoint_path``, ``cache_dir`` or anything else that downloads or opens a file."""

TIMM_BACKBONE_KWARGS = TIMM_KWARGS | {"pooled", "strip_head"}
""":data:`TIMM_KWARGS` and :class:`TimmBackbone`'s own ``pooled`` and ``strip_head``."""

_RATE = Bound(at_least=0, at_most=1)
TIMM_BOUNDS = {
    "in_chans": Bound(at_least=1, at_most=64, integer=True),
    "img_size": Bound(at_least=1, at_most=4096, integer=True, max_items=2),
    "window_size": Bound(at_least=1, at_most=64, integer=True, max_items=2),
    "output_stride": Bound(at_least=1, at_most=64, integer=True),
    **{rate: _RATE for rate in ("drop_rate", "drop_path_rate", "drop_block_rate", "attn_drop_rate",
                                "proj_drop_rate", "pos_drop_rate")},
}
"""The bounds of :data:`TIMM_KWARGS` with a cost or a range, for every timm-built model."""


class TimmBackbone(nn.Module):
    """A timm model without its classifier, feeding a :class:`~kdfiqa.models.heads.QualityHead`.

    The model is built by ``timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)``;
    ``pretrained=True`` downloads timm's weights (internet needed) and is passed through unchanged.

    * ``forward_features(x)`` is timm's own ``forward_features``: the last feature map (B, C, H, W) for
      convolutional models (tokens for transformers), ``num_features`` = C.
    * ``forward_head_input(x)`` is everything timm runs before the classifier. With ``pooled=True``
      (default) that includes timm's global pooling and pre-logits layers (MobileNetV3's 1x1 head conv,
      EdgeNeXt's post-pooling LayerNorm), giving (B, ``head_input_features``) vectors, and
      ``head_input_pooled`` tells the regressor not to pool again. With ``pooled=False`` the model is
      built with ``global_pool=""`` and hands over a map, which the quality head pools (``"avg"`` or
      ``"avgmax"``); use it with convolutional models.
    * ``strip_head=True`` replaces timm's whole head (pooling, post-pooling norm and classifier) by an
      identity, as the ECNU-SJTU winner's code does (``model.head = Identity()``): the feature map goes
      to the quality head, which pools it; ``pooled`` is then ignored.

    Every parameter of the timm model is used by ``forward_head_input``, so budget parameter counts
    hold only what runs.
    """

    def __init__(self, name: str, pretrained: bool = False, *, pooled: bool = True, strip_head: bool = False,
                 **kwargs: Any) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ConfigError(f"timm has no model named {name!r}; `python -c \"import timm; "
                              f"print(timm.list_models('*{name[:6]}*'))\"` lists close names")
        if not pooled and not strip_head:
            kwargs["global_pool"] = ""
        self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        self.timm_name = name
        self.num_features: int = self.model.num_features
        self.strip_head = strip_head
        if strip_head:
            self.model.head = nn.Identity()
        self.head_input_features: int = (self.num_features if strip_head
                                         else getattr(self.model, "head_hidden_size", self.num_features))
        self.head_input_pooled = pooled and not strip_head

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)

    def forward_head_input(self, x: Tensor) -> Tensor:
        """timm's output without its classifier: pooled pre-logits (B, C) or, unpooled (or with the
        head stripped), a map."""
        return self.model.forward_features(x) if self.strip_head else self.model(x)


def timm_regressor(
    timm_name: str,
    *,
    pretrained: bool,
    default_input_size: tuple[int, int, int],
    head_defaults: dict[str, Any],
    head: dict[str, Any] | None,
    **kwargs: Any,
) -> FIQARegressor:
    """A :class:`TimmBackbone` with a quality head: ``head`` options override ``head_defaults``."""
    return FIQARegressor(TimmBackbone(timm_name, pretrained, **kwargs), head={**head_defaults, **(head or {})},
                         default_input_size=default_input_size)
