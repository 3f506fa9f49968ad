"""A second, independent counter beside fvcore: torch's ``FlopCounterMode``, compared module by module.

Verdicts stay fvcore's (:mod:`kdfiqa.budget`, the challenge's counter); this module says where an
independent counter agrees with it and, where it does not, which operators make the difference.

The two counters see a model differently:

* fvcore traces the model with TorchScript and counts TorchScript operators (``aten::linear``,
  ``aten::matmul``, ``aten::einsum``, ``aten::_convolution``, norms, upsampling, adaptive pooling),
  one multiply-add as one FLOP, with kdfiqa's handle charging ``scaled_dot_product_attention`` as the
  two matmuls it replaces (:func:`kdfiqa.budget.fvcore_count.sdpa_flop_jit`).
* ``torch.utils.flop_counter.FlopCounterMode`` runs the model eagerly and counts the operators that
  reach the dispatcher and have a formula in its ``flop_registry``: matrix products (``mm``,
  ``addmm``, ``bmm``, ``baddbmm``), ``convolution`` and the fused attention kernels, **two FLOPs per
  multiply-add** ("matrix multiplication counts 2 * m * n * k FLOPs", its module documentation).
  Its counts are halved here, so both sides are in multiply-adds (MACs). Norms, upsampling, pooling
  and elementwise operators have no formula and count zero; an operator it runs without a formula
  (for instance the CPU kernel ``_scaled_dot_product_flash_attention_for_cpu``) counts zero too.

The same product appears under different names on the two sides (fvcore's ``linear`` is
FlopCounterMode's ``addmm``), so operators are compared by family (:func:`operator_family`): a module
disagrees when some family's MACs differ, and the reason names the operators each counter saw there.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import KdfiqaError
from ..size import format_size
from .fvcore_count import exclusive_counts, fvcore_total, preserved, probe_input
from .limits import InputSize, parse_input_size

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Disagreement", "CrossCheck", "cross_check", "operator_family"]

FLOPS_PER_MAC = 2
"""FlopCounterMode's convention for every formula it has (matmul, convolution, attention)."""

_MATMUL = frozenset({"linear", "addmm", "mm", "bmm", "baddbmm", "addbmm", "matmul", "einsum", "_scaled_mm"})
"""Operator names, on either side, of a (batched) matrix product: fvcore counts ``linear``,
``matmul`` and ``einsum`` before decomposition, FlopCounterMode the ``mm``/``bmm`` they become."""


@dataclass(frozen=True)
class Disagreement:
    """One module whose own MACs (sub-modules excluded) differ between the counters, and why."""

    module: str
    fvcore_macs: int
    flop_counter_macs: int
    operators: tuple[str, ...]
    """The operators, of either counter, whose counts differ here."""
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"module": self.module or "(model)", "fvcore_macs": self.fvcore_macs,
                "flop_counter_macs": self.flop_counter_macs, "operators": list(self.operators),
                "reason": self.reason}


@dataclass
class CrossCheck:
    """fvcore's and FlopCounterMode's totals for one model at one size, in multiply-adds, and the
    modules where they disagree, the largest difference first."""

    input_size: tuple[int, int, int]
    fvcore_macs: int
    flop_counter_macs: int
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def relative_gap(self) -> float:
        """(FlopCounterMode - fvcore) / fvcore: negative when FlopCounterMode counts less."""
        return (self.flop_counter_macs - self.fvcore_macs) / max(self.fvcore_macs, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "fvcore_macs": self.fvcore_macs,
                "flop_counter_macs": self.flop_counter_macs, "relative_gap": self.relative_gap,
                "disagreements": [d.as_dict() for d in self.disagreements]}


def _bare(op: Any) -> str:
    """``aten::linear`` (fvcore), ``aten.addmm`` (FlopCounterMode) → ``linear``, ``addmm``."""
    text = str(op)
    for prefix in ("aten::", "aten."):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def operator_family(op: str) -> str:
    """What an operator computes, ``attention``, ``convolution``, ``matmul`` or else its own name, so
    that both counters' names for the same work compare equal."""
    if "attention" in op or "scaled_dot_product" in op:
        return "attention"
    if op.lstrip("_").startswith("conv"):
        return "convolution"
    if op in _MATMUL:
        return "matmul"
    return op


def _exclusive(inclusive: Mapping[str, Counter]) -> dict[str, Counter]:
    """Per-module counts without their sub-modules' (:func:`kdfiqa.budget.fvcore_count.exclusive_counts`), the
    operators left at zero or below dropped."""
    return {name: +counts for name, counts in exclusive_counts(inclusive).items()}


def _module_name(tracked: str, root: str) -> str | None:
    """FlopCounterMode's ``Root.a.b`` (its ModuleTracker prefixes the root's class name) → fvcore's
    ``a.b``; ``None`` for ``Global``, the total."""
    if tracked == root:
        return ""
    if tracked.startswith(root + "."):
        return tracked[len(root) + 1:]
    return None


def _uncounted_recorder(registry: Mapping[Any, Any]):
    """A dispatch mode that records, per innermost module, the operators run without a formula in
    ``registry``; entered outside FlopCounterMode, it sees exactly the operators that counter ran."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    class UncountedOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.tracker = ModuleTracker()
            self.seen: dict[str, Counter] = defaultdict(Counter)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            packet = func._overloadpacket
            if packet not in registry:
                active = self.tracker.parents - {"Global"}
                self.seen[max(active, key=lambda n: n.count("."), default="")][_bare(packet)] += 1
            return func(*args, **(kwargs or {}))

        def __enter__(self):
            self.tracker.__enter__()
            return super().__enter__()

        def __exit__(self, *exc):
            super().__exit__(*exc)
            self.tracker.__exit__(*exc)

    return UncountedOps()


def _flop_counter(model: nn.Module, x: Any) -> tuple[dict[str, Counter], dict[str, Counter], int]:
    """FlopCounterMode on one forward pass: inclusive MACs per fvcore module name and operator, the
    operators it ran without a formula per innermost module, and its total MACs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    recorder = _uncounted_recorder(counter.flop_registry)
    with torch.no_grad(), recorder, counter:
        model(x)
    root = type(model).__name__
    inclusive: dict[str, Counter] = {}
    for tracked, counts in counter.get_flop_counts().items():
        name = _module_name(tracked, root)
        if name is not None:
            inclusive[name] = Counter({_bare(op): n // FLOPS_PER_MAC for op, n in counts.items()})
    uncounted = {name: ops for tracked, ops in recorder.seen.items()
                 if (name := _module_name(tracked, root)) is not None}
    return inclusive, uncounted, counter.get_total_flops() // FLOPS_PER_MAC


def _by_family(counts: Counter) -> Counter:
    families: Counter = Counter()
    for op, n in counts.items():
        families[operator_family(op)] += n
    return families


def _matching(family: str, op_names: Iterable[str], seen: Iterable[str]) -> list[str]:
    """The operators in ``seen`` of ``family`` or whose names contain one of ``op_names``
    (``batch_norm`` is in ``_native_batch_norm_legit_no_training``)."""
    stems = [name.lstrip("_") for name in op_names]
    return sorted({op for op in seen if operator_family(op) == family or any(stem and stem in op for stem in stems)})


def _reason(family: str, fv: Counter, fc: Counter, fc_uncounted: Counter, fv_uncounted: Counter) -> str:
    """Why ``family``'s MACs differ in one module, from the operators each counter saw there."""
    fv_ops = sorted(op for op in fv if operator_family(op) == family)
    fc_ops = sorted(op for op in fc if operator_family(op) == family)
    fv_n = sum(fv[op] for op in fv_ops)
    fc_n = sum(fc[op] for op in fc_ops)
    if not fc_ops:
        ran = _matching(family, fv_ops, fc_uncounted)
        why = (f"FlopCounterMode ran {', '.join(ran)} and has no formula for it" if ran
               else "FlopCounterMode counted nothing for it")
        return f"{'/'.join(fv_ops)}: fvcore {fv_n:,} MACs, FlopCounterMode 0 ({why})"
    if not fv_ops:
        met = _matching(family, fc_ops, fv_uncounted)
        why = f"fvcore met {', '.join(met)} and does not count it" if met else "fvcore counted nothing for it"
        return f"{'/'.join(fc_ops)}: FlopCounterMode {fc_n:,} MACs, fvcore 0 ({why})"
    return (f"{family}: fvcore {fv_n:,} MACs ({'/'.join(fv_ops)}) vs FlopCounterMode {fc_n:,} "
            f"({'/'.join(fc_ops)})")


def cross_check(model: nn.Module, input_size: InputSize, *, batch_size: int = 1) -> CrossCheck:
    """Count ``model`` at ``input_size`` with fvcore (as :func:`kdfiqa.budget.measure` does) and with
    ``FlopCounterMode``, both in multiply-adds, on the same input, in eval mode, with no gradient.

    Returns the totals and every module whose own count differs, with the operators that make the
    difference. The model is handed back as it came. Raises
    :class:`~kdfiqa.budget.MeasurementError` when fvcore cannot trace the model.
    """
    if find_spec("torch.utils.module_tracker") is None:  # what FlopCounterMode's per-module breakdown uses
        raise KdfiqaError("the cross-check needs torch >= 2.3, whose FlopCounterMode counts per module")
    size = parse_input_size(input_size)
    where = f"{getattr(model, 'model_name', type(model).__name__)} at {format_size(size, channels=True)}"
    with preserved(model):
        x = probe_input(model, size, batch_size)
        analysis = fvcore_total(model, x, where)
        fv_inclusive = {name: Counter(ops) for name, ops in analysis.by_module_and_operator().items()}
        fv_uncounted_inclusive = {name: Counter({_bare(op): n for op, n in analysis.unsupported_ops(name).items()})
                                  for name in fv_inclusive}
        fc_inclusive, fc_uncounted, fc_total = _flop_counter(model, x)
    fv, fc = _exclusive(fv_inclusive), _exclusive(fc_inclusive)
    fv_uncounted = _exclusive(fv_uncounted_inclusive)
    disagreements = []
    for module in sorted(set(fv) | set(fc)):
        fv_own, fc_own = fv.get(module, Counter()), fc.get(module, Counter())
        fv_families, fc_families = _by_family(fv_own), _by_family(fc_own)
        differing = sorted(f for f in set(fv_families) | set(fc_families) if fv_families[f] != fc_families[f])
        if differing:
            operators = tuple(sorted({op for op in [*fv_own, *fc_own] if operator_family(op) in differing}))
            reason = "; ".join(_reason(f, fv_own, fc_own, fc_uncounted.get(module, Counter()),
                                       fv_uncounted.get(module, Counter())) for f in differing)
            disagreements.append(Disagreement(module, sum(fv_own.values()), sum(fc_own.values()), operators,
                                              reason))
    disagreements.sort(key=lambda d: (-abs(d.fvcore_macs - d.flop_counter_macs), d.module))
    return CrossCheck(size, int(analysis.total()), fc_total, disagreements)
