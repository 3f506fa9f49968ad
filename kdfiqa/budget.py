"""Compute budgets: measure a model with fvcore and refuse one that does not fit.

Counting follows fvcore's ``FlopCountAnalysis``, the counter the VQualA 2025 FIQA challenge used: the
model in eval mode, batch 1, at its inference resolution, one multiply-add counted as one FLOP. Two
deliberate departures keep the check honest:

* ``aten::scaled_dot_product_attention`` (fused attention) is counted as the two matmuls it replaces,
  Q·Kᵀ and A·V, exactly as fvcore counts them when written out. fvcore itself skips the fused op, so
  without this a model could pass by switching to fused attention.
* A model that fvcore cannot trace, or whose count changes with the input values (data-dependent
  control flow), is an error, never a pass.

The model is handed back as it came: the same train/eval flags, buffers (batch-norm statistics),
parameters, ``requires_grad`` flags and gradients.

torch and fvcore are imported by the functions that measure, so the budgets themselves
(:class:`Budget`, :data:`VQUALA2025`, :func:`parse_input_size`) cost nothing to import: ``kdfiqa
budget --help`` does not load torch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, Union

from ._warnings import import_fvcore_nn
from .errors import ConfigError, KdfiqaError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Budget",
    "VQUALA2025",
    "CostReport",
    "BudgetExceeded",
    "MeasurementError",
    "measure",
    "check",
    "parse_input_size",
]

InputSize = Union[int, Sequence[int]]


@dataclass(frozen=True)
class Budget:
    """An upper bound on compute (GFLOPs, fvcore convention) and on the parameter count."""

    max_gflops: float
    max_params: int
    name: str = "custom"
    deploy_size: tuple[int, int, int] | None = None
    """The (C, H, W) a student of this budget is deployed at, where training checks it by default
    (the challenge's 224x224); ``None``: the model's own size."""

    def __post_init__(self) -> None:
        gflops, params = self.max_gflops, self.max_params
        if isinstance(gflops, bool) or not isinstance(gflops, (int, float)) or math.isnan(gflops) or gflops <= 0:
            raise ConfigError(f"budget {self.name}: max_gflops (--max-gflops) {gflops!r} must be a number > 0")
        if isinstance(params, bool) or not isinstance(params, numbers.Integral) or params <= 0:
            raise ConfigError(f"budget {self.name}: max_params (--max-params) {params!r} must be an integer > 0")

    def fits(self, report: "CostReport") -> bool:
        """Whether ``report`` is within both limits (limits are inclusive)."""
        return report.gflops <= self.max_gflops and report.params <= self.max_params

    def sizes_for(self, size: Sequence[int]) -> list[tuple[int, int, int]]:
        """Where a model that runs at ``size`` (C, H, W) is checked against this budget: the budget's
        deployment size, or ``size`` where that is larger (both when neither covers the other), so
        that training a student small never dodges the deployment check."""
        own = tuple(int(d) for d in size)
        deploy = self.deploy_size
        if deploy is None or (own[1] >= deploy[1] and own[2] >= deploy[2]):
            return [own]  # type: ignore[list-item]
        if deploy[1] >= own[1] and deploy[2] >= own[2]:
            return [tuple(deploy)]  # type: ignore[list-item]
        return [own, tuple(deploy)]  # type: ignore[list-item]

    def describe(self) -> str:
        return f"{self.name} (<= {self.max_gflops:g} GFLOPs, <= {self.max_params:,} params)"


VQUALA2025 = Budget(max_gflops=0.5, max_params=5_000_000, name="vquala2025", deploy_size=(3, 224, 224))
"""The VQualA 2025 FIQA challenge's limits: 0.5 GFLOPs (fvcore) and 5 M parameters."""


@dataclass
class CostReport:
    """What :func:`measure` found for one model at one input size."""

    flops: int
    params: int
    input_size: tuple[int, int, int]
    batch_size: int = 1
    by_module: dict[str, int] = field(default_factory=dict)
    """FLOPs spent in each module's own code, its sub-modules excluded (they sum to ``flops``)."""
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    """Operators fvcore met but does not count (activations, adds, pooling ...), with occurrences."""
    unused_params: list[str] = field(default_factory=list)
    """Parameters forward never uses: they count towards ``params`` without doing any work."""

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def costliest(self, k: int = 5) -> list[tuple[str, int]]:
        """The ``k`` modules with the most FLOPs of their own, costliest first."""
        ranked = sorted(self.by_module.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(name or "(model)", n) for name, n in ranked[:k] if n > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "flops": self.flops,
            "gflops": self.gflops,
            "params": self.params,
        }


class BudgetExceeded(KdfiqaError):
    """A model is over its budget at some resolution; the message says where the cost goes."""

    def __init__(self, budget: Budget, report: CostReport, model_name: str = "model") -> None:
        self.budget = budget
        self.report = report
        c, h, w = report.input_size
        over = []
        if report.gflops > budget.max_gflops:
            shown = f"{report.gflops:.4f} GFLOPs"
            if round(report.gflops, 4) <= budget.max_gflops:  # just over: rounding would hide by how much
                shown = f"{report.gflops:.9f} GFLOPs ({report.flops:,} FLOPs)"
            over.append(f"{shown} > {budget.max_gflops:g} allowed")
        if report.params > budget.max_params:
            over.append(f"{report.params:,} params > {budget.max_params:,} allowed")
        lines = [f"{model_name} exceeds budget {budget.name} at {c}x{h}x{w}: " + "; ".join(over)]
        lines.append("costliest modules: " + ", ".join(
            f"{name} {n / 1e9:.4f} GFLOPs" for name, n in report.costliest(5)))
        if report.unused_params:
            lines.append(f"{len(report.unused_params)} parameter tensors are never used by forward "
                         f"(e.g. {report.unused_params[0]}): they still count")
        super().__init__("\n".join(lines))


class MeasurementError(KdfiqaError):
    """fvcore could not measure the model, so no verdict can be given."""


MAX_SIDE = 16384
"""The largest height or width an input size may have (a 16384x16384 float image is 3 GiB): a larger
one is a typo, refused before anything is allocated."""


def parse_input_size(size: InputSize) -> tuple[int, int, int]:
    """Normalise ``224``, ``(224, 336)``, ``(3, 224, 336)`` or ``"224x336"`` to ``(C, H, W)``; sides
    run from 1 to :data:`MAX_SIDE`."""
    if isinstance(size, str):
        try:
            size = tuple(int(p) for p in size.lower().split("x"))
        except ValueError:
            raise KdfiqaError(f"input size {size!r} is not of the form 224, 224x336 or 3x224x336") from None
        if len(size) == 1:
            size = size[0]
    if isinstance(size, int):
        dims: tuple[int, ...] = (3, size, size)
    else:
        dims = tuple(int(d) for d in size)
        if len(dims) == 2:
            dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise KdfiqaError(f"input size {size!r} must be H, (H, W) or (C, H, W) with positive sizes")
    if max(dims[1:]) > MAX_SIDE:
        raise KdfiqaError(f"input size {size!r}: a side over {MAX_SIDE} pixels is not an image size kdfiqa runs at")
    return dims  # type: ignore[return-value]


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
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
def _preserved(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode; on exit its modes, buffers, parameters, ``requires_grad`` and
    ``.grad`` as they were."""
    import torch

    from .modes import evaluating

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


def _probe(model: nn.Module, input_size: tuple[int, int, int], batch_size: int,
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
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def _total(model: nn.Module, x: torch.Tensor, where: str) -> Any:
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


def _self_flops(by_module: Counter) -> dict[str, int]:
    own = exclusive_counts({name: Counter(flops=n) for name, n in by_module.items()})
    return {name: int(counts["flops"]) for name, counts in own.items() if counts["flops"]}


def _unused_parameters(model: nn.Module, x: torch.Tensor) -> list[str]:
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if not named:
        return []
    for _, p in named:
        p.requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        outs = [t for t in (out if isinstance(out, (tuple, list)) else [out])
                if isinstance(t, torch.Tensor) and t.requires_grad]
        if not outs:
            return []
        total = sum(t.float().sum() for t in outs)
        grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


UNUSED_PROBE_SIDE = 64
"""Side of the small input used to find unused parameters: which parameters forward uses does not
depend on the resolution, and a backward pass at 64x64 costs a fraction of one at 224x224."""


def _unused_parameters_cheaply(model: nn.Module, size: tuple[int, int, int], batch_size: int,
                               full: torch.Tensor) -> list[str]:
    """:func:`_unused_parameters` on a small probe, or at full size for models that reject it."""
    c, h, w = size
    small = (c, min(h, UNUSED_PROBE_SIDE), min(w, UNUSED_PROBE_SIDE))
    probes = [_probe(model, small, batch_size)] if small != size else []
    for x in [*probes, full]:
        try:
            return _unused_parameters(model, x)
        except Exception:  # a model with a fixed input size, or a non-differentiable output
            continue
    return []


def measure(model: nn.Module, input_size: InputSize, *, batch_size: int = 1,
            strict: bool = False) -> CostReport:
    """Count FLOPs (fvcore convention) and parameters of ``model`` at ``input_size``.

    Args:
        model: any ``nn.Module`` taking one image tensor (B, C, H, W).
        input_size: ``224``, ``(224, 336)`` or ``(3, 224, 336)``.
        batch_size: FLOPs scale linearly with it; budgets are defined at 1.

        strict: also trace with inputs of other sign and scale and raise
            :class:`MeasurementError` when the count changes (data-dependent control flow).

    The model is measured in eval mode with no gradient and restored exactly afterwards.
    Raises :class:`MeasurementError` when fvcore cannot trace it.
    """
    size = parse_input_size(input_size)
    fvnn = import_fvcore_nn()
    with _preserved(model):
        x = _probe(model, size, batch_size)
        where = f"{getattr(model, 'model_name', type(model).__name__)} at {'x'.join(map(str, size))}"
        analysis = _total(model, x, where)
        report = CostReport(
            flops=int(analysis.total()),
            params=int(fvnn.parameter_count(model)[""]),
            input_size=size,
            batch_size=batch_size,
            by_module=_self_flops(analysis.by_module()),
            uncounted_ops=dict(analysis.unsupported_ops()),
        )
        report.unused_params = _unused_parameters_cheaply(model, size, batch_size, x)
    if strict:
        _assert_input_independent(model, report, where)
    return report


def _assert_input_independent(model: nn.Module, report: CostReport, where: str) -> None:
    """Trace again with inputs of other sign and scale; a different count means data-dependent cost."""
    with _preserved(model):
        for kind in ("positive", "negative"):
            total = int(_total(model, _probe(model, report.input_size, report.batch_size, kind),
                               where).total())
            if total != report.flops:
                raise MeasurementError(
                    f"cannot measure {where}: its FLOP count depends on the input values "
                    f"({report.flops:,} vs {total:,}); make control flow independent of the data")


def check(model: nn.Module, budget: Budget | str, input_sizes: InputSize | Iterable[InputSize],
          *, model_name: str | None = None) -> list[CostReport]:
    """Measure ``model`` at every size in ``input_sizes`` and raise if any is over ``budget`` (a
    :class:`Budget` or a registered name such as ``"vquala2025"``).

    ``input_sizes`` is one size (an int, a string such as ``"224x336"``, or a tuple of ints) or a list
    of sizes: ``[224, (224, 336)]`` checks two resolutions.

    A model that will run at several (or arbitrary) resolutions must be checked at the largest it will
    see. Raises :class:`BudgetExceeded` naming the budget, the resolution, measured vs allowed and the
    five costliest modules, or :class:`MeasurementError` when the model cannot be measured.
    Returns the reports, one per size, when everything fits.
    """
    if isinstance(input_sizes, (int, str)) or (
            isinstance(input_sizes, tuple) and all(isinstance(d, int) for d in input_sizes)):
        input_sizes = [input_sizes]  # one size: 224, "224x336", (224, 336) or (3, 224, 336)
    sizes = [parse_input_size(s) for s in input_sizes]  # type: ignore[union-attr]
    if not sizes:
        raise KdfiqaError("check() needs at least one input size")
    from .budget_presets import as_budget

    budget = as_budget(budget)
    name = model_name or getattr(model, "model_name", None) or type(model).__name__
    reports = [measure(model, size, strict=True) for size in sizes]
    for report in reports:
        if not budget.fits(report):
            raise BudgetExceeded(budget, report, name)
    return reports
