"""KD gain: the demo's students with offline, online and combined KD against the same student alone.

Each seed runs :func:`kdfiqa.demo.run_demo` (synthetic faces; an EMOv2-5M teacher trained on the
labeled split at a higher resolution; five EMOv2-1M students with the same initial weights,
optimiser and number of steps: the control on labels alone, offline KD on labels ∪ calibrated
pseudo-labels, online KD through the Distiller, both combined, and online KD under an untrained
teacher as the ablation). For each KD variant the table gives the paired gain over the control on
the held-out test split (challenge score, SRCC, PLCC): mean, 95% t-interval over the seeds, and in how
many seeds it gained. Goal: each KD interval above 0, and the ablation's not. The data are synthetic:
this shows whether the pipeline's distillation helps on them, not a figure for the challenge's faces.
"""

from __future__ import annotations

import math
import statistics

from rich.console import Console
from scipy import stats

from .common import scratch_dir

SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
TITLE = f"KD gain (demo data, {len(SEEDS)} seeds)"
METRICS = ("score", "srcc", "plcc")
KD_ROLES = ("offline_kd", "online_kd", "combined_kd")
ABLATION = "untrained_teacher_kd"


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided 95% Student-t interval."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def run(quick: bool) -> dict:
    from kdfiqa.demo import ROLE_TITLES, run_demo  # the demo pulls in plotting; only this benchmark needs it

    seeds = QUICK_SEEDS if quick else SEEDS
    summaries = []
    with scratch_dir("kd-gain") as folder:
        for seed in seeds:
            print(f"  demo seed {seed}", flush=True)
            summaries.append(run_demo(folder / f"seed{seed}", quick=quick, seed=seed, console=Console(quiet=True)))
    rows, verdicts = [], {}
    for role in (*KD_ROLES, ABLATION):
        row = {"student": ROLE_TITLES[role]}
        for metric in METRICS:
            gains = [s["gains"][role][metric] for s in summaries]
            mean, low, high = interval(gains)
            row[f"{metric} gain"] = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"
            if metric == "score":
                row["seeds gained"] = f"{sum(g > 0 for g in gains)} of {len(gains)}"
                verdicts[role] = low > 0
        rows.append(row)
    teacher = [s["models"]["teacher"]["score"] for s in summaries]
    control = [s["models"]["control"]["score"] for s in summaries]
    met = all(verdicts[r] for r in KD_ROLES) and not verdicts[ABLATION]
    plan = summaries[0]["plan"]
    missed = [ROLE_TITLES[r] for r in KD_ROLES if not verdicts[r]]
    return {
        "title": TITLE if not quick else f"KD gain (demo data, {len(seeds)} seeds)",
        "goal": "every KD student's 95% interval of the paired score gain over the control lies above 0, "
                "and the untrained-teacher ablation's does not",
        "met": met,
        "columns": ["student", "seeds gained", *(f"{m} gain" for m in METRICS)],
        "rows": rows,
        "notes": [
            f"demo plan {'quick' if quick else 'default'}: {plan['labeled']} labeled, {plan['val']} validation, "
            f"{plan['unlabeled']} unlabeled, {plan['test']} test synthetic faces; teacher {plan['teacher']} at "
            f"{plan['teacher_size']}x{plan['teacher_size']} for {plan['teacher_epochs']} epochs, students "
            f"{plan['student']} at {plan['image_size']}x{plan['image_size']} for {plan['student_epochs']} epochs "
            f"of labeled + unlabeled samples; seeds {', '.join(map(str, seeds))}",
            "gain: the student's held-out test figure minus the control's in the same seed (paired), mean "
            "[95% Student-t interval]",
            f"teacher score {statistics.mean(teacher):.4f}, control score {statistics.mean(control):.4f} (means)",
            *([f"gap: the interval of {', '.join(missed)} reaches 0 or below"] if missed else []),
            "quick mode runs the demo's smoke plan on two seeds: its figures say the benchmark runs, not "
            "whether KD helps" if quick else "test metrics on the held-out synthetic test split",
        ],
    }
