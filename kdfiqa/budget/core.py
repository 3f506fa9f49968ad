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
(:mod:`kdfiqa.budget.limits`, :mod:`kdfiqa.budget.presets`) cost nothing to import: ``kdfiqa
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterable

from .._warnings import import_fvcore_nn
from ..errors import KdfiqaError
from ..size import format_size
from .fvcore_count import exclusive_counts, fvcore_total, preserved, probe_input
from .limits import Budget, BudgetExceeded, CostReport, InputSize, MeasurementError, parse_input_size
from .presets import as_budget

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["measure", "check"]


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
    probes = [probe_input(model, small, batch_size)] if small != size else []
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
    with preserved(model):
        x = probe_input(model, size, batch_size)
        where = f"{getattr(model, 'model_name', type(model).__name__)} at {format_size(size, channels=True)}"
        analysis = fvcore_total(model, x, where)
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
    with preserved(model):
        for kind in ("positive", "negative"):
            total = int(fvcore_total(model, probe_input(model, report.input_size, report.batch_size, kind),
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
    budget = as_budget(budget)
    name = model_name or getattr(model, "model_name", None) or type(model).__name__
    reports = [measure(model, size, strict=True) for size in sizes]
    for report in reports:
        if not budget.fits(report):
            raise BudgetExceeded(budget, report, name)
    return reports
