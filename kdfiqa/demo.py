"""The built-in demo: kdfiqa's whole workflow, offline, on synthetic data, in a few minutes.

:func:`run_demo` (``kdfiqa demo``) does, with nothing but the installed package:

1. **Data**: :func:`kdfiqa.data.make_synthetic_fiqa` draws cartoon faces (or crops the user's own
   photos, ``images=DIR``), degrades them at known severities and derives a MOS-like score. The data
   is synthetic and the demo says so. It is split at random into a small *labeled* set, a labeled
   *validation* set (model selection), a larger *unlabeled* set whose scores are thrown away, and a
   held-out *test* set that only the final evaluation sees.
2. **Teacher**: an EMOv2 network trained on the labeled set.
3. **Pseudo-labels**: the teacher scores the unlabeled images (offline distillation, as in the
   ECNU-SJTU entry of the seed).
4. **Budget**: the student, EMOv2-1M (the seed's student), is checked against
   :data:`~kdfiqa.budget.VQUALA2025` at 224x224, the resolution it would be deployed at, before any
   training step. The demo trains at a small resolution only to be quick on a CPU.
5. **Students**: the student trained on labels ∪ pseudo-labels (with KD), and the *same* student
   (same initial weights, seed, loss, optimiser and number of optimisation steps) trained on the
   labels alone (the control). The only difference is the teacher's pseudo-labels.
6. **Report**: the three models on the test set (SRCC, PLCC, challenge score), their size and cost
   at 224 and the budget verdict, as a table, ``summary.json``, checkpoints and PNG plots.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from .budget import VQUALA2025, Budget, CostReport, measure
from .checkpoint import load_model
from .data import FIQADataset, ImageSamples, Sample, build_transform, make_synthetic_fiqa
from .distill import Student, Supervised, Teacher, pseudo_label, write_scores_csv
from .engine import Trainer, TrainConfig, init_distributed, predict
from .metrics import evaluate
from .models import create_model, model_info
from .plots import curves_plot, scatter_plot

__all__ = ["DemoPlan", "PLANS", "BUDGET_RESOLUTION", "MODEL_ROLES", "run_demo"]

BUDGET_RESOLUTION = 224
"""The student is budget-checked (and its cost reported) at this deployment resolution."""

MODEL_ROLES = ("teacher", "student_kd", "student_no_kd")
"""The three models of the demo, as keyed in ``summary.json``."""

ROLE_TITLES = {"teacher": "teacher", "student_kd": "student with KD", "student_no_kd": "student without KD"}
"""How the table and the plots name the models."""

SPLITS = ("labeled", "val", "unlabeled", "test")


@dataclass(frozen=True)
class DemoPlan:
    """The sizes and schedule of a demo run."""

    image_size: int
    """Side of the students' views: they train and are evaluated at this resolution."""
    teacher_size: int
    """Side of the synthetic images and of the teacher's views. As in the seed's 2077Agent recipe
    (teacher at 512, student at 224), the teacher sees more detail than the students."""
    labeled: int
    val: int
    unlabeled: int
    test: int
    teacher: str
    student: str
    teacher_epochs: int
    student_epochs: int
    """Both students run this many epochs of ``labeled + unlabeled`` samples each: the same steps."""
    batch_size: int
    lr: float
    loss: str
    """Task loss of every run, a :class:`~kdfiqa.losses.WeightedSum` formula."""
    layer_scale: float = 1.0
    """Initial EMOv2 layer scale. The ImageNet recipe's 1e-6 needs thousands of steps before the
    blocks contribute; from scratch on a few hundred images, 1.0 learns in a few hundred steps.
    It only sets initial values: the architecture and its cost are unchanged."""

    @property
    def total_images(self) -> int:
        return self.labeled + self.val + self.unlabeled + self.test


PLANS: dict[str, DemoPlan] = {
    "default": DemoPlan(image_size=48, teacher_size=64, labeled=128, val=64, unlabeled=640, test=256,
                        teacher="emo2_5m", student="emo2_1m", teacher_epochs=16, student_epochs=3, batch_size=32, lr=2e-3,
                        loss="1.0*mse + 0.5*plcc"),
    "quick": DemoPlan(image_size=32, teacher_size=32, labeled=16, val=8, unlabeled=32, test=16, teacher="emo2_1m",
                      student="emo2_1m", teacher_epochs=1, student_epochs=1, batch_size=16, lr=2e-3,
                      loss="1.0*mse + 0.5*plcc"),
}
"""``default``: the full demo (about 3.5 minutes on 2 idle CPU cores), an EMOv2-5M teacher at 64x64 and
EMOv2-1M students at 48x48; ``quick``: a smoke run of every stage, with an EMOv2-1M teacher (the
student's layout) so that one network is measured."""


def _say(console: Console, text: str) -> None:
    console.print(text, highlight=False)


def _split(dataset: FIQADataset, plan: DemoPlan, seed: int) -> dict[str, FIQADataset]:
    """A random split of ``dataset`` into the four parts of :data:`SPLITS`, sized by ``plan``."""
    order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    parts, start = {}, 0
    for name in SPLITS:
        count = getattr(plan, name)
        parts[name] = dataset.subset(sorted(order[start:start + count]))
        start += count
    return parts


def _write_splits(parts: Mapping[str, FIQADataset], folder: Path) -> dict[str, Path]:
    """Challenge-format CSVs of the labeled parts and a name list of the unlabeled part."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, part in parts.items():
        if name == "unlabeled":
            path = folder / "unlabeled.txt"
            path.write_text("".join(f"{n}\n" for n in part.names))
        else:
            path = write_scores_csv(folder / f"{name}.csv", part.names, part.scores.tolist())
        files[name] = path
    return files


def _train_config(plan: DemoPlan, out: Path, epochs: int, seed: int, device: str) -> TrainConfig:
    return TrainConfig(
        output_dir=str(out), epochs=epochs, batch_size=plan.batch_size, val_batch_size=64, optimizer="adamw",
        lr=plan.lr, weight_decay=1e-4, scheduler="cosine", warmup_epochs=0.0, monitor="score",
        channels_last=True, seed=seed, device=device, quiet=True,
    )


def _new_model(name: str, plan: DemoPlan, seed: int) -> nn.Module:
    """``name`` from the registry with initial weights fixed by ``seed``."""
    torch.manual_seed(seed)
    return create_model(name, layer_scale=plan.layer_scale)


def _fit(objective: nn.Module, train: ImageSamples, val: ImageSamples, config: TrainConfig,
         samples_per_epoch: int | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Train and return (per-epoch records, best checkpoint). ``samples_per_epoch`` draws that many
    training samples per epoch (cycling through the set in fresh random orders)."""
    sampler = RandomSampler(train, num_samples=samples_per_epoch) if samples_per_epoch else None
    trainer = Trainer(objective, train, val, config, sampler=sampler)
    history = trainer.fit()
    return history, trainer.best_path


def _test(model: nn.Module, test: ImageSamples, device: torch.device
          ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Challenge metrics of ``model`` on the test set, with its predictions and the true scores."""
    loader = DataLoader(test, batch_size=64, shuffle=False)
    preds = predict(model, loader, device=device, channels_last=True)
    pred, mos = preds.scores.double().numpy(), preds.mos.double().numpy()
    return evaluate(pred, mos), pred, mos


def _write_predictions(path: Path, names: list[str], pred: np.ndarray, mos: np.ndarray) -> None:
    """Headed CSV ``image,predicted,true`` with every float at full precision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "predicted", "true"))
        writer.writerows((name, repr(float(p)), repr(float(m))) for name, p, m in zip(names, pred, mos))


def _cost(report: CostReport, budget: Budget) -> dict[str, Any]:
    return {"params": report.params, "gflops_224": report.gflops, "within_budget": budget.fits(report)}


def _table(summary: Mapping[str, Any]) -> Table:
    budget, models = summary["budget"]["name"], summary["models"]
    table = Table(
        title=f"kdfiqa demo on SYNTHETIC data: held-out test set ({summary['splits']['test']} images)",
        caption=f"teacher {models['teacher']['network']}, students {models['student_kd']['network']}; params "
                f"and GFLOPs (fvcore) at {BUDGET_RESOLUTION}x{BUDGET_RESOLUTION}; only the student is deployed, "
                f"so only it must fit {budget}",
    )
    for column in ("model", "SRCC", "PLCC", "score", "params", f"GFLOPs@{BUDGET_RESOLUTION}", budget):
        table.add_column(column, justify="left" if column == "model" else "right")
    for role in MODEL_ROLES:
        row = models[role]
        table.add_row(ROLE_TITLES[role], f"{row['srcc']:.4f}", f"{row['plcc']:.4f}", f"{row['score']:.4f}",
                      f"{row['params'] / 1e6:.2f}M", f"{row['gflops_224']:.3f}",
                      "fits" if row["within_budget"] else "over")
    return table


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    images: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    plan: DemoPlan | None = None,
    budget: Budget = VQUALA2025,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo of the module docstring into ``out_dir`` and return its summary.

    torch uses at most one thread per usable core while it runs (more would only contend).

    ``quick`` picks the ``quick`` plan of :data:`PLANS` (``plan`` overrides either); ``images`` is a
    folder of the user's own unlabeled face photos used as clean sources instead of drawn faces;
    ``device`` is ``cpu``, ``cuda`` or ``auto``. Writes into ``out_dir``: ``data/`` (the synthetic
    set), ``splits/`` (the four parts), ``pseudo_labels.csv``, one training folder per model
    (``best.pt``, ``last.pt``, ``log.jsonl``), ``predictions/`` (``image,predicted,true`` on the test set per model),
    ``plots/`` (``scatter_<model>.png``, ``training_curves.png``) and ``summary.json``, whose
    ``models`` entry holds, per model, the test metrics of :func:`kdfiqa.metrics.evaluate`, the
    parameter count, the GFLOPs at 224 and the budget verdict.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, _usable_cores()))
    try:
        return _run(Path(out_dir), plan or PLANS["quick" if quick else "default"], quick=quick, seed=seed,
                    images=images, device=device, budget=budget, console=console or Console())
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, plan: DemoPlan, *, quick: bool, seed: int, images: str | os.PathLike[str] | None,
         device: str, budget: Budget, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = round(time.perf_counter() - started - sum(timings.values()), 3)

    out.mkdir(parents=True, exist_ok=True)
    torch_device = init_distributed(device).device
    source = "crops of your photos in " + str(images) if images is not None else "procedurally drawn cartoon faces"

    _say(console, f"[bold]kdfiqa demo[/bold]: SYNTHETIC data ({source}), degraded at known severities; "
                  "scores are computed from the severities, not rated by people.")
    made = make_synthetic_fiqa(out / "data", plan.total_images, size=plan.teacher_size, seed=seed, sources=images)
    train_tf = build_transform({"mode": "resize", "size": plan.image_size, "flip": True})
    eval_tf = build_transform({"mode": "resize", "size": plan.image_size})
    teacher_train_tf = build_transform({"mode": "resize", "size": plan.teacher_size, "flip": True})
    teacher_eval_tf = build_transform({"mode": "resize", "size": plan.teacher_size})
    everything = FIQADataset(made.image_dir, made.labels, transform=train_tf)
    parts = _split(everything, plan, seed)
    split_files = _write_splits(parts, out / "splits")
    labeled, val, test = parts["labeled"], parts["val"].with_transform(eval_tf), parts["test"].with_transform(eval_tf)
    unlabeled = ImageSamples([Sample(s.name, s.path) for s in parts["unlabeled"].samples],
                             transform=teacher_eval_tf)
    lap("data")
    _say(console, f"data: {plan.total_images} images of {plan.teacher_size}x{plan.teacher_size} in {made.image_dir}; "
                  + ", ".join(f"{name} {len(p)}" for name, p in parts.items())
                  + " (the unlabeled part's scores are not used)")

    _say(console, f"teacher: {plan.teacher} ({model_info(plan.teacher).description}) trained on the "
                  f"{plan.labeled} labeled images, {plan.teacher_epochs} epochs at {plan.teacher_size}x{plan.teacher_size} "
                  f"(students: {plan.image_size}x{plan.image_size})")
    teacher_model = _new_model(plan.teacher, plan, seed)
    teacher_history, teacher_ckpt = _fit(
        Supervised(teacher_model, plan.loss), labeled.with_transform(teacher_train_tf),
        val.with_transform(teacher_eval_tf), _train_config(plan, out / "teacher", plan.teacher_epochs, seed, device))
    teacher = Teacher(load_model(teacher_ckpt), input_size=plan.teacher_size, device=torch_device)
    lap("teacher")

    pseudo_csv = out / "pseudo_labels.csv"
    pseudo_label(teacher, unlabeled, pseudo_csv, batch_size=64)
    pseudo = FIQADataset(made.image_dir, pseudo_csv, transform=train_tf)
    lap("pseudo_labels")
    _say(console, f"pseudo-labels: the teacher scored the {len(pseudo)} unlabeled images -> {pseudo_csv}")

    student_gate = Student(_new_model(plan.student, plan, seed), budget=budget, input_sizes=BUDGET_RESOLUTION)
    gate = student_gate.reports[0]
    lap("budget_check")
    _say(console, f"budget: {plan.student} at {BUDGET_RESOLUTION}x{BUDGET_RESOLUTION}: {gate.gflops:.4f} GFLOPs, "
                  f"{gate.params:,} params: fits {budget.describe()} (checked before training; the demo "
                  f"trains at {plan.image_size}x{plan.image_size} only for speed)")

    steps_data = len(labeled) + len(pseudo)
    kd_train = FIQADataset.merge([labeled, pseudo])
    runs = {
        "student_kd": (kd_train, "labels + teacher pseudo-labels"),
        "student_no_kd": (labeled, "labels only (control)"),
    }
    histories = {"teacher": teacher_history}
    checkpoints = {"teacher": teacher_ckpt}
    for role, (data, what) in runs.items():
        _say(console, f"{ROLE_TITLES[role]}: {plan.student} on {what}, {plan.student_epochs} epochs of "
                      f"{steps_data} samples ({plan.student_epochs * (steps_data // plan.batch_size)} steps)")
        objective = Supervised(_new_model(plan.student, plan, seed), plan.loss)
        histories[role], checkpoints[role] = _fit(
            objective, data, val, _train_config(plan, out / role, plan.student_epochs, seed, device), steps_data)
        lap(role)

    models: dict[str, Any] = {}
    pred_dir = out / "predictions"
    costs = {plan.student: gate}  # one measurement per network: both students share theirs
    for role in MODEL_ROLES:
        model = load_model(checkpoints[role])
        if model.model_name not in costs:
            costs[model.model_name] = measure(model, BUDGET_RESOLUTION)
        views = teacher_eval_tf if role == "teacher" else eval_tf
        metrics, pred, mos = _test(model, test.with_transform(views), torch_device)
        _write_predictions(pred_dir / f"{role}.csv", test.names, pred, mos)
        scatter_plot(pred, mos, out / "plots" / f"scatter_{role}.png",
                     title=f"{ROLE_TITLES[role]} ({model.model_name}): SRCC {metrics['srcc']:.3f}")
        models[role] = {
            "network": model.model_name,
            **metrics,
            **_cost(costs[model.model_name], budget),
            "checkpoint": checkpoints[role].relative_to(out).as_posix(),
            "epochs": len(histories[role]),
            "steps": histories[role][-1]["step"] if histories[role] else 0,
        }
    curves_plot(histories, out / "plots" / "training_curves.png", title="kdfiqa demo (synthetic data)")
    lap("evaluation")

    summary = {
        "synthetic_data": True,
        "data_note": (made.image_dir.parent / "SYNTHETIC_DATA.txt").read_text().strip(),
        "seed": seed,
        "quick": quick,
        "plan": asdict(plan),
        "train_resolution": [plan.image_size, plan.image_size],
        "budget_resolution": [BUDGET_RESOLUTION, BUDGET_RESOLUTION],
        "budget": {"name": budget.name, "max_gflops": budget.max_gflops, "max_params": budget.max_params},
        "splits": {name: len(p) for name, p in parts.items()},
        "split_files": {name: path.relative_to(out).as_posix() for name, path in split_files.items()},
        "image_root": made.image_dir.relative_to(out).as_posix(),
        "models": models,
        "kd_gain": {k: models["student_kd"][k] - models["student_no_kd"][k] for k in ("srcc", "plcc", "score")},
        "elapsed_s": time.perf_counter() - started,
        "timings_s": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(_table(summary))
    gain = summary["kd_gain"]["score"]
    _say(console, f"KD gain on the held-out test set: {gain:+.4f} score "
                  f"({'the distilled student beats' if gain > 0 else 'the distilled student does not beat'} "
                  f"the same student trained without the teacher). Outputs in {out}; "
                  f"{summary['elapsed_s']:.0f} s.")
    return summary
