"""Building blocks of EMO and EMOv2: the (improved) inverted residual mobile block and its parts.

EMO ("Rethinking Mobile Block for Efficient Attention-based Models", Zhang et al., ICCV 2023) builds
its networks from the inverted Residual Mobile Block (:class:`iRMB`); EMOv2 ("EMOv2: Pushing 5M Vision
Model Frontier", Zhang et al., arXiv:2412.06674) from the improved block (:class:`iiRMB`). Both follow
one "meta mobile block" (EMOv2 Eq. 1):

    x = norm(x)
    x = mix(x)                         1x1 expansion, optionally with window attention
    x = x + local(x)   (or local(x))   depth-wise conv + BN + SiLU (+ squeeze-excite)
    x = proj(x)                        1x1 projection back to the output width
    out = shortcut + drop_path(ls(x))  (or ls(x) when the block has no skip)

Window attention (:func:`window_attention`) splits the map into windows of ``window_size`` x
``window_size`` tokens, either as a strided *grid* (EMO's "remote" windows: pixels congruent modulo
the number of windows) or as *close* contiguous tiles; EMOv2's *hybrid* mixer sums both with shared
weights. Maps are zero-padded right/bottom to a window multiple, attended without a mask, then
cropped, as the official code does, so any input resolution works.

Module attribute names follow the official implementations (github.com/zhangzjn/EMO,
github.com/zhangzjn/EMOv2), so their ImageNet checkpoints load without renaming keys. As there,
stochastic depth (``DropPath``), the activations and the channel LayerNorm are timm's
(``timm.layers``); the parts kept here (:class:`LayerNorm2d`'s key level, :class:`LayerScale2d`,
:class:`ConvNormAct`, :class:`SqueezeExcite`, :func:`same_padding`) each say which official key,
shape or padding the timm layer would change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import timm.layers
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_KINDS",
    "NORM_EPS",
    "canonical_attention",
    "ConvNormAct",
    "LayerNorm2d",
    "LayerScale2d",
    "PatchEmbed",
    "PointwiseMixer",
    "SqueezeExcite",
    "WindowAttention",
    "iRMB",
    "iiRMB",
    "make_act",
    "make_norm",
    "window_attention",
]

NORM_EPS = 1e-6
"""Epsilon of every norm in EMO/EMOv2 (official ``get_norm``)."""

ATTENTION_KINDS = ("none", "grid", "close", "hybrid")
"""Token mixers: no attention (a 1x1 conv), strided-grid windows, contiguous windows, or both summed."""

_ATTENTION_ALIASES = {"remote": "grid", "contiguous": "close", "": "none", "conv": "none"}


def canonical_attention(kind: str) -> str:
    """Return the canonical name of an attention kind (accepts "remote" and "contiguous" aliases)."""
    name = _ATTENTION_ALIASES.get(kind, kind)
    if name not in ATTENTION_KINDS:
        raise ValueError(f"attention kind {kind!r} is not one of {ATTENTION_KINDS} ('remote', 'contiguous')")
    return name


class LayerNorm2d(nn.Module):
    """EMO's channel LayerNorm of a (B, C, H, W) map: :class:`timm.layers.LayerNorm2d` held as ``norm``.

    Held one level down, the affine parameters keep the official keys (``*.norm.weight``,
    ``*.norm.bias``), which timm's layer on its own would put one level up. timm's layer returns a
    channels-last view; the official layer returns a contiguous NCHW map, and so does this one.
    """

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.norm = timm.layers.LayerNorm2d(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x).contiguous()


_NORMS = {
    "none": lambda dim: nn.Identity(),
    "bn": lambda dim: nn.BatchNorm2d(dim, eps=NORM_EPS),
    "ln": lambda dim: LayerNorm2d(dim, eps=NORM_EPS),
}
_NORM_ALIASES = {"bn_2d": "bn", "batchnorm": "bn", "ln_2d": "ln", "layernorm": "ln"}

_ACT_ALIASES = {"none": "identity", "hswish": "hardswish"}
"""kdfiqa's (and the official code's) activation names that timm spells otherwise."""


def make_norm(kind: str, dim: int) -> nn.Module:
    """Build a 2-D norm: ``"bn"`` (BatchNorm2d), ``"ln"`` (:class:`LayerNorm2d`) or ``"none"``; eps 1e-6.

    The official spellings ``"bn_2d"``/``"ln_2d"`` are accepted. Not timm's norm factory: its
    ``"layernorm2d"`` is timm's layer without the official key level, and it leaves eps at each
    layer's default rather than EMO's 1e-6.
    """
    name = _NORM_ALIASES.get(kind, kind)
    if name not in _NORMS:
        raise ValueError(f"norm {kind!r} is not one of {sorted(_NORMS)}")
    return _NORMS[name](dim)


def make_act(kind: str) -> nn.Module:
    """Build an activation by name with :func:`timm.layers.create_act_layer`.

    Any timm activation name is accepted (relu, relu6, silu, swish, gelu, hardswish, ...), plus
    ``"none"`` and ``"hswish"``. ``"gelu"`` is timm's exact (erf) GELU, the class the official code uses.
    """
    try:
        layer = timm.layers.create_act_layer(_ACT_ALIASES.get(kind, kind))
    except KeyError:
        layer = None
    if layer is None:
        raise ValueError(f"activation {kind!r} is neither a timm activation (relu, gelu, ...) nor 'none'")
    return layer


def same_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """The official EMO padding rule: ceil(((k - 1) * d + 1 - s) / 2).

    timm's ``get_padding`` agrees for odd kernels at stride 1 or 2 only (not for even kernels nor
    larger strides), so the official rule is kept for every configurable kernel.
    """
    return math.ceil(((kernel_size - 1) * dilation + 1 - stride) / 2)


class LayerScale2d(nn.Module):
    """Per-channel learnable scale ``gamma`` (1, C, 1, 1), initialised to ``init_value`` (EMOv2: 1e-6).

    Not :class:`timm.layers.LayerScale2d`: that stores ``gamma`` as (C,), so official checkpoints
    (which hold (1, C, 1, 1)) would not load, and it exists only from timm 1.0.9 on.
    """

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, dim, 1, 1), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ConvNormAct(nn.Module):
    """Conv2d (official "same" padding) → norm → activation, as attributes ``conv``, ``norm``, ``act``.

    Not :class:`timm.layers.ConvNormAct`: that holds norm and activation together as ``bn`` (keys
    ``bn.*`` instead of the official ``norm.*``) and pads by timm's rule (see :func:`same_padding`).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: str = "none",
        act: str = "none",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            dim_in, dim_out, kernel_size, stride, same_padding(kernel_size, stride), groups=groups, bias=bias
        )
        self.norm = make_norm(norm, dim_out)
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchEmbed(nn.Module):
    """EMO's first layer: a strided conv + norm (+ act), averaged over ``dilations`` when several.

    EMO uses one dilation, a 3x3 stride-2 conv with bias, BN and no activation.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: int = 3,
        stride: int = 2,
        dilations: Sequence[int] = (1,),
        norm: str = "bn",
        act: str = "none",
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim_in, dim_out, kernel_size, stride, same_padding(kernel_size, stride, d), d),
                make_norm(norm, dim_out),
                make_act(act),
            )
            for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        return torch.stack([branch(x) for branch in self.convs], dim=-1).mean(dim=-1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): global mean → 1x1 reduce → act → 1x1 expand →
    sigmoid gate.

    The reduced width is ``round(dim * rd_ratio)`` (EMO's stem uses ``rd_ratio=1``). This is the
    EfficientNet form the official EMO code takes from timm's private EfficientNet blocks; the public
    :class:`timm.layers.SqueezeExcite` names its convs ``fc1``/``fc2`` and rounds the reduced width
    to a multiple of 8, so neither the official keys nor their shapes would match.
    """

    def __init__(self, dim: int, rd_ratio: float = 0.25, act: str = "relu") -> None:
        super().__init__()
        reduced = round(dim * rd_ratio)
        self.conv_reduce = nn.Conv2d(dim, reduced, 1)
        self.act1 = make_act(act)
        self.conv_expand = nn.Conv2d(reduced, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


# ---------------------------------------------------------------------------------------------
# Window attention
# ---------------------------------------------------------------------------------------------


def _to_windows(x: Tensor, n1: int, n2: int, grid: bool) -> Tensor:
    """(B, C, H, W) → (B * n1 * n2, C, H / n1, W / n2): grid windows or contiguous tiles."""
    b, c, h, w = x.shape
    h1, w1 = h // n1, w // n2
    if grid:  # pixel row = i * n1 + window_row
        x = x.view(b, c, h1, n1, w1, n2).permute(0, 3, 5, 1, 2, 4)
    else:  # pixel row = window_row * h1 + i
        x = x.view(b, c, n1, h1, n2, w1).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * n1 * n2, c, h1, w1)


def _from_windows(x: Tensor, n1: int, n2: int, grid: bool) -> Tensor:
    """Inverse of :func:`_to_windows`."""
    bn, c, h1, w1 = x.shape
    x = x.view(bn // (n1 * n2), n1, n2, c, h1, w1)
    x = x.permute(0, 3, 4, 1, 5, 2) if grid else x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(bn // (n1 * n2), c, h1 * n1, w1 * n2)


def _to_heads(x: Tensor, heads: int) -> Tensor:
    """(b, heads * d, h, w) → (b, heads, h * w, d)."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w).transpose(-2, -1)


def _from_heads(x: Tensor, h: int, w: int) -> Tensor:
    """(b, heads, h * w, d) → (b, heads * d, h, w)."""
    b, heads, _, d = x.shape
    return x.transpose(-2, -1).reshape(b, heads * d, h, w)


def window_layout(kind: str, size: Sequence[int], window_size: int
                  ) -> tuple[str, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The canonical attention ``kind`` and, for an (H, W) map, the window (height, width), the
    (bottom, right) zero padding to whole windows and the (rows, columns) of windows; the whole map is
    one window when ``window_size <= 0``."""
    kind = canonical_attention(kind)
    if kind == "none":
        raise ValueError("window_attention needs an attention kind other than 'none'")
    h, w = size[0], size[1]  # kept as given: under torch.jit.trace they stay traced sizes
    win_h, win_w = (h, w) if window_size <= 0 else (window_size, window_size)
    pad_b, pad_r = (win_h - h % win_h) % win_h, (win_w - w % win_w) % win_w
    return kind, (win_h, win_w), (pad_b, pad_r), ((h + pad_b) // win_h, (w + pad_r) // win_w)


def window_attention(
    x: Tensor,
    qk: nn.Module,
    v: nn.Module,
    *,
    num_heads: int,
    window_size: int,
    kind: str,
    attn_pre: bool,
    attn_drop: nn.Module | None = None,
) -> Tensor:
    """Multi-head self-attention inside windows, as in EMO (iRMB) and EMOv2 (EW-MHSA).

    ``qk`` maps C → 2C channels (queries then keys, heads of C / num_heads channels); ``v`` maps C →
    C_mid. The map is zero-padded right/bottom to a multiple of ``window_size`` (the whole map when
    ``window_size <= 0``), split into windows (``kind``: "grid", "close" or "hybrid" = sum of both),
    attended with softmax(Q K^T / sqrt(d)) (EMO Eq. 3, no mask), and cropped back to (H, W).

    With ``attn_pre`` (EMO) attention mixes the input and ``v`` is applied afterwards; otherwise
    (EMOv2) attention mixes ``v(x)``. Both products are explicit matmuls, so fvcore counts them.
    Hybrid attention with ``attn_pre`` puts each window's output back where it came from; the
    official code reassembles the close windows with the grid layout in that (unreleased) setting.
    """
    kind, (win_h, win_w), (pad_b, pad_r), (n1, n2) = window_layout(kind, x.shape[-2:], window_size)
    b, c, h, w = x.shape
    x = F.pad(x, (0, pad_r, 0, pad_b))
    scale = (c // num_heads) ** -0.5

    keys_queries = qk(x)
    values = x if attn_pre else v(x)
    out: Tensor | None = None
    for grid in {"grid": (True,), "close": (False,), "hybrid": (True, False)}[kind]:
        windows = _to_windows(keys_queries, n1, n2, grid)
        q, k = _to_heads(windows, 2 * num_heads).chunk(2, dim=1)
        attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
        if attn_drop is not None:
            attn = attn_drop(attn)
        win_values = _to_windows(values, n1, n2, grid)
        mixed = _from_heads(attn @ _to_heads(win_values, num_heads), win_values.shape[2], win_values.shape[3])
        mixed = _from_windows(mixed, n1, n2, grid)
        out = mixed if out is None else out + mixed
    assert out is not None
    if attn_pre:
        out = v(out)
    # Always crop (a no-op without padding), so a traced graph stays valid at every resolution.
    return out[:, :, :h, :w].contiguous()


class WindowAttention(nn.Module):
    """EMOv2's efficient window attention mixer (EW-MHSA): ``qk``/``v`` 1x1 convs + :func:`window_attention`.

    ``kind`` "grid" is the official ``EW_MHSA_Remote``, "close" ``EW_MHSA_Close`` and "hybrid"
    ``EW_MHSA_Hybrid`` (grid + close with shared weights). Output width is ``dim_mid``.
    """

    def __init__(
        self,
        dim_in: int,
        dim_mid: int,
        *,
        head_dim: int,
        window_size: int,
        kind: str = "hybrid",
        attn_pre: bool = False,
        act: str = "gelu",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = canonical_attention(kind)
        self.num_heads = _num_heads(dim_in, head_dim)
        self.window_size = window_size
        self.attn_pre = attn_pre
        self.qk = ConvNormAct(dim_in, 2 * dim_in, 1, bias=qkv_bias)
        self.v = ConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, act=act)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, x: Tensor) -> Tensor:
        return window_attention(
            x, self.qk, self.v, num_heads=self.num_heads, window_size=self.window_size, kind=self.kind,
            attn_pre=self.attn_pre, attn_drop=self.attn_drop,
        )


class PointwiseMixer(nn.Module):
    """EMOv2's attention-free mixer: a 1x1 (or ``kernel_size``) expansion conv + act, as ``net``."""

    def __init__(
        self, dim_in: int, dim_mid: int, *, act: str, bias: bool = True, kernel_size: int = 1
    ) -> None:
        super().__init__()
        self.net = ConvNormAct(dim_in, dim_mid, kernel_size, bias=bias, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _num_heads(dim: int, head_dim: int) -> int:
    if head_dim <= 0 or dim % head_dim:
        raise ValueError(f"width {dim} is not divisible by head_dim {head_dim}")
    return dim // head_dim


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MixerSpec:
    """Token-mixer settings handed from the meta block to the subclass that places the mixer."""

    act: str
    head_dim: int
    window_size: int
    attn_pre: bool
    v_proj: bool
    qkv_bias: bool
    attn_drop: float


class _MobileBlock(nn.Module):
    """The meta mobile block shared by :class:`iRMB` and :class:`iiRMB` (see the module docstring).

    Subclasses only decide where the token mixer lives (:meth:`_build_mixer`, :meth:`mix`), which is
    what differs between the official EMO and EMOv2 parameter layouts.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        exp_ratio: float = 1.0,
        norm: str = "bn",
        act: str = "relu",
        norm_in: bool = True,
        dw_kernel_size: int = 3,
        stride: int = 1,
        head_dim: int = 64,
        window_size: int = 7,
        attn: str = "none",
        attn_pre: bool = False,
        v_proj: bool = True,
        se_ratio: float = 0.0,
        qkv_bias: bool = True,
        layer_scale: float = 0.0,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        skip: bool = True,
    ) -> None:
        super().__init__()
        dim_mid = int(dim_in * exp_ratio)
        self.attn = canonical_attention(attn)
        if self.attn == "none" and not v_proj and dim_mid != dim_in:
            raise ValueError(f"v_proj=False needs exp_ratio 1 (dim_in {dim_in}, dim_mid {dim_mid})")
        self.has_skip = skip and dim_in == dim_out and stride == 1
        self.norm = make_norm(norm, dim_in) if norm_in else nn.Identity()
        self._build_mixer(dim_in, dim_mid, _MixerSpec(act, head_dim, window_size, attn_pre, v_proj,
                                                       qkv_bias, attn_drop))
        if dw_kernel_size > 0:
            self.conv_local = ConvNormAct(
                dim_mid, dim_mid, dw_kernel_size, stride, groups=dim_mid, norm="bn", act="silu"
            )
        elif stride == 1:
            self.conv_local = nn.Identity()
        else:
            raise ValueError("a strided block needs a depth-wise kernel (dw_kernel_size > 0)")
        self.se = SqueezeExcite(dim_mid, se_ratio, act) if se_ratio > 0 else nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop)
        self.proj = ConvNormAct(dim_mid, dim_out, 1)
        self.ls = LayerScale2d(dim_out, layer_scale) if layer_scale > 0 else nn.Identity()
        self.drop_path = timm.layers.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _build_mixer(self, dim_in: int, dim_mid: int, spec: _MixerSpec) -> None:
        raise NotImplementedError

    def mix(self, x: Tensor) -> Tensor:
        """Token mixer: C_in → C_mid channels (expansion, with or without window attention)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.mix(self.norm(x))
        local = self.se(self.conv_local(x))
        x = x + local if self.has_skip else local
        x = self.ls(self.proj(self.proj_drop(x)))
        return shortcut + self.drop_path(x) if self.has_skip else x


class iRMB(_MobileBlock):  # noqa: N801  (the paper's name)
    """Inverted Residual Mobile Block of EMO (ICCV 2023, Sec. 3.2 and Eq. 5).

    ``norm → [window attention | 1x1 expansion] → depth-wise conv (+ SE) with inner skip → 1x1
    projection → skip``. The expansion ``v`` (C_in → C_in * exp_ratio) carries ``act``; attention
    (``attn`` "grid" in EMO, any of :data:`ATTENTION_KINDS` here) happens before ``v`` when
    ``attn_pre`` (EMO's default) and mixes ``v(x)`` otherwise. Heads have ``head_dim`` channels of the
    input. ``layer_scale`` > 0 adds a learnable per-channel output scale (off in EMO). The skip is used
    only when ``skip`` and the block keeps width and resolution. The depth-wise conv is always
    BN + SiLU, as in the official code. Parameters are named as in the official EMO code (``qk``,
    ``v``, ``conv_local``, ``se``, ``proj``).

    Args (keyword-only after ``dim_in``, ``dim_out``; shared with :class:`iiRMB`):
        exp_ratio: C_mid = int(C_in * exp_ratio). norm / act: input norm ("bn", "ln", "none") and
        expansion activation. norm_in: apply the input norm. dw_kernel_size / stride: depth-wise conv
        (0 = none, stride 1 only). head_dim / window_size / attn / attn_pre: window attention
        (:func:`window_attention`). v_proj: False keeps an attention-free block without expansion
        (EMO's stem). se_ratio: squeeze-excite after the depth-wise conv (0 = off). qkv_bias: biases
        of the ``qk``/``v`` convs. layer_scale, drop_path, attn_drop, proj_drop: regularisers.
        skip: allow the residual connection.
    """

    def __init__(self, dim_in: int, dim_out: int, *, attn_pre: bool = True, **kwargs) -> None:
        super().__init__(dim_in, dim_out, attn_pre=attn_pre, **kwargs)

    def _build_mixer(self, dim_in: int, dim_mid: int, spec: _MixerSpec) -> None:
        if self.attn != "none":
            self.num_heads = _num_heads(dim_in, spec.head_dim)
            self.window_size = spec.window_size
            self.attn_pre = spec.attn_pre
            self.qk = ConvNormAct(dim_in, 2 * dim_in, 1, bias=spec.qkv_bias)
            self.attn_drop = nn.Dropout(spec.attn_drop)
        if spec.v_proj or self.attn != "none":
            self.v = ConvNormAct(dim_in, dim_mid, 1, bias=spec.qkv_bias, act=spec.act)
        else:
            self.v = nn.Identity()

    def mix(self, x: Tensor) -> Tensor:
        if self.attn == "none":
            return self.v(x)
        return window_attention(
            x, self.qk, self.v, num_heads=self.num_heads, window_size=self.window_size, kind=self.attn,
            attn_pre=self.attn_pre, attn_drop=self.attn_drop,
        )


class iiRMB(_MobileBlock):  # noqa: N801  (the paper's name)
    """Improved Inverted Residual Mobile Block of EMOv2 (arXiv:2412.06674, Sec. 3.3).

    Same meta block as :class:`iRMB`, with the token mixer held in ``eops`` (a
    :class:`PointwiseMixer` when ``attn`` is "none", else a :class:`WindowAttention`: EMOv2's hybrid
    grid + close windows by default), attention applied to ``v(x)`` (``attn_pre=False``), and a layer
    scale (``layer_scale``, 1e-6 in EMOv2) on the block output, skip or not. Parameters are named as in
    the official EMOv2 code (``eops.0.*``, ``conv_local``, ``proj``, ``ls``).
    """

    def __init__(
        self, dim_in: int, dim_out: int, *, attn: str = "hybrid", layer_scale: float = 1e-6, **kwargs
    ) -> None:
        super().__init__(dim_in, dim_out, attn=attn, layer_scale=layer_scale, **kwargs)

    def _build_mixer(self, dim_in: int, dim_mid: int, spec: _MixerSpec) -> None:
        mixer: nn.Module = nn.Identity()
        if self.attn == "none" and spec.v_proj:
            mixer = PointwiseMixer(dim_in, dim_mid, act=spec.act, bias=spec.qkv_bias)
        elif self.attn != "none":
            mixer = WindowAttention(
                dim_in, dim_mid, head_dim=spec.head_dim, window_size=spec.window_size, kind=self.attn,
                attn_pre=spec.attn_pre, act=spec.act, qkv_bias=spec.qkv_bias, attn_drop=spec.attn_drop,
            )
        self.eops = nn.ModuleList([mixer])

    def mix(self, x: Tensor) -> Tensor:
        return self.eops[0](x)
