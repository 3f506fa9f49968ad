"""Dual-branch FIQA network with local and global perception (BIT_ssvgg, seed §1.2).

Two branches see the same image and meet before the head:

* the **local** branch is a MobileNetV2 (timm, ``mobilenetv2_050`` by default so that the model fits
  vquala2025 at 224x336): small receptive fields for texture and high-frequency artifacts;
* the **global** branch is a large-kernel CNN in the manner of RepLKNet ("Scaling up your kernels to
  31x31", the seed's ref. [3]): a cheap stem down to stride 8, then stages whose blocks mix space with
  depth-wise 31x31 convolutions (a parallel small depth-wise kernel alongside, as RepLKNet trains them),
  each followed by a 1x1 convolutional feed-forward block.

Both branches halve the resolution five times with 3x3, stride-2, padding-1 convolutions, so their
stride-32 maps have the same size at any input resolution; they are concatenated along channels and
handed to the quality head. BIT_ssvgg tested at 224x336, the default input size here.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from ..errors import ConfigError
from .bounds import Bound
from .heads import FIQARegressor
from .registry import register_model
from .timm_backbone import TimmBackbone

__all__ = ["LargeKernelBlock", "ConvFFN", "LargeKernelBranch", "DualBranchBackbone", "dualbranch_fiqa"]

INPUT_SIZE = (3, 224, 336)


class LargeKernelBlock(nn.Module):
    """RepLKNet spatial-mixing block: x + 1x1(ReLU(dwK(ReLU(1x1(BN(x)))))), dwK a large depth-wise kernel.

    The large ``kernel_size`` depth-wise conv (with BN) runs beside a ``small_kernel`` one (with BN) and
    their outputs are summed, the training-time form of RepLKNet's re-parameterised large kernel.
    """

    def __init__(self, dim: int, kernel_size: int = 31, small_kernel: int | None = 5) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or (small_kernel is not None and small_kernel % 2 == 0):
            raise ConfigError(f"large-kernel block: kernel sizes must be odd, got {kernel_size} and {small_kernel}")
        self.norm = nn.BatchNorm2d(dim)
        self.pw1 = Conv2dNormActivation(dim, dim, 1, activation_layer=nn.ReLU)
        self.large = Conv2dNormActivation(dim, dim, kernel_size, groups=dim, activation_layer=None)
        self.small = (Conv2dNormActivation(dim, dim, small_kernel, groups=dim, activation_layer=None)
                      if small_kernel is not None else None)
        self.act = nn.ReLU()
        self.pw2 = Conv2dNormActivation(dim, dim, 1, activation_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw1(self.norm(x))
        mixed = self.large(y) if self.small is None else self.large(y) + self.small(y)
        return x + self.pw2(self.act(mixed))


class ConvFFN(nn.Module):
    """RepLKNet channel-mixing block: x + 1x1(GELU(1x1(BN(x)))) with hidden width ``ratio * dim``."""

    def __init__(self, dim: int, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.BatchNorm2d(dim)
        self.fc1 = Conv2dNormActivation(dim, hidden, 1, activation_layer=nn.GELU, inplace=None)
        self.fc2 = Conv2dNormActivation(hidden, dim, 1, activation_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.fc1(self.norm(x)))


def _downsample(dim_in: int, dim_out: int) -> nn.Sequential:
    """RepLKNet transition: 1x1 conv-BN-ReLU to ``dim_out``, then a stride-2 3x3 depth-wise conv-BN-ReLU."""
    return nn.Sequential(Conv2dNormActivation(dim_in, dim_out, 1),
                         Conv2dNormActivation(dim_out, dim_out, 3, stride=2, groups=dim_out))


class LargeKernelBranch(nn.Module):
    """The global branch: RepLKNet-style stem (stride 4), then four stages at strides 4, 8, 16, 32.

    Stage ``i`` has width ``widths[i]`` and ``depths[i]`` pairs of :class:`LargeKernelBlock` (kernel
    ``kernel_sizes[i]``) and :class:`ConvFFN`; stages after the first begin with a stride-2 transition.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 96, 160),
        depths: Sequence[int] = (0, 0, 2, 1),
        kernel_sizes: Sequence[int] = (31, 31, 31, 13),
        small_kernel: int | None = 5,
        ffn_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if not len(widths) == len(depths) == len(kernel_sizes) == 4:
            raise ConfigError("large-kernel branch: widths, depths and kernel_sizes need one entry per stage (4)")
        c0 = widths[0]
        self.stem = nn.Sequential(
            Conv2dNormActivation(3, c0, 3, stride=2),
            Conv2dNormActivation(c0, c0, 3, groups=c0),
            Conv2dNormActivation(c0, c0, 1),
            Conv2dNormActivation(c0, c0, 3, stride=2, groups=c0),
        )
        stages = []
        for i, (width, depth, kernel) in enumerate(zip(widths, depths, kernel_sizes)):
            layers: list[nn.Module] = [] if i == 0 else [_downsample(widths[i - 1], width)]
            for _ in range(depth):
                layers += [LargeKernelBlock(width, kernel, small_kernel), ConvFFN(width, ffn_ratio)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class DualBranchBackbone(nn.Module):
    """Local MobileNetV2 branch and global large-kernel branch, concatenated at stride 32.

    ``forward_features`` returns (B, C_local + C_global, H/32, W/32); ``num_features`` is that width.
    ``local_branch`` names the timm MobileNet used for the local branch (``pretrained`` loads timm's
    ImageNet weights into it; the global branch always starts from random weights).
    """

    def __init__(self, local_branch: str = "mobilenetv2_050", pretrained: bool = False, **global_kw: Any) -> None:
        super().__init__()
        self.local = TimmBackbone(local_branch, pretrained, pooled=False)
        self.global_branch = LargeKernelBranch(**global_kw)
        self.num_features = self.local.head_input_features + self.global_branch.num_features

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.cat([self.local.forward_head_input(x), self.global_branch(x)], dim=1)


_KERNEL = Bound(at_least=1, at_most=63, integer=True, max_items=4)
_BOUNDS = {
    "widths": Bound(at_least=1, at_most=4096, integer=True, max_items=4),
    "depths": Bound(at_least=0, at_most=64, integer=True, max_items=4),
    "kernel_sizes": _KERNEL, "small_kernel": _KERNEL,
    "ffn_ratio": Bound(above=0, at_most=16),
}
"""What the large-kernel branch's keyword arguments may be: four stages of up to 64 blocks, widths up
to 4096, kernels up to 63, feed-forward ratios in (0, 16]."""


@register_model(name="dualbranch_fiqa", default_input_size=INPUT_SIZE, is_student=True,
                forwards=(DualBranchBackbone, LargeKernelBranch), bounds=_BOUNDS)
def dualbranch_fiqa(pretrained: bool = False, head: dict[str, Any] | None = None, **kwargs: Any) -> FIQARegressor:
    """Dual-branch local (MobileNetV2) + global (31x31 large-kernel) network (BIT_ssvgg), 224x336."""
    return FIQARegressor(DualBranchBackbone(pretrained=pretrained, **kwargs), head=head,
                         default_input_size=INPUT_SIZE)
