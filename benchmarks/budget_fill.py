"""Filling the budget: :func:`kdfiqa.budget.fill.fill_budget` (``kdfiqa budget --fill``) on every
registered student under vquala2025, with torch's FlopCounterMode beside fvcore at 224x224.

Goal (issue #15): each model's boundary (the largest size on the 32-pixel grid that fits, and the next,
which does not) is found in under 15 fvcore traces. Traces are counted by wrapping the measuring
function handed to ``fill_budget``: each call of :func:`kdfiqa.budget.measure` (not strict) is one
fvcore ``FlopCountAnalysis`` trace. A model is searched at its own deployment aspect ratio
(``dualbranch_fiqa``'s 224x336 is 2:3).

The cross-check columns are :func:`kdfiqa.budget.crosscheck.cross_check` at 224x224, in millions of
multiply-adds, and its time beside ``measure(strict=True)``'s (what ``kdfiqa budget`` runs per size),
the two timed interleaved. Quick mode, for the test suite: emo2_1m alone, under a fifth of the
GFLOPs, cross-checked at 64x64.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from torch import nn

from kdfiqa.budget import VQUALA2025, Budget, CostReport, measure
from kdfiqa.budget.crosscheck import CrossCheck, cross_check, operator_family
from kdfiqa.budget.fill import fill_budget
from kdfiqa.models import create_model, list_models, model_info

from .common import SHARED_MACHINE_NOTE, interleaved_medians

TITLE = "Budget fill: the largest input that fits vquala2025"
MAX_TRACES = 15
STRIDE = 32
CROSS_CHECK_SIZE = 224
QUICK_MODELS = ("emo2_1m",)
PRODUCTS = frozenset({"convolution", "matmul", "attention"})
"""The operator families both counters have formulas for (:func:`operator_family`)."""
QUICK_BUDGET = Budget(max_gflops=VQUALA2025.max_gflops / 5, max_params=VQUALA2025.max_params,
                      name="vquala2025/5")
"""Quick mode's budget: a fifth of the GFLOPs, so that the sizes searched, and the traces, stay small."""
QUICK_CROSS_CHECK_SIZE = 64

Measure = Callable[[nn.Module, "tuple[int, int, int]"], CostReport]


def _counted(measure_fn: Measure) -> tuple[Measure, list[tuple[int, int, int]]]:
    """``measure_fn`` and the list of sizes it has been called at, one entry per fvcore trace."""
    sizes: list[tuple[int, int, int]] = []

    def counted(model: nn.Module, size: tuple[int, int, int]) -> CostReport:
        sizes.append(size)
        return measure_fn(model, size)

    return counted, sizes


def _aspect(name: str) -> tuple[int, int]:
    _, height, width = model_info(name).default_input_size
    divisor = math.gcd(height, width)
    return height // divisor, width // divisor


def _side(report: CostReport | None) -> str:
    return "x".join(map(str, report.input_size[1:])) if report else "-"


def _row(name: str, budget: Budget, side: int, repeats: int) -> tuple[dict, CrossCheck]:
    model = create_model(name)
    counted, sizes = _counted(measure)
    start = time.perf_counter()
    result = fill_budget(model, budget, stride=STRIDE, aspect=_aspect(name), measure_fn=counted)
    seconds = time.perf_counter() - start
    assert len(sizes) == len(set(sizes)) == result.traces, (name, sizes, result.traces)
    checked = cross_check(model, side)
    timing = interleaved_medians({"measure": lambda: measure(model, side, strict=True),
                                  "cross_check": lambda: cross_check(model, side)},
                                 repeats=repeats, warmup=0)
    operators = sorted({op for d in checked.disagreements for op in d.operators})
    return {
        "model": name, "aspect": ":".join(map(str, result.aspect)),
        "fits": _side(result.fits), "fits GFLOPs": result.fits.gflops if result.fits else "-",
        "over": _side(result.over), "over GFLOPs": result.over.gflops if result.over else "-",
        "traces": len(sizes), "seconds": seconds,
        "fvcore MMACs": checked.fvcore_macs / 1e6,
        "FlopCounterMode MMACs": checked.flop_counter_macs / 1e6,
        "gap %": 100 * checked.relative_gap,
        "disagreeing modules": len(checked.disagreements),
        "operators that differ": ", ".join(operators) or "-",
        "cross-check s": timing["cross_check"],
        "cross-check / measure time": timing["cross_check"] / timing["measure"],
    }, checked


def run(quick: bool) -> dict:
    names = [n for n in list_models() if model_info(n).is_student and (not quick or n in QUICK_MODELS)]
    budget, side = (QUICK_BUDGET, QUICK_CROSS_CHECK_SIZE) if quick else (VQUALA2025, CROSS_CHECK_SIZE)
    rows, checks = [], []
    for name in names:
        print(f"  {name}", flush=True)
        row, checked = _row(name, budget, side, repeats=1 if quick else 3)
        rows.append(row)
        checks.append(checked)
    met = all(row["traces"] < MAX_TRACES for row in rows)
    worst = max(rows, key=lambda row: row["traces"])
    gaps = [row["gap %"] for row in rows]
    ratios = sorted(row["cross-check / measure time"] for row in rows)
    disagreements = [d for checked in checks for d in checked.disagreements]
    missed = sorted({op for d in disagreements for op in d.operators})
    products_agree = not any(operator_family(op) in PRODUCTS for d in disagreements for op in d.operators)
    notes = [
        f"traces: calls of measure() handed to fill_budget, each one fvcore trace, never the same size "
        f"twice; most: {worst['traces']} ({worst['model']}); "
        f"{sum(row['traces'] for row in rows)} traces in all",
        f"budget {budget.describe()}, sizes on the {STRIDE}-pixel grid",
        f"cross-check at {side}x{side} (the MMACs columns): FlopCounterMode counts "
        f"{min(gaps):+.2f}% to {max(gaps):+.2f}% against fvcore, in {len(disagreements)} disagreeing modules "
        f"of {len(rows)} model(s), every one in {', '.join(missed) or 'no operator'}; "
        + ("convolutions, matrix products and attention agree to the multiply-add in every module"
           if products_agree else "some convolutions, matrix products or attention differ (see the rows)"),
        f"a cross-check costs {ratios[0]:.2f}x to {ratios[-1]:.2f}x the time of measure(strict=True) "
        f"(median {ratios[len(ratios) // 2]:.2f}x): that much more on every kdfiqa budget call, a pre-commit "
        "hook, so it runs only when asked (--cross-check), and the default JSON keeps its documented shape",
        SHARED_MACHINE_NOTE,
    ]
    if not met:
        notes.insert(1, f"gap: {worst['model']} took {worst['traces']} traces against fewer than {MAX_TRACES}")
    return {
        "title": TITLE,
        "goal": f"the boundary of each student in under {MAX_TRACES} fvcore traces",
        "budget": budget.name,
        "met": met,
        "columns": list(rows[0]),
        "rows": rows,
        "notes": notes,
    }
