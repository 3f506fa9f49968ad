"""KD gain: the demo's student with and without its teacher, over three seeds.

Each seed runs :func:`kdfiqa.demo.run_demo` (synthetic faces, an EMOv2-5M teacher trained on the
labeled split, its pseudo-labels for the unlabeled split, and the EMOv2-1M student trained on
labels + pseudo-labels against the *same* student trained on the labels alone, same initial weights
and number of steps). The table gives the held-out test SRCC, PLCC and challenge score of the three
models as mean ± standard deviation over the seeds. The data are synthetic: this shows whether the
pipeline's distillation helps on them, not a figure for the challenge's faces.
"""

from __future__ import annotations

import statistics

from rich.console import Console

from .common import scratch_dir

TITLE = "KD gain (demo data, 3 seeds)"
SEEDS = (0, 1, 2)
METRICS = ("srcc", "plcc", "score")
ROLES = {"teacher": "teacher", "student_kd": "student with KD", "student_no_kd": "student without KD"}


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def run(quick: bool) -> dict:
    from kdfiqa.demo import run_demo  # the demo pulls in plotting; only this benchmark needs it

    summaries = []
    with scratch_dir("kd-gain") as folder:
        for seed in SEEDS:
            print(f"  demo seed {seed}", flush=True)
            summaries.append(run_demo(folder / f"seed{seed}", quick=quick, seed=seed,
                                      console=Console(quiet=True)))
    rows = []
    for role, label in ROLES.items():
        models = [s["models"][role] for s in summaries]
        rows.append({"model": f"{label} ({models[0]['network']})",
                     **{m: _mean_std([x[m] for x in models]) for m in METRICS}})
    gains = {m: [s["kd_gain"][m] for s in summaries] for m in METRICS}
    rows.append({"model": "gain (with - without KD)", **{m: _mean_std(v) for m, v in gains.items()}})
    wins = sum(g > 0 for g in gains["score"])
    plan = summaries[0]["plan"]
    return {
        "title": TITLE,
        "goal": "",
        "met": None,
        "columns": ["model", *METRICS],
        "rows": rows,
        "notes": [
            f"demo plan {'quick' if quick else 'default'}: {plan['labeled']} labeled, {plan['unlabeled']} "
            f"unlabeled, {plan['test']} test synthetic faces at {plan['image_size']}x{plan['image_size']}; "
            f"teacher {plan['teacher_epochs']} epochs, students {plan['student_epochs']} epochs; seeds "
            + ", ".join(map(str, SEEDS)),
            f"the student with KD beats the one without on the challenge score in {wins} of {len(SEEDS)} seeds",
            "quick mode runs the demo's one-epoch smoke plan: its figures say the benchmark runs, not "
            "whether KD helps" if quick else "test metrics on the held-out synthetic test split",
        ],
    }
