"""LightHSPA, the DERS team's FIQA network (seed §1.4).

Three parts, as the seed describes them:

* an **efficient backbone** inspired by MobileNetV2 (torchvision's inverted-residual stack, scaled by a
  width multiplier), with a lightweight **channel attention** (squeeze-and-excitation) and an efficient
  **spatial attention** (a 7x7 conv over channel-average and channel-max maps) at its end;
* the **LightHSPA attention**: self-attention whose query, key and value projections are depth-wise
  separable convolutions and whose keys and values are computed on the map adaptively pooled to a
  fixed ``pool_size`` x ``pool_size`` grid, so its cost grows linearly with the number of pixels;
* a **compact quality head**: average and max pooling concatenated, a small MLP with batch norm and
  dropout (:class:`~kdfiqa.models.heads.QualityHead` with ``pool="avgmax"``).

The attention blocks run on the last inverted-residual map (stride 32), before the final 1x1
expansion conv of MobileNetV2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenet_v2
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ..errors import ConfigError
from .bounds import Bound
from .heads import FIQARegressor
from .registry import register_model

__all__ = ["SpatialAttention", "DepthwiseSeparable", "LightHSPA", "LightHSPABackbone", "lighthspa_fiqa"]

INPUT_SIZE = (3, 224, 224)
DERS_HEAD = {"pool": "avgmax", "hidden": (256,), "dropout": 0.2}


class SpatialAttention(nn.Module):
    """x · sigmoid(conv7x7([mean_c(x), max_c(x)])): one weight per pixel (CBAM-style spatial attention)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def _pooling_matrix(n: int | Tensor, m: int, like: Tensor) -> Tensor:
    """(m, n) weights of adaptive average pooling from ``n`` positions to ``m``: row i averages
    positions ⌊i·n/m⌋ to ⌈(i+1)·n/m⌉ - 1, the windows ``F.adaptive_avg_pool2d`` uses."""
    i = torch.arange(m, device=like.device)
    start = torch.div(i * n, m, rounding_mode="floor")
    end = torch.div((i + 1) * n + m - 1, m, rounding_mode="floor")
    j = torch.arange(n, device=like.device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool(x: Tensor, size: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; while exporting to ONNX, the same averages written as two
    matrix products, because the exporter can only express adaptive pooling for a fixed input size
    and kdfiqa exports with dynamic height and width."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[-2], size, x)
    cols = _pooling_matrix(x.shape[-1], size, x)
    return rows @ x @ cols.transpose(0, 1)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depth-wise conv then 1x1 point-wise conv (``dim_in`` → ``dim_out``), both without bias."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__(nn.Conv2d(dim_in, dim_in, 3, padding=1, groups=dim_in, bias=False),
                         nn.Conv2d(dim_in, dim_out, 1, bias=False))


class LightHSPA(nn.Module):
    """Lightweight self-attention of LightHSPA (DERS, seed §1.4), with a residual connection.

    Queries come from every pixel; keys and values from the map adaptively average-pooled to
    ``pool_size`` x ``pool_size``. All three projections are :class:`DepthwiseSeparable`; queries and
    keys have about ``dim / qk_reduction`` channels; all three are split into ``num_heads`` heads. For N pixels and
    P = ``pool_size``², the attention costs N·P multiply-adds per channel instead of N².
    Output: x + BN(1x1(softmax(q·kᵀ/√d)·v)).
    """

    def __init__(self, dim: int, /, *, num_heads: int = 4, qk_reduction: int = 4, pool_size: int = 7) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"LightHSPA: width {dim} does not split into num_heads={num_heads}; "
                              "choose a divisor of the width")
        qk_dim = max(1, round(dim / qk_reduction / num_heads)) * num_heads
        self.num_heads = num_heads
        self.scale = (qk_dim // num_heads) ** -0.5
        self.pool_size = pool_size
        self.q = DepthwiseSeparable(dim, qk_dim)
        self.k = DepthwiseSeparable(dim, qk_dim)
        self.v = DepthwiseSeparable(dim, dim)
        self.proj = Conv2dNormActivation(dim, dim, 1, activation_layer=None)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, heads·d, H, W) → (B, heads, H·W, d)."""
        return x.flatten(2).unflatten(1, (self.num_heads, -1)).transpose(-2, -1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        pooled = adaptive_avg_pool(x, self.pool_size)
        q, k, v = self._heads(self.q(x)), self._heads(self.k(pooled)), self._heads(self.v(pooled))
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        mixed = (attn @ v).transpose(-2, -1).reshape(b, c, h, w)
        return x + self.proj(mixed)


class LightHSPABackbone(nn.Module):
    """MobileNetV2-style inverted residuals (``width_mult``) → channel attn → spatial attn → LightHSPA → 1x1.

    ``forward_features`` returns (B, ``num_features``, H/32, W/32); ``use_hspa=False`` leaves the
    LightHSPA block out (DERS used it to explore the accuracy/cost trade-off).
    """

    def __init__(self, width_mult: float = 1.0, *, use_hspa: bool = True, se_reduction: int = 4,
                 **hspa_kw: Any) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"LightHSPA: width_mult={width_mult!r} must be positive")
        features = mobilenet_v2(weights=None, width_mult=width_mult).features
        self.blocks = features[:-1]
        dim = features[-1][0].in_channels
        self.channel_attention = SqueezeExcitation(dim, max(8, dim // se_reduction))
        self.spatial_attention = SpatialAttention()
        self.hspa = LightHSPA(dim, **hspa_kw) if use_hspa else nn.Identity()
        self.conv_head = features[-1]
        self.num_features: int = features[-1][0].out_channels

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.spatial_attention(self.channel_attention(self.blocks(x)))
        return self.conv_head(self.hspa(x))


_BOUNDS = {
    "width_mult": Bound(above=0, at_most=4),
    "se_reduction": Bound(at_least=1, at_most=1024, integer=True),
    "num_heads": Bound(at_least=1, at_most=64, integer=True),
    "qk_reduction": Bound(at_least=1, at_most=1024, integer=True),
    "pool_size": Bound(at_least=1, at_most=64, integer=True),
}
"""What LightHSPA's keyword arguments may be: a width multiplier in (0, 4], up to 64 heads and a
pooled grid up to 64x64."""


@register_model(name="lighthspa_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(LightHSPABackbone, LightHSPA), bounds=_BOUNDS)
def lighthspa_fiqa(pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any) -> FIQARegressor:
    """LightHSPA (DERS): MobileNetV2-style backbone, channel/spatial/LightHSPA attention, avg+max head, 224x224."""
    if pretrained:
        raise ConfigError("lighthspa_fiqa has no pretrained weights; build it with pretrained=False")
    return FIQARegressor(LightHSPABackbone(**kwargs), head={**DERS_HEAD, **(head or {})},
                         default_input_size=INPUT_SIZE)
