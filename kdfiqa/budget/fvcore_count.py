"""fvcore's count, as kdfiqa runs it: the fused-attention handle, the probe input, the model kept
exactly as it came, and per-module counts made exclusive.

Shared by the budget check (:mod:`kdfiqa.budget.core`) and the cross-check
(:mod:`kdfiqa.budget.crosscheck`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .._warnings import import_fvcore_nn
from ..errors import first_line
from .limits import MeasurementError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["sdpa_flop_jit", "preserved", "probe_input", "fvcore_total", "exclusive_counts"]


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """FLOPs of fused attention as the explicit matmuls Q·Kᵀ then softmax(·)·V.

    For ``q`` of shape (..., L, E), ``k`` (..., S, E) and ``v`` (..., S, Ev), fvcore counts the written
    out form as prod(q.shape)·S + prod(q.shape[:-1])·S·Ev multiply-adds; this handle returns the same.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    length, keys = q[-2], k[-2]
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * length * keys * q[-1] + batch * length * keys * v[-1]


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode; on exit its modes, buffers, parameters, ``requires_grad`` and
    ``.grad`` as they were."""
    import torch

    from ..modes import evaluating

    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
             if isinstance(v, torch.Tensor)}
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    grads = {n: p.grad for n, p in params.items()}
    with evaluating(model, no_grad=False):
        try:
            yield
        finally:
            with torch.no_grad():
                current = model.state_dict(keep_vars=True)
                for k, v in state.items():
                    current[k].copy_(v)
            for n, p in params.items():
                p.requires_grad_(flags[n])
                p.grad = grads[n]


def probe_input(model: nn.Module, input_size: tuple[int, int, int], batch_size: int,
           kind: str = "randn") -> torch.Tensor:
    import torch

    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    shape = (batch_size, *input_size)
    g = torch.Generator().manual_seed(0)
    x = {"randn": lambda: torch.randn(shape, generator=g),
         "positive": lambda: torch.rand(shape, generator=g) + 1.0,
         "negative": lambda: -torch.rand(shape, generator=g) - 1.0}[kind]()
    return x.to(device=device, dtype=dtype)


def _analysis(model: nn.Module, x: torch.Tensor):
    fvnn = import_fvcore_nn()
    analysis = fvnn.FlopCountAnalysis(model, x)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def fvcore_total(model: nn.Module, x: torch.Tensor, where: str) -> Any:
    import torch

    analysis = _analysis(model, x)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis.total()
    except Exception as exc:  # fvcore wraps tracing failures of every kind
        reason = first_line(exc)
        raise MeasurementError(
            f"cannot measure {where}: fvcore could not trace it ({reason}); "
            "a model that cannot be traced is never reported as within budget") from exc
    return analysis


def exclusive_counts(inclusive: Mapping[str, Counter]) -> dict[str, Counter]:
    """Each module's own counts from per-module counts that include their sub-modules' (fvcore's
    ``by_module``, FlopCounterMode's): every module's counts are subtracted from its nearest ancestor
    present (the root ``""`` when none is)."""
    own = {name: Counter(counts) for name, counts in inclusive.items()}
    for name, counts in inclusive.items():
        if name:
            parent = name.rpartition(".")[0]
            while parent not in own and parent:
                parent = parent.rpartition(".")[0]
            own.setdefault(parent, Counter()).subtract(counts)
    return own
