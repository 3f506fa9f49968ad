"""Architecture search under the challenge budget: how much capacity ``kdfiqa search`` finds.

Goal (issue #15): for EMOv2 at 224x224 under vquala2025, the search finds a configuration with at
least 1.5x the parameters of emo2_1m (the seed's student) within the budget. The table is the Pareto
front (parameters up; GFLOPs and CPU latency down) with emo2_1m measured the same way beside it.

The run uses one torch thread: fvcore's traces, most of the search's time, are serial, and on a
shared machine a second thread mostly waits; latency is therefore single-thread latency.
"""

from __future__ import annotations

from kdfiqa.budget import VQUALA2025
from kdfiqa.budget.search import Candidate, search_students

from .common import SHARED_MACHINE_NOTE, torch_threads

TITLE = "Architecture search"
GOAL_RATIO = 1.5
FAMILY = "emo2"
SEED = 0


def _row(label: str, candidate: Candidate, reference: Candidate) -> dict:
    kwargs = candidate.kwargs
    return {"configuration": label, "trial": candidate.trial, "params": candidate.params,
            "x emo2_1m params": candidate.params / reference.params, "GFLOPs": candidate.gflops,
            "latency ms": candidate.latency_ms,
            **{key: ",".join(map(str, kwargs[key])) if key in kwargs else "preset"
               for key in ("depths", "embed_dims", "exp_ratios")},
            "window": kwargs.get("window_size", "preset")}


def run(quick: bool) -> dict:
    trials, latency_runs = (3, 1) if quick else (32, 3)
    with torch_threads(1):
        result = search_students(FAMILY, VQUALA2025, trials=trials, seed=SEED, latency_runs=latency_runs)
    reference = result.reference
    best = max(result.front, key=lambda c: (c.params, -c.flops), default=None)
    ratio = best.params / reference.params if best else 0.0
    first = next((c.trial for c in result.candidates
                  if c.within and c.params >= GOAL_RATIO * reference.params), None)
    rows = [_row("emo2_1m (preset)", reference, reference)]
    rows += [_row(f"front {k}", c, reference) for k, c in enumerate(result.front, 1)]
    notes = [
        f"{result.trials} trials (seed {SEED}) at 224x224 in {result.seconds:.0f} s "
        f"({result.seconds / (result.trials + 1):.1f} s a candidate, the preset included): "
        f"{result.duplicates} duplicates, {result.over_budget} over the budget (discarded), "
        f"{result.within_budget} within, {len(result.front)} on the front",
        (f"best found: trial {best.trial}, {best.params:,} params ({ratio:.2f}x emo2_1m's {reference.params:,}), "
         f"{best.gflops:.4f} GFLOPs (limit {VQUALA2025.max_gflops:g})" if best else "no candidate fit the budget"),
        (f"the first candidate with at least {GOAL_RATIO:g}x emo2_1m's parameters within budget came at trial {first}"
         if first else f"no candidate reached {GOAL_RATIO:g}x emo2_1m's parameters within budget"),
        f"latency: median of {latency_runs} batch-1 CPU passes at 224x224, 1 torch thread",
        "`kdfiqa search --family emo2 --trials N --seed S --out DIR` writes each front configuration as a model "
        "file for kdfiqa train/distill/budget",
        SHARED_MACHINE_NOTE,
    ]
    return {
        "title": TITLE,
        "goal": f"for EMOv2 at 224x224 under vquala2025 the search finds a configuration with at least "
                f"{GOAL_RATIO:g}x emo2_1m's parameters within budget",
        "met": ratio >= GOAL_RATIO,
        "best": None if best is None else {**best.as_dict(), "x_reference_params": ratio},
        "trials": result.trials,
        "seconds": result.seconds,
        "columns": ["configuration", "trial", "params", "x emo2_1m params", "GFLOPs", "latency ms", "depths",
                    "embed_dims", "exp_ratios", "window"],
        "rows": rows,
        "notes": notes,
    }
