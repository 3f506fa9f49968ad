"""The inference form of a model: an eval-mode copy with its batch norms folded into convolutions,
activations in place, kdfiqa's EMO blocks with fewer copies, and channels-last weights.

In eval mode a batch norm is a fixed per-channel affine map, ``y = γ·(x − μ)/σ + β`` with
``σ = sqrt(running_var + eps)``. When its input is the output of a convolution (or linear layer)
``x = W∗z + b`` that nothing else reads, the two are one convolution with

    W' = W·γ/σ                 (each output channel's filter scaled)
    b' = (b − μ)·γ/σ + β       (b = 0 for a convolution without bias)

and the batch norm becomes an identity (timm's batch norm + activation modules keep their
activation).

What folds is found from what the model computes, not from how its modules are named or ordered,
so the rules hold for kdfiqa's EMO blocks, torchvision's ``Conv2dNormActivation``, timm backbones
and any other network alike: one forward pass (:func:`plan_fusion`) records how often each module
runs, what each receives, and, for every tensor an operation produces, in which modules
tensor-producing operations read it (a ``TorchFunctionMode``). A batch norm is folded when

* it is a plain ``BatchNorm1d/2d/3d`` (or timm's batch norm + activation) with running statistics;
* its input is the output of a ``Conv1d/2d/3d`` or ``Linear`` whose weights no other module shares;
* that convolution and that batch norm each run exactly once in the pass;
* no operation outside the batch norm reads the convolution's output, nor is it a model output.

A batch norm that fails any of these (one after a pooling, a residual sum, an input norm) stays.
By the same record an activation (:data:`INPLACE_ACTIVATIONS`) that runs once, on a tensor that is
no view, no model output and read by nothing else, runs in place: the same values without a fresh
activation map per call. kdfiqa's EMO/EMOv2 window attention and channel layer norms run in
their inference form (:mod:`kdfiqa.models.emo_inference`: one copy into and one out of the windows,
no copy back to NCHW), and 4-D weights are stored channels-last (NHWC), the layout the CPU
convolution kernels run fastest in.

The copy keeps the model's :class:`~kdfiqa.models.deploy.DeployConfig` (a plain attribute, copied
with the module) and its methods (``forward_logits``); its outputs equal the original's eval outputs
up to float rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .deploy import deploy_config
from .emo_inference import use_inference_blocks

__all__ = ["FOLDABLE_CONVS", "INPLACE_ACTIVATIONS", "FusionPlan", "count_batch_norms", "fold_batch_norm", "fuse",
           "plan_fusion"]

FOLDABLE_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layers whose output channel ``c`` is ``W[c] ∗ x + b[c]`` (weight dim 0 = output channels), the
exact types only: a subclass may transform its weight first (weight standardisation), which scaling
would not survive."""

INPLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.ELU, nn.CELU,
                       nn.SELU, nn.LeakyReLU, nn.Hardtanh)
"""Activations with an ``inplace`` option, run in place when nothing else reads their input."""

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NORM_ACT_PARTS = ("drop", "act")
"""What timm's ``BatchNormAct2d`` applies after its batch norm; it folds into ``Sequential(drop, act)``."""


def _is_norm_act(bn: nn.Module) -> bool:
    return type(bn).__name__ == "BatchNormAct2d" and all(hasattr(bn, part) for part in _NORM_ACT_PARTS)


def _foldable_norm(module: nn.Module) -> bool:
    """A batch norm that is a fixed affine map in eval mode and nothing more (or timm's norm + act)."""
    if not isinstance(module, _BATCH_NORMS) or not (type(module) in _BATCH_NORMS or _is_norm_act(module)):
        return False
    return module.track_running_stats and module.running_mean is not None and module.running_var is not None


def count_batch_norms(model: nn.Module) -> int:
    """How many batch-norm modules (any ``_BatchNorm``) ``model`` holds."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclass
class _Trace:
    """What one forward pass showed: how often each module ran, each conv's output, each BN's and
    activation's input, and, for every tensor an operation produced, the modules in which operations
    read it (the innermost module running at the time; 0 outside every module)."""

    calls: dict[int, int] = field(default_factory=dict)
    conv_out: dict[int, Tensor] = field(default_factory=dict)
    module_in: dict[int, Tensor] = field(default_factory=dict)
    readers: dict[int, set[int]] = field(default_factory=dict)
    produced: list[Tensor] = field(default_factory=list)
    """Every tensor an operation returned, kept alive so that ``id`` stays unique during the pass."""
    stack: list[int] = field(default_factory=list)

    def reads(self, tensor: Tensor) -> set[int]:
        """Modules that read ``tensor``; ``{-1}`` for a tensor no operation of the pass produced."""
        return self.readers.get(id(tensor), {-1})


class _ReadRecorder(TorchFunctionMode):
    """Records which tensors each tensor-producing operation reads and which tensors it returns
    (metadata queries such as ``x.shape`` are no reads)."""

    def __init__(self, trace: _Trace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        results = [leaf for leaf in tree_flatten(out)[0] if isinstance(leaf, Tensor)]
        if results:
            where = self.trace.stack[-1] if self.trace.stack else 0
            for leaf in tree_flatten((args, kwargs))[0]:
                if isinstance(leaf, Tensor) and id(leaf) in self.trace.readers:
                    self.trace.readers[id(leaf)].add(where)
            for leaf in results:
                if id(leaf) not in self.trace.readers:
                    self.trace.readers[id(leaf)] = set()
                    self.trace.produced.append(leaf)
        return out


def _install_hooks(model: nn.Module, trace: _Trace) -> list[Any]:
    convs = {id(m) for m in model.modules() if type(m) in FOLDABLE_CONVS}

    def enter(module: nn.Module, inputs: tuple) -> None:
        trace.stack.append(id(module))
        trace.calls[id(module)] = trace.calls.get(id(module), 0) + 1
        if inputs and isinstance(inputs[0], Tensor):
            trace.module_in[id(module)] = inputs[0]

    def leave(module: nn.Module, inputs: tuple, output: Any) -> None:
        trace.stack.pop()
        if id(module) in convs and isinstance(output, Tensor):
            trace.conv_out[id(module)] = output

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    return handles


@dataclass(frozen=True)
class FusionPlan:
    """What :func:`fuse` changes: the (convolution, batch norm) pairs it folds and the activations it
    runs in place, by module name."""

    pairs: tuple[tuple[str, str], ...]
    inplace: tuple[str, ...]


def plan_fusion(model: nn.Module, x: Tensor) -> FusionPlan:
    """Find what folds and what may run in place by running ``model(x)`` once, in its current mode
    and without gradients (the rules are in the module docstring)."""
    trace = _Trace()
    handles = _install_hooks(model, trace)
    try:
        with torch.no_grad(), _ReadRecorder(trace):
            outputs = model(x)
    finally:
        for handle in handles:
            handle.remove()
    returned = {id(leaf) for leaf in tree_flatten(outputs)[0] if isinstance(leaf, Tensor)}
    modules = {id(m): (name, m) for name, m in model.named_modules(remove_duplicate=False)}
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1

    def read_only_by(key: int) -> bool:
        """The input of module ``key`` ran through it once, and nothing else reads or returns it."""
        received = trace.module_in.get(key)
        return (received is not None and trace.calls.get(key) == 1 and trace.reads(received) == {key}
                and id(received) not in returned)

    by_output = {id(out): conv for conv, out in trace.conv_out.items()}
    pairs = []
    for key, (name, module) in modules.items():
        conv = by_output.get(id(trace.module_in.get(key)))
        if (_foldable_norm(module) and conv is not None and trace.calls.get(conv) == 1 and read_only_by(key)
                and all(owners[id(p)] == 1 for p in modules[conv][1].parameters(recurse=False))):
            pairs.append((modules[conv][0], name))
    inplace = [name for key, (name, module) in modules.items()
               if type(module) in INPLACE_ACTIVATIONS and not module.inplace and read_only_by(key)
               and trace.module_in[key]._base is None]
    return FusionPlan(tuple(pairs), tuple(inplace))


def fold_batch_norm(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place: W' = W·γ/σ, b' = (b − μ)·γ/σ + β,
    σ = sqrt(var + eps), computed in float64 and stored in the conv's dtype."""
    weight = conv.weight.detach()
    sigma = (bn.running_var.detach().double() + bn.eps).sqrt()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(sigma)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(sigma)
    scale = gamma / sigma
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(sigma)
    folded_w = weight.double() * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    folded_b = (bias - bn.running_mean.detach().double()) * scale + beta
    conv.weight = nn.Parameter(folded_w.to(weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(folded_b.to(weight.dtype), requires_grad=conv.weight.requires_grad)


def _replacement(bn: nn.Module) -> nn.Module:
    """What a folded batch norm leaves behind: nothing, or timm's dropout + activation."""
    if _is_norm_act(bn):
        return nn.Sequential(*(getattr(bn, part) for part in _NORM_ACT_PARTS))
    return nn.Identity()


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _example_input(model: nn.Module, input_size: int | Sequence[int] | None) -> Tensor:
    from ..budget import parse_input_size

    size = parse_input_size(input_size) if input_size is not None else deploy_config(model).input_size
    first = next(iter(model.parameters()), None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, *size, generator=generator)
    return x if first is None else x.to(device=first.device, dtype=first.dtype)


def fuse(model: nn.Module, *, input_size: int | Sequence[int] | None = None,
         channels_last: bool = True) -> nn.Module:
    """The inference form of ``model``: a deep copy in eval mode with every foldable batch norm
    folded into the convolution before it (:func:`fold_batch_norm`), activations that are the only
    reader of their input run in place (:func:`plan_fusion` finds both), EMO window attention and layer
    norms with fewer copies (:func:`~kdfiqa.models.emo_inference.use_inference_blocks`), and, with
    ``channels_last``, 4-D weights in channels-last memory format (the convolutions then run
    channels-last whatever the input's layout).

    ``input_size`` is the size of the one tracing pass (default: the deploy config's); the plan does
    not depend on it. ``model`` itself is left untouched; the copy keeps its deploy config and
    methods. The copy is meant for inference: activations run in place are not for autograd.
    """
    fused = copy.deepcopy(model).eval()
    plan = plan_fusion(fused, _example_input(fused, input_size))
    for conv_name, bn_name in plan.pairs:
        bn = fused.get_submodule(bn_name)
        fold_batch_norm(fused.get_submodule(conv_name), bn)
        _replace(fused, bn_name, _replacement(bn))
    for name in plan.inplace:
        fused.get_submodule(name).inplace = True
    use_inference_blocks(fused)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    return fused
