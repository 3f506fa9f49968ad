"""KD gain: which distillation earns its cost, on the demo's data, at the demo's schedule and a patient one.

Each seed runs :func:`kdfiqa.demo.run_demo` (synthetic faces; an EMOv2-5M teacher trained on the
labeled split at a higher resolution; EMOv2-1M students with the same initial weights, optimiser and
number of optimiser steps). Every variant of :data:`VARIANTS` is one of the demo's students (the
control, offline KD on labels + calibrated pseudo-labels, online KD, offline + online KD) with its
online settings set outright, trained into the same seed's folder on the same splits and evaluated on
the same held-out test split; a demo student that already is the variant is reused. Every variant
but the few marked ``patient=False`` (a second crop cache, a second offline + online KD and the
untrained-teacher ablation) is trained again at :data:`PATIENCE` times the demo's epochs, so a variant
that needs more steps shows it.

For every variant and schedule the table gives the paired gain (the variant's test figure minus the
control's in the same seed and schedule) and the paired gain over offline KD: mean, 95% Student-t
interval over the seeds, and the seeds gained. :data:`CONTRASTS` isolate one cause each (the labeled
share per batch, raw against calibrated teacher targets, the distillation loss, its weight and
temperature, views with something to match, the crop cache) as paired differences between two variants
that differ in that one setting.

Goal: an online variant whose gain over offline KD has a 95% interval that does not lie below 0 at a
stated schedule, and the crop-level view cache of that variant within its interval. The data are
synthetic: this says which distillation helps on them, not a figure for the challenge's faces.

Every trained model's record is kept in ``benchmarks/work/kd_gain/`` (one JSON per seed, variant and
schedule), so an interrupted study continues where it stopped; ``python -m benchmarks.kd_gain``
publishes the records stored so far (training nothing; each variant compared on the seeds that hold
it). ``--quick`` runs the demo's smoke plan on two seeds into a scratch folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.console import Console
from scipy import stats

from .common import REPO, scratch_dir

SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
PATIENCE = 4
"""The patient schedule runs this many times the demo's student epochs (the same plan otherwise)."""
TITLE = f"KD gain (demo data, {len(SEEDS)} seeds, demo and {PATIENCE}x schedules)"
WORK = REPO / "benchmarks" / "work" / "kd_gain"
METRICS = ("score", "srcc", "plcc")
VIEWS = 8
"""Stored views per image of the crop-level teacher cache."""

QUALITY_AUGMENT = {"p": 0.5, "kinds": ["blur", "noise", "jpeg", "downup"], "max_severity": 0.6}
"""The teacher-scored quality-altering augmentation of the ``augmented`` variants."""


LABELS_ONLY = {"loss": "0.5*temperature_mse", "unlabeled_use": "pseudo", "labeled_per_batch": None,
               "calibrate_online": False, "raw_if_degenerate": False, "view_cache": 0}
"""Online KD on the labels alone, the recipe's 0.5 x temperature MSE (T = 4): the starting point. Every
online variant sets each of these ``distill`` fields outright, so a variant means the same whatever
the demo's own online student is."""


@dataclass(frozen=True)
class Variant:
    """A student of the study: the demo's ``base`` student (its stored config: data, teacher, pseudo-labels,
    optimiser, seed) with every ``distill`` field of :data:`LABELS_ONLY` set from it, updated by
    ``distill``, ``train_transform`` keys merged into its training transform, and the demo's unlabeled
    images as ``data.unlabeled`` when ``unlabeled`` (none otherwise). The control and offline KD keep
    their base as it is. A demo-schedule variant whose config is its base's, the demo's own student,
    is read from the demo instead of trained again (:func:`reuses_demo`)."""

    title: str
    base: str
    distill: Mapping[str, Any] = field(default_factory=dict)
    train_transform: Mapping[str, Any] = field(default_factory=dict)
    unlabeled: bool = False
    patient: bool = True
    cache_of: str | None = None
    """The variant this one is with the crop-level view cache in place of the online teacher."""

    @property
    def online(self) -> bool:
        return self.base not in ("control", "offline_kd")


ONLINE_UNLABELED = {"unlabeled_use": "online"}
CALIBRATED = {**ONLINE_UNLABELED, "calibrate_online": True, "raw_if_degenerate": True}
SHARE16 = {**CALIBRATED, "labeled_per_batch": 16}

VARIANTS: dict[str, Variant] = {
    "control": Variant("student alone (control)", "control"),
    "offline_kd": Variant("offline KD (calibrated pseudo-labels)", "offline_kd"),
    "online_kd": Variant("online KD, labels only", "online_kd"),
    "combined_kd": Variant("offline + online KD", "combined_kd"),
    "online_unlabeled_raw": Variant("online on labeled + unlabeled, raw teacher targets", "online_kd",
                                    ONLINE_UNLABELED, unlabeled=True),
    "online_unlabeled": Variant("online on labeled + unlabeled, calibrated targets", "online_kd", CALIBRATED,
                                unlabeled=True),
    "online_unlabeled_share16": Variant("the same, 16 of 32 labeled per batch", "online_kd", SHARE16,
                                        unlabeled=True),
    "online_unlabeled_weight2": Variant("the same (16 of 32), distillation weight 2 (2.0*temperature_mse)",
                                        "online_kd", {**SHARE16, "loss": "2.0*temperature_mse"}, unlabeled=True),
    "online_unlabeled_t1": Variant("the same (16 of 32, weight 2), temperature 1 instead of 4", "online_kd",
                                   {**SHARE16, "loss": "2.0*temperature_mse(temperature=1)"}, unlabeled=True),
    "online_unlabeled_hybrid": Variant("the same (16 of 32), HybridLoss against the teacher (1.0*hybrid)",
                                       "online_kd", {**SHARE16, "loss": "1.0*hybrid"}, unlabeled=True),
    "online_unlabeled_augmented": Variant(
        "the same (16 of 32), random crops (Resize(55) + RandomCrop(48)) + teacher-scored quality augmentation",
        "online_kd", SHARE16, {"mode": "resize_random_crop", "resize": 55, "quality_augment": QUALITY_AUGMENT},
        unlabeled=True),
    "combined_calibrated": Variant("offline + online KD, calibrated online targets", "combined_kd",
                                   {"calibrate_online": True, "raw_if_degenerate": True}, patient=False),
    "crop_cache": Variant(f"online on labeled + unlabeled (16 of 32), {VIEWS}-view crop cache", "online_kd",
                          {**SHARE16, "view_cache": VIEWS}, unlabeled=True, cache_of="online_unlabeled_share16",
                          patient=False),
    "untrained_teacher_hybrid": Variant("the HybridLoss student above under an untrained teacher (ablation)",
                                        "untrained_teacher_kd", {**SHARE16, "loss": "1.0*hybrid"}, unlabeled=True,
                                        patient=False),
    "combined_crop_cache": Variant(f"offline + online KD, {VIEWS}-view crop cache", "combined_kd",
                                   {"view_cache": VIEWS}, cache_of="combined_kd"),
}
"""The study's students, in table order."""

CONTRASTS = (
    ("labeled share: 16 of 32 per batch against about 6 (shuffled together)", "online_unlabeled_share16",
     "online_unlabeled"),
    ("target scale: calibrated against raw teacher outputs", "online_unlabeled", "online_unlabeled_raw"),
    ("distillation weight: 2.0 against 0.5", "online_unlabeled_weight2", "online_unlabeled_share16"),
    ("distillation temperature: 1 against 4 (weight 2)", "online_unlabeled_t1", "online_unlabeled_weight2"),
    ("distillation loss: HybridLoss against 0.5 x temperature MSE", "online_unlabeled_hybrid",
     "online_unlabeled_share16"),
    ("something to match: random crops + quality augmentation against resize + flip",
     "online_unlabeled_augmented", "online_unlabeled_share16"),
    ("crop cache against the online teacher (online on labeled + unlabeled)", "crop_cache", "online_unlabeled_share16"),
    ("crop cache against the online teacher (offline + online KD)", "combined_crop_cache", "combined_kd"),
    ("the unlabeled images online against labels-only online KD", "online_unlabeled_share16", "online_kd"),
    ("the teacher's training: the HybridLoss student under the trained teacher against an untrained one",
     "online_unlabeled_hybrid", "untrained_teacher_hybrid"),
)
"""(what it measures, variant, reference): each a paired difference that isolates one cause."""

ONLINE_CANDIDATES = tuple(name for name, variant in VARIANTS.items()
                          if variant.online and variant.cache_of is None and variant.base != "untrained_teacher_kd")
"""The variants with an online teacher among which the study picks the best against offline KD."""


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided 95% Student-t interval."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def variant_config(base: Any, variant: Variant, out: Path, unlabeled: Path, epochs: int) -> Any:
    """``variant``'s run config: ``base`` (a demo student's stored config) with the variant's settings,
    writing into ``out`` for ``epochs`` epochs."""
    train = dataclasses.replace(base.train, output_dir=str(out), epochs=epochs)
    if not variant.online:
        return dataclasses.replace(base, train=train)
    distill = dataclasses.replace(base.distill, **{**LABELS_ONLY, **variant.distill})
    data = dataclasses.replace(base.data, unlabeled=str(unlabeled) if variant.unlabeled else None,
                               train_transform={**base.data.train_transform, **variant.train_transform})
    return dataclasses.replace(base, train=train, distill=distill, data=data)


def reuses_demo(base: Any, variant: Variant, unlabeled: Path) -> bool:
    """Whether the demo's own ``variant.base`` student (config ``base``) is ``variant`` at the demo's
    schedule: the variant's settings change nothing in its stored config."""
    return variant_config(base, variant, Path(base.train.output_dir), unlabeled, base.train.epochs) == base


def _record(result: Any, seconds: float, test: Any) -> dict[str, Any]:
    import torch

    from kdfiqa.demo import evaluate_checkpoint

    metrics = evaluate_checkpoint(result.checkpoint, test, torch.device("cpu"))[0]
    last = result.history[-1] if result.history else {}
    return {**{k: metrics[k] for k in METRICS}, "collapsed": result.collapsed, "seconds": seconds,
            "steps": last.get("step", 0)}


def _distill_share(run_dir: Path) -> float | None:
    """The distillation term's share of the loss in the last epoch of the run in ``run_dir``."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    lines = log.read_text().splitlines()
    return json.loads(lines[-1]).get("train", {}).get("share/distill") if lines else None


def _run_seed(folder: Path, seed: int, quick: bool, schedules: Mapping[str, int], say: Callable[[str], None],
              train: bool = True) -> dict[str, dict[str, dict[str, Any]]]:
    """Every variant's record for one seed: ``records[schedule][variant]``, each trained first where
    its record is missing (with ``train``; else left out, as is a seed without a finished demo)."""
    from kdfiqa import pipeline
    from kdfiqa.checkpoint import load_checkpoint
    from kdfiqa.config import RunConfig
    from kdfiqa.demo import run_demo

    demo = folder / "demo"
    done = (demo / "summary.json").is_file()
    if not (done or train):
        return {name: {} for name in schedules}
    summary = (json.loads((demo / "summary.json").read_text()) if done else
               run_demo(demo, quick=quick, seed=seed, console=Console(quiet=True), resume=demo.is_dir()))
    test = pipeline.Labels(demo / summary["split_files"]["test"], demo / summary["split_roots"]["test"])
    unlabeled = demo / "splits" / "unlabeled"
    bases = {role: RunConfig.from_dict(load_checkpoint(demo / row["checkpoint"])["config"])
             for role, row in summary["models"].items() if role != "teacher"}
    records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in schedules}
    for schedule, factor in schedules.items():
        for name, variant in VARIANTS.items():
            if schedule != "demo" and not variant.patient:
                continue
            base = bases[variant.base]
            if schedule == "demo" and reuses_demo(base, variant, unlabeled):
                row = summary["models"][variant.base]
                records[schedule][name] = {**{k: row[k] for k in METRICS}, "collapsed": row["collapsed"],
                                           "steps": row["steps"], "seconds": summary["timings_s"].get(variant.base),
                                           "distill_share": _distill_share(demo / variant.base)}
                continue
            path = folder / f"{schedule}_{name}.json"
            if path.is_file():
                records[schedule][name] = {**json.loads(path.read_text()),
                                           "distill_share": _distill_share(folder / f"{schedule}_{name}")}
                continue
            if not train:
                continue
            config = variant_config(base, variant, folder / f"{schedule}_{name}", unlabeled, base.train.epochs * factor)
            say(f"  seed {seed}: {schedule} schedule, {name}")
            started = time.perf_counter()
            online = config.distill.loss is not None or config.distill.feature
            run = pipeline.run_distill if online or config.data.pseudo_csv or config.data.unlabeled else pipeline.train
            result = run(config, overwrite=True)
            record = _record(result, time.perf_counter() - started, test)
            path.write_text(json.dumps(record, indent=2) + "\n")
            records[schedule][name] = {**record, "distill_share": _distill_share(result.output_dir)}
    return records


def _paired(per_seed: list[dict[str, dict[str, Any]]], schedule: str, name: str, reference: str,
            metric: str = "score") -> list[float]:
    """``name``'s figure minus ``reference``'s, in each seed that has both at ``schedule``."""
    return [s[schedule][name][metric] - s[schedule][reference][metric] for s in per_seed
            if name in s[schedule] and reference in s[schedule]]


def _row(schedule: str, name: str, per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    held = [s[schedule][name] for s in per_seed if name in s[schedule]]
    row: dict[str, Any] = {"student": VARIANTS[name].title, "schedule": schedule, "seeds": len(held)}
    if name != "control":
        over_control = _paired(per_seed, schedule, name, "control")
        mean, low, high = interval(over_control)
        row["score gain"] = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"
        row["seeds gained"] = f"{sum(g > 0 for g in over_control)} of {len(over_control)}"
    if name not in ("control", "offline_kd"):
        mean, low, high = interval(_paired(per_seed, schedule, name, "offline_kd"))
        row["gain over offline KD"] = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"
    row["score"] = f"{statistics.mean(r['score'] for r in held):.4f}"
    shares = [r["distill_share"] for r in held]
    row["distill share"] = (f"{statistics.mean(shares):.2f}" if all(x is not None for x in shares) else "")
    row["collapsed"] = sum(bool(r["collapsed"]) for r in held)
    return row


SCHEDULES = {"demo": 1, "patient": PATIENCE}
"""The study's schedules: multiples of the demo's student epochs."""


def run(quick: bool) -> dict:
    seeds = QUICK_SEEDS if quick else SEEDS
    per_seed = []
    say = lambda text: print(text, flush=True)  # noqa: E731
    if quick:
        with scratch_dir("kd-gain") as folder:
            per_seed = [_run_seed(folder / f"seed{seed}", seed, True, SCHEDULES, say) for seed in seeds]
    else:
        for seed in seeds:
            (WORK / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            per_seed.append(_run_seed(WORK / f"seed{seed}", seed, False, SCHEDULES, say))
    return summarise(per_seed, seeds, quick)


def summarise(per_seed: list[dict[str, dict[str, dict[str, Any]]]], seeds: tuple[int, ...], quick: bool) -> dict:
    """The benchmark's result from each seed's records (``records[schedule][variant]``). A variant is
    compared on the seeds that hold its record; only those held in every seed compete for the goal."""
    from kdfiqa.demo import PLANS

    schedules = SCHEDULES
    held = {schedule: {name: sum(name in s[schedule] for s in per_seed) for name in VARIANTS}
            for schedule in schedules}
    rows = [_row(schedule, name, per_seed) for schedule in schedules for name in VARIANTS if held[schedule][name]]

    def over(schedule: str, name: str, reference: str) -> tuple[float, float, float]:
        return interval(_paired(per_seed, schedule, name, reference))

    candidates = [(schedule, name) for schedule in schedules for name in ONLINE_CANDIDATES
                  if held[schedule][name] == len(per_seed)]
    if not candidates:
        raise ValueError("no online variant has a record in every seed yet: run the study first")
    best_schedule, best_name = max(candidates, key=lambda c: over(c[0], c[1], "offline_kd")[1])
    best_mean, low, best_high = over(best_schedule, best_name, "offline_kd")
    _, online_low, online_high = over(best_schedule, best_name, "control")
    twin = next((name for name, variant in VARIANTS.items() if variant.cache_of == best_name), None)
    cache_note = f"the crop cache of {best_name} was not trained at the {best_schedule} schedule in every seed"
    cache_within = False
    if twin is not None and held[best_schedule][twin] == len(per_seed):
        cache = statistics.mean(_paired(per_seed, best_schedule, twin, "control"))
        cache_within = online_low <= cache <= online_high
        cache_note = (f"{VARIANTS[twin].title}: mean score gain {cache:+.4f} against the best online variant's interval "
                      f"[{online_low:+.4f}, {online_high:+.4f}] ({'within' if cache_within else 'outside'})")
    partial = [f"{name} at the {schedule} schedule in {count} of {len(per_seed)} seeds so far"
               for schedule in schedules for name, count in held[schedule].items() if 0 < count < len(per_seed)]
    missing = [f"{name} ({schedule})" for schedule in schedules for name, count in held[schedule].items()
               if count == 0 and (schedule == "demo" or VARIANTS[name].patient)]
    contrasts = []
    for what, name, reference in CONTRASTS:
        for schedule in schedules:
            pairs = _paired(per_seed, schedule, name, reference)
            if pairs:
                mean, lo, hi = interval(pairs)
                contrasts.append(f"{what} ({schedule}, {len(pairs)} seeds): {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    plan = PLANS["quick" if quick else "default"]
    return {
        "title": TITLE if not quick else f"KD gain (demo data, {len(seeds)} seeds, quick)",
        "goal": "an online variant whose paired score gain over offline KD has a 95% interval not below 0 "
                "(its upper end at least 0) at a stated schedule, and the mean gain of its crop-cache twin within "
                "that variant's interval",
        "met": bool(best_high >= 0 and cache_within),
        "best_online": {"variant": best_name, "schedule": best_schedule, "gain_over_offline": float(best_mean),
                        "interval": [float(low), float(best_high)]},
        "columns": ["student", "schedule", "seeds", "score", "score gain", "seeds gained", "gain over offline KD",
                    "distill share", "collapsed"],
        "rows": rows,
        "notes": [
            f"demo plan {'quick' if quick else 'default'}: {plan.labeled} labeled, {plan.val} validation, "
            f"{plan.unlabeled} unlabeled, {plan.test} test synthetic faces; teacher {plan.teacher} at "
            f"{plan.teacher_size}x{plan.teacher_size}, students {plan.student} at {plan.image_size}x{plan.image_size}, "
            f"{plan.student_epochs} epochs of {plan.labeled + plan.unlabeled} samples (demo schedule) or "
            f"{PATIENCE * plan.student_epochs} (patient); seeds {', '.join(map(str, seeds))}",
            "gain: the student's held-out test score minus the control's (or offline KD's) in the same seed and "
            "schedule (paired), mean [95% Student-t interval]; distill share: the distillation term's share of "
            "the total loss in the last epoch",
            f"best online variant against offline KD: {VARIANTS[best_name].title} at the {best_schedule} schedule, "
            f"{best_mean:+.4f} [{low:+.4f}, {best_high:+.4f}]",
            cache_note,
            *(f"cause: {c}" for c in contrasts),
            *(["not finished: " + "; ".join(partial)] if partial else []),
            *(["not run yet: " + ", ".join(missing)] if missing else []),
            "quick mode runs the demo's smoke plan on two seeds: its figures say the benchmark runs, not "
            "whether KD helps" if quick else "test metrics on the held-out synthetic test split",
        ],
    }


def from_records() -> dict:
    """The study's result from the records stored in :data:`WORK` so far, training nothing."""
    per_seed = [_run_seed(WORK / f"seed{seed}", seed, False, SCHEDULES, print, train=False) for seed in SEEDS]
    return summarise(per_seed, SEEDS, quick=False)


if __name__ == "__main__":  # python -m benchmarks.kd_gain: publish the records so far; trains nothing
    from .__main__ import publish
    from .common import write_result

    print(f"wrote {write_result('kd_gain', from_records(), False)}")
    publish()
