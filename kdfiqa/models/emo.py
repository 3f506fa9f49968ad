"""EMO and EMOv2 backbones: a configurable stem + stages network, the official presets, weight loading.

:class:`EMOBackbone` assembles a stem and hierarchical stages of :class:`~kdfiqa.models.emo_blocks.iRMB`
(EMO, ICCV 2023) or :class:`~kdfiqa.models.emo_blocks.iiRMB` (EMOv2, arXiv:2412.06674) blocks from
per-stage lists, so custom students can be described in a few lines. Each stage starts with a
down-sampling block (stride-2 depth-wise conv, doubled expansion ratio, no attention, no skip);
output strides are 2 (stem), 4, 8, 16, 32.

The eight registered presets reproduce the official ImageNet models to the parameter and to the
fvcore FLOP (with ``num_classes=1000``, 224x224). Parameter names follow the official code, so
:func:`load_official_emo_weights` loads the released checkpoints without renaming.

From scratch, an EMOv2 preset starts its layer scale at :data:`FROM_SCRATCH_LAYER_SCALE` (1.0), not
the official 1e-6: EMOv2's down-sampling blocks have no skip, so at 1e-6 every stage shrinks its
input a millionfold and a short run predicts a near-constant score (see
``benchmarks/from_scratch_init.py``); 1e-6 is the ImageNet recipe's value for hundreds of epochs.
With ``pretrained=PATH`` the official 1e-6 is kept (the loaded weights replace it anyway), and
``layer_scale=...`` (``--set model.kwargs.layer_scale=1e-6``) always wins. The value is an initial
value only: the parameters, their count and the FLOPs are the same.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, first_line, spelled
from .bounds import Bound
from .emo_blocks import ConvNormAct, PatchEmbed, iiRMB, iRMB, make_norm
from .registry import register_backbone

__all__ = ["EMOBackbone", "FROM_SCRATCH_LAYER_SCALE", "load_official_emo_weights"]

FROM_SCRATCH_LAYER_SCALE = 1.0
"""The initial layer scale of an EMOv2 preset built without pretrained weights (the official 1e-6
needs thousands of steps before the blocks contribute; the module docstring says why)."""

_BLOCKS = {"irmb": iRMB, "iirmb": iiRMB}


def _per_stage(value: Any, n: int, field: str) -> list:
    """Broadcast a scalar to ``n`` stages or check a per-stage list has ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{field} has {len(value)} entries for {n} stages")
        return list(value)
    return [value] * n


def _early_late(n: int, early: Any, late: Any) -> list:
    """EMO's default split: ``early`` for the first half of the stages, ``late`` for the rest."""
    return [early] * (n // 2) + [late] * (n - n // 2)


def _emo_stem(
    in_chans: int, dim: int, norm: str, act: str, dw_kernel_size: int, head_dim: int
) -> nn.ModuleList:
    """EMO stem: a stride-2 conv + BN whose kernel is the first stage's depth-wise kernel size (3 in
    every official preset, as in the official ``MSPatchEmb(kernel_size=dw_kss[0])``), then an
    attention-free iRMB with squeeze-excite (EMO Sec. 4)."""
    return nn.ModuleList([
        PatchEmbed(in_chans, dim, kernel_size=dw_kernel_size, stride=2, norm=norm),
        iRMB(dim, dim, norm_in=False, skip=False, exp_ratio=1.0, norm=norm, act=act, v_proj=False,
             dw_kernel_size=dw_kernel_size, se_ratio=1.0, head_dim=head_dim, attn="none"),
    ])


def _emo2_stem(in_chans: int, dim: int) -> nn.ModuleList:
    """EMOv2 stem: conv3x3 s2-BN-SiLU, depth-wise conv3x3-BN-SiLU, 1x1 conv (official ``get_stem``)."""
    return nn.ModuleList([
        ConvNormAct(in_chans, dim, 3, 2, bias=True, norm="bn", act="silu"),
        ConvNormAct(dim, dim, 3, 1, groups=dim, norm="bn", act="silu"),
        ConvNormAct(dim, dim, 1),
    ])


class EMOBackbone(nn.Module):
    """A hierarchical EMO/EMOv2 network built from per-stage lists.

    Args:
        depths, embed_dims, exp_ratios, head_dims: per stage; the first block of every stage
            down-samples with ``exp_ratio * 2``, later blocks use ``exp_ratio``.
        block: ``"irmb"`` (EMO) or ``"iirmb"`` (EMOv2).
        stem: ``"emo"`` (conv + SE block at ``stem_dim``) or ``"emo2"`` (conv stem at embed_dims[0] / 2).
        norms, acts, dw_kernel_sizes, window_sizes, attn_kinds: per stage (a scalar is broadcast);
            attention kinds are those of :data:`~kdfiqa.models.emo_blocks.ATTENTION_KINDS`. By
            default the first half of the stages use BN, SiLU and no attention, the rest LN, GELU
            and hybrid attention (the EMOv2 layout for four stages).
        attn_pre: attention before (EMO) or after (EMOv2) the value projection.
        layer_scale: initial layer-scale value (EMOv2 1e-6, including down-sampling blocks; 0 = off;
            the registered EMOv2 presets start at :data:`FROM_SCRATCH_LAYER_SCALE` when built
            without pretrained weights).
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all blocks.
        num_classes: > 0 adds the ImageNet-style classifier ``head`` after the final norm and pooling.

    ``forward_features(x)`` is the last stage's map before the final norm (as the official code);
    ``forward_head_input(x)`` applies the final norm ``norm`` (kept even when ``num_classes=0`` so
    official weights load); ``forward(x)`` pools it and applies ``head`` (identity when no classes).
    """

    def __init__(
        self,
        depths: Sequence[int],
        embed_dims: Sequence[int],
        exp_ratios: Sequence[float],
        head_dims: Sequence[int],
        *,
        block: str = "iirmb",
        stem: str = "emo2",
        stem_dim: int | None = None,
        in_chans: int = 3,
        norms: str | Sequence[str] | None = None,
        acts: str | Sequence[str] | None = None,
        dw_kernel_sizes: int | Sequence[int] = 5,
        window_sizes: int | Sequence[int] = 7,
        attn_kinds: str | Sequence[str] | None = None,
        attn_pre: bool = False,
        layer_scale: float = 1e-6,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        n = len(depths)
        embed_dims, exp_ratios, head_dims = (
            _per_stage(v, n, f) for v, f in ((embed_dims, "embed_dims"), (exp_ratios, "exp_ratios"),
                                             (head_dims, "head_dims"))
        )
        norms = _per_stage(norms or _early_late(n, "bn", "ln"), n, "norms")
        acts = _per_stage(acts or _early_late(n, "silu", "gelu"), n, "acts")
        dw_kernel_sizes = _per_stage(dw_kernel_sizes, n, "dw_kernel_sizes")
        window_sizes = _per_stage(window_sizes, n, "window_sizes")
        attn_kinds = _per_stage(attn_kinds or _early_late(n, "none", "hybrid"), n, "attn_kinds")
        if block not in _BLOCKS:
            raise ValueError(f"block {block!r} is not one of {sorted(_BLOCKS)}")
        block_cls = _BLOCKS[block]

        if stem == "emo":
            dim_prev = stem_dim or 24
            self.stage0 = _emo_stem(in_chans, dim_prev, norms[0], acts[0], dw_kernel_sizes[0], head_dims[0])
        elif stem == "emo2":
            dim_prev = stem_dim or embed_dims[0] // 2
            self.stage0 = _emo2_stem(in_chans, dim_prev)
        else:
            raise ValueError(f"stem {stem!r} is not 'emo' or 'emo2'")

        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        for i in range(n):
            blocks = []
            for j in range(depths[i]):
                first = j == 0
                # a down-sampling block always has a depth-wise conv (5x5 when the stage has none)
                dw_kernel_size = dw_kernel_sizes[i] if dw_kernel_sizes[i] > 0 or not first else 5
                blocks.append(block_cls(
                    dim_prev, embed_dims[i],
                    exp_ratio=exp_ratios[i] * (2 if first else 1), norm=norms[i], act=acts[i],
                    dw_kernel_size=dw_kernel_size,
                    stride=2 if first else 1, skip=not first, attn="none" if first else attn_kinds[i],
                    head_dim=head_dims[i], window_size=window_sizes[i], attn_pre=attn_pre,
                    layer_scale=layer_scale, qkv_bias=qkv_bias, drop_path=rates[sum(depths[:i]) + j],
                    attn_drop=attn_drop, proj_drop=proj_drop,
                ))
                dim_prev = embed_dims[i]
            self.add_module(f"stage{i + 1}", nn.ModuleList(blocks))
        self.num_stages = n
        self.num_features = embed_dims[-1]
        self.feature_channels = tuple(embed_dims)
        self.norm = make_norm(norms[-1], embed_dims[-1])
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def stages(self) -> list[nn.ModuleList]:
        """The stem (``stage0``) and the stages, in order."""
        return [getattr(self, f"stage{i}") for i in range(self.num_stages + 1)]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's map (B, num_features, H/32, W/32), before the final norm."""
        for stage in self.stages():
            for blk in stage:
                x = blk(x)
        return x

    def forward_head_input(self, x: Tensor) -> Tensor:
        """The final-normed feature map (B, num_features, H/32, W/32): what a head should pool."""
        return self.norm(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        """Mean-pooled normed features through ``head``: (B, num_classes), or (B, num_features)."""
        return self.head(self.forward_head_input(x).mean((2, 3)))


def _init_weights(m: nn.Module) -> None:
    """Official initialisation: truncated-normal (std 0.02) linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Presets (official configurations: zhangzjn/EMO model/emo.py, zhangzjn/EMOv2 model/lib_emo/emo2.py)
# ---------------------------------------------------------------------------------------------

_EMO = dict(block="irmb", stem="emo", stem_dim=24, dw_kernel_sizes=(3, 3, 5, 5),
            attn_kinds=("none", "none", "grid", "grid"), attn_pre=True, layer_scale=0.0)
_EMO2 = dict(block="iirmb", stem="emo2", dw_kernel_sizes=5,
             attn_kinds=("none", "none", "hybrid", "hybrid"), attn_pre=False, layer_scale=1e-6)

_PRESETS: dict[str, dict[str, Any]] = {
    "emo_1m": dict(_EMO, depths=(2, 2, 8, 3), embed_dims=(32, 48, 80, 168), exp_ratios=(2.0, 2.5, 3.0, 3.5),
                   head_dims=(16, 16, 20, 21), drop_path_rate=0.04036),
    "emo_2m": dict(_EMO, depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200), exp_ratios=(2.0, 2.5, 3.0, 3.5),
                   head_dims=(16, 16, 20, 20), drop_path_rate=0.05),
    "emo_5m": dict(_EMO, depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 288), exp_ratios=(2.0, 3.0, 4.0, 4.0),
                   head_dims=(24, 24, 32, 32), drop_path_rate=0.05),
    "emo_6m": dict(_EMO, depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 320), exp_ratios=(2.0, 3.0, 4.0, 5.0),
                   head_dims=(16, 24, 20, 32), drop_path_rate=0.05),
    "emo2_1m": dict(_EMO2, depths=(2, 2, 8, 3), embed_dims=(32, 48, 80, 180), exp_ratios=(2.0, 2.5, 3.0, 3.5),
                    head_dims=(16, 16, 20, 20), drop_path_rate=0.04036),
    "emo2_2m": dict(_EMO2, depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200),
                    exp_ratios=(2.0, 2.5, 3.0, 3.5), head_dims=(16, 16, 20, 20), drop_path_rate=0.05),
    "emo2_5m": dict(_EMO2, depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 288),
                    exp_ratios=(2.0, 3.0, 4.0, 4.0), head_dims=(16, 24, 32, 32), drop_path_rate=0.05),
    "emo2_20m": dict(_EMO2, depths=(3, 3, 13, 3), embed_dims=(64, 128, 320, 448),
                     exp_ratios=(2.0, 3.0, 4.0, 4.0), head_dims=(16, 32, 32, 32), drop_path_rate=0.1),
}


def _create(
    name: str,
    /,
    *,
    num_classes: int = 0,
    window_size: int | None = None,
    pretrained: bool | str | os.PathLike = False,
    **overrides: Any,
) -> EMOBackbone:
    """Build preset ``name``; ``window_size`` overrides every stage's window (e.g. 8 at 256/512 px).

    ``pretrained`` may be the path of an official checkpoint (see :func:`load_official_emo_weights`);
    ``True`` is refused because kdfiqa never downloads weights. Without it, a preset with layer scale
    starts it at :data:`FROM_SCRATCH_LAYER_SCALE` unless ``layer_scale`` is given.
    """
    if pretrained is True:
        raise ConfigError(
            f"{name}: pretrained=True cannot download weights; give the path of an official checkpoint "
            f"({spelled('--set model.kwargs.pretrained=PATH', 'pretrained=PATH')}; see "
            "kdfiqa.models.load_official_emo_weights for where to get it)"
        )
    preset = _PRESETS[name]
    if not pretrained and preset["layer_scale"] > 0:
        preset = dict(preset, layer_scale=FROM_SCRATCH_LAYER_SCALE)
    kwargs = dict(preset, num_classes=num_classes, **overrides)
    if window_size is not None:
        kwargs["window_sizes"] = window_size
    model = EMOBackbone(**kwargs)
    if pretrained:
        load_official_emo_weights(model, pretrained)
    return model


_FORWARDS = (_create, EMOBackbone)
"""Where the presets' ``**kwargs`` go (what a checkpoint may replay)."""

_WIDTH = Bound(at_least=1, at_most=4096, integer=True, max_items=8)
_WINDOW = Bound(at_least=1, at_most=64, integer=True, max_items=8)
_RATE = Bound(at_least=0, at_most=1)
_BOUNDS = {
    "depths": Bound(at_least=0, at_most=64, integer=True, max_items=8, not_all_zero=True),
    "embed_dims": _WIDTH, "head_dims": _WIDTH, "stem_dim": _WIDTH,
    "exp_ratios": Bound(above=0, at_most=16, max_items=8),
    "window_size": _WINDOW, "window_sizes": _WINDOW, "dw_kernel_sizes": _WINDOW,
    "in_chans": Bound(at_least=1, at_most=64, integer=True),
    "num_classes": Bound(at_least=0, at_most=100_000, integer=True),
    "drop_path_rate": _RATE, "attn_drop": _RATE, "proj_drop": _RATE,
}
"""What the presets' keyword arguments may be: at most 8 stages of 0 to 64 blocks (not all none),
widths up to 4096, expansion ratios in (0, 16], windows and depth-wise kernels up to 64."""


@register_backbone(is_student=True, forwards=_FORWARDS, bounds=_BOUNDS)
def emo_1m(**kwargs: Any) -> EMOBackbone:
    """EMO-1M (ICCV 2023): iRMB, grid windows; 1.36M params / 0.26 GFLOPs with the ImageNet head."""
    return _create("emo_1m", **kwargs)


@register_backbone(is_student=True, forwards=_FORWARDS, bounds=_BOUNDS)
def emo_2m(**kwargs: Any) -> EMOBackbone:
    """EMO-2M (ICCV 2023): iRMB, grid windows; 2.38M params / 0.44 GFLOPs with the ImageNet head."""
    return _create("emo_2m", **kwargs)


@register_backbone(is_student=False, forwards=_FORWARDS, bounds=_BOUNDS)
def emo_5m(**kwargs: Any) -> EMOBackbone:
    """EMO-5M (ICCV 2023): iRMB, grid windows; 5.11M params / 0.90 GFLOPs with the ImageNet head."""
    return _create("emo_5m", **kwargs)


@register_backbone(is_student=False, forwards=_FORWARDS, bounds=_BOUNDS)
def emo_6m(**kwargs: Any) -> EMOBackbone:
    """EMO-6M (ICCV 2023): iRMB, grid windows; 6.17M params / 0.96 GFLOPs with the ImageNet head."""
    return _create("emo_6m", **kwargs)


@register_backbone(is_student=True, forwards=_FORWARDS, bounds=_BOUNDS)
def emo2_1m(**kwargs: Any) -> EMOBackbone:
    """EMOv2-1M: iiRMB, hybrid windows; 1.46M params / 0.28 GFLOPs with the ImageNet head (seed student)."""
    return _create("emo2_1m", **kwargs)


@register_backbone(is_student=True, forwards=_FORWARDS, bounds=_BOUNDS)
def emo2_2m(**kwargs: Any) -> EMOBackbone:
    """EMOv2-2M: iiRMB, hybrid windows; 2.38M params / 0.49 GFLOPs with the ImageNet head."""
    return _create("emo2_2m", **kwargs)


@register_backbone(is_student=False, forwards=_FORWARDS, bounds=_BOUNDS)
def emo2_5m(**kwargs: Any) -> EMOBackbone:
    """EMOv2-5M: iiRMB, hybrid windows; 5.13M params / 1.04 GFLOPs with the ImageNet head (seed teacher)."""
    return _create("emo2_5m", **kwargs)


@register_backbone(is_student=False, forwards=_FORWARDS, bounds=_BOUNDS)
def emo2_20m(**kwargs: Any) -> EMOBackbone:
    """EMOv2-20M: iiRMB, hybrid windows; 20.2M params / 4.02 GFLOPs with the ImageNet head."""
    return _create("emo2_20m", **kwargs)


# ---------------------------------------------------------------------------------------------
# Official weights
# ---------------------------------------------------------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model", "net", "net_E", "model_ema")
_CLASSIFIER_KEYS = ("head.weight", "head.bias")


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """Find the tensor mapping inside a checkpoint and strip DataParallel ``module.`` prefixes."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(
                f"{source}: no state dict found (top-level keys {sorted(obj)[:5]}); expected tensors "
                f"or one of {list(_WRAPPER_KEYS)}"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    state = {}
    for key, value in obj.items():
        if isinstance(value, Tensor):
            state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def _read_checkpoint(path: str | os.PathLike, source: str) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"{source}: no such file; download the official checkpoint first "
                              "(see kdfiqa.models.load_official_emo_weights)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        reason = first_line(exc)
        raise CheckpointError(f"{source}: cannot be loaded as a weights-only checkpoint ({reason})") from exc


def _few(keys: set[str]) -> str:
    shown = sorted(keys)[:3]
    return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_official_emo_weights(
    module: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, Any]
) -> EMOBackbone:
    """Load an official EMO / EMOv2 ImageNet checkpoint into an :class:`EMOBackbone` (or a model whose
    ``backbone`` is one), returning that backbone.

    Every backbone key (parameters and BN buffers) must match by name and shape; the 1000-class
    ``head`` is loaded only when the backbone has a head of the same shape and is dropped otherwise.
    Checkpoints wrapped as ``{"net": ...}``, ``{"state_dict": ...}``, ``{"model": ...}`` and keys
    prefixed by ``module.`` are accepted; files are read with ``torch.load(weights_only=True)``.

    Where to get the files: EMO-1M/2M/5M/6M are ``resources/EMO_*/net.pth`` in
    https://github.com/zhangzjn/EMO (linked from its README table); EMOv2-1M/2M/5M/20M are
    ``EMOv2_*_224.pth`` at https://github.com/zhangzjn/data/tree/main/emov2_pretrained_weights
    (linked from the README of https://github.com/zhangzjn/EMOv2). Build the matching preset
    (``emo_1m`` for EMO-1M, ``emo2_1m`` for EMOv2-1M, ...; ``window_size=8`` for the 256/512 files).

    Raises:
        CheckpointError: unreadable file, or missing/unexpected/mis-shaped backbone keys.
    """
    backbone = module if isinstance(module, EMOBackbone) else getattr(module, "backbone", None)
    if not isinstance(backbone, EMOBackbone):
        raise ConfigError(f"load_official_emo_weights needs an EMO backbone, got {type(module).__name__}")
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "state dict", path_or_state_dict
    else:
        source = os.fspath(path_or_state_dict)
        raw = _read_checkpoint(path_or_state_dict, source)
    state = _unwrap_state_dict(raw, source)

    own = backbone.state_dict()
    given = {k: v for k, v in state.items() if k not in _CLASSIFIER_KEYS}
    expected = {k for k in own if k not in _CLASSIFIER_KEYS}
    missing, unexpected = expected - set(given), set(given) - expected
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise CheckpointError(
            f"{source}: not a checkpoint of this EMO configuration ({'; '.join(parts)}); "
            "build the preset the file was trained as (EMO files: emo_*, EMOv2 files: emo2_*)"
        )
    wrong = {k for k in given if given[k].shape != own[k].shape}
    if wrong:
        k = sorted(wrong)[0]
        raise CheckpointError(
            f"{source}: {k} has shape {tuple(given[k].shape)} but the model expects {tuple(own[k].shape)} "
            f"({len(wrong)} mismatched keys); build the preset the file was trained as"
        )
    if all(k in state and k in own and state[k].shape == own[k].shape for k in _CLASSIFIER_KEYS):
        given.update({k: state[k] for k in _CLASSIFIER_KEYS})
    backbone.load_state_dict(given, strict=False)
    return backbone
