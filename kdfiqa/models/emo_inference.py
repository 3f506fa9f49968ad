"""kdfiqa's EMO/EMOv2 blocks in the inference form: window attention with one copy into and one out
of the windows, channels-last layer norms.

:func:`~kdfiqa.models.emo_blocks.window_attention` splits a map into windows (one copy), the windows
into heads (a view), then returns heads to channels (a copy) and windows to the map (a copy), and
then ``softmax(Q Kᵀ / √d) V`` (EMO Eq. 3, d = C / heads). :func:`fused_window_attention` gives the
same values with one permutation from the map ``(B, heads·d, n1·h1, n2·w1)`` straight to
``(B·n1·n2, heads, h1·w1, d)`` (grid windows: pixel row = i·n1 + window row; close windows: pixel
row = window row·h1 + i) and one permutation back, written channels-last (the layout of the
convolutions that follow in the inference form); the scale is applied in place. Padding and
cropping are those of the training form, skipped when there is none to do; dropout on the attention
map is an identity in eval mode and is left out. The products stay explicit matmuls, so fvcore
counts the same FLOPs (and on CPU they run faster here than ``F.scaled_dot_product_attention``,
whose small-window path adds masking passes).

:class:`~kdfiqa.models.emo_blocks.LayerNorm2d` normalises over channels with timm's ``LayerNorm2d``
(a channels-last view in and out) and copies the result to a contiguous NCHW map; in the inference
form the result stays channels-last (the same values, no copy), the layout the next convolution wants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .emo_blocks import LayerNorm2d, WindowAttention, iRMB, window_layout

__all__ = ["fused_window_attention", "use_inference_blocks"]

_WINDOW_KINDS = {"grid": (True,), "close": (False,), "hybrid": (True, False)}


def _windows(t: Tensor, heads: int, n1: int, n2: int, grid: bool) -> Tensor:
    """(b, heads·d, H, W) → (b·n1·n2, heads, h1·w1, d) in one copy."""
    b, c, h, w = t.shape
    h1, w1, d = h // n1, w // n2, c // heads
    if grid:
        t = t.view(b, heads, d, h1, n1, w1, n2).permute(0, 4, 6, 1, 3, 5, 2)
    else:
        t = t.view(b, heads, d, n1, h1, n2, w1).permute(0, 3, 5, 1, 4, 6, 2)
    return t.reshape(b * n1 * n2, heads, h1 * w1, d)


def _map(t: Tensor, b: int, n1: int, n2: int, h1: int, w1: int, grid: bool) -> Tensor:
    """Inverse of :func:`_windows`: (b·n1·n2, heads, h1·w1, d) → (b, heads·d, H, W), stored
    channels-last, in one copy."""
    heads, d = t.shape[1], t.shape[3]
    t = t.view(b, n1, n2, heads, h1, w1, d)
    t = t.permute(0, 4, 1, 5, 2, 3, 6) if grid else t.permute(0, 1, 4, 2, 5, 3, 6)
    return t.reshape(b, n1 * h1, n2 * w1, heads * d).permute(0, 3, 1, 2)


def fused_window_attention(x: Tensor, qk: nn.Module, v: nn.Module, *, num_heads: int, window_size: int,
                           kind: str, attn_pre: bool) -> Tensor:
    """:func:`~kdfiqa.models.emo_blocks.window_attention` in eval mode, computed as the module
    docstring says; the output is stored channels-last."""
    kind, (win_h, win_w), (pad_b, pad_r), (n1, n2) = window_layout(kind, x.shape[-2:], window_size)
    b, _, h, w = x.shape
    if pad_b or pad_r:  # a copy only when there is padding to add
        x = F.pad(x, (0, pad_r, 0, pad_b))
    keys_queries = qk(x)
    values = x if attn_pre else v(x)
    c = keys_queries.shape[1] // 2
    scale = (c // num_heads) ** -0.5
    out: Tensor | None = None
    for grid in _WINDOW_KINDS[kind]:
        q = _windows(keys_queries[:, :c], num_heads, n1, n2, grid)  # queries and keys apart: each
        k = _windows(keys_queries[:, c:], num_heads, n1, n2, grid)  # contiguous, as matmul wants
        attn = (q @ k.transpose(-2, -1)).mul_(scale).softmax(dim=-1)
        mixed = _map(attn @ _windows(values, num_heads, n1, n2, grid), b, n1, n2, win_h, win_w, grid)
        out = mixed if out is None else out + mixed
    assert out is not None
    if attn_pre:
        out = v(out)
    return out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)


class _FusedWindowAttention(WindowAttention):
    """:class:`~kdfiqa.models.emo_blocks.WindowAttention` running :func:`fused_window_attention`."""

    def forward(self, x: Tensor) -> Tensor:
        return fused_window_attention(x, self.qk, self.v, num_heads=self.num_heads, window_size=self.window_size,
                                      kind=self.kind, attn_pre=self.attn_pre)


class _FusediRMB(iRMB):  # noqa: N801  (the paper's name)
    """:class:`~kdfiqa.models.emo_blocks.iRMB` whose attention runs :func:`fused_window_attention`."""

    def mix(self, x: Tensor) -> Tensor:
        if self.attn == "none":
            return self.v(x)
        return fused_window_attention(x, self.qk, self.v, num_heads=self.num_heads, window_size=self.window_size,
                                      kind=self.attn, attn_pre=self.attn_pre)


class _ChannelsLastLayerNorm2d(LayerNorm2d):
    """:class:`~kdfiqa.models.emo_blocks.LayerNorm2d` whose output stays channels-last."""

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


_FUSED = {WindowAttention: _FusedWindowAttention, iRMB: _FusediRMB, LayerNorm2d: _ChannelsLastLayerNorm2d}


def use_inference_blocks(model: nn.Module) -> int:
    """Make every EMO/EMOv2 attention module of ``model`` (exactly :class:`WindowAttention`, or an
    :class:`iRMB` with attention) run :func:`fused_window_attention` and every
    :class:`LayerNorm2d` keep its output channels-last, for the modules in eval mode, in place:
    parameters, buffers and names stay. Returns how many modules changed."""
    changed = 0
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is not None and not module.training and getattr(module, "attn", "") != "none":
            module.__class__ = fused
            changed += 1
    return changed
