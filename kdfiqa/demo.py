"""The built-in demo: kdfiqa's whole workflow, offline, on synthetic data, in a few minutes.

:func:`run_demo` (``kdfiqa demo``) is a built-in recipe run through the stages of
:mod:`kdfiqa.pipeline`, the same functions ``kdfiqa train``, ``pseudo-label`` and ``distill`` call;
every stage's config is stored in its checkpoint, so each run can be repeated from the command line.

1. **Data**: :func:`kdfiqa.data.make_synthetic_fiqa` draws cartoon faces (or crops the user's own
   photos, ``images=DIR``), degrades them at known severities and derives a MOS-like score. The data
   is synthetic and the demo says so. It is split at random into a small *labeled* set, a labeled
   *validation* set (model selection only), a larger *unlabeled* set whose scores are thrown away,
   and a held-out *test* set that only the final evaluation sees, each in its own folder.
2. **Teacher** (:func:`~kdfiqa.pipeline.train`): an EMOv2 network trained on the labeled set at a
   higher resolution than the students, at which the degradations are better visible, and for more
   epochs: it is stronger because it sees more, as in the seed's 2077Agent recipe.
3. **Pseudo-labels** (:func:`~kdfiqa.pipeline.pseudo_label`): the teacher scores the unlabeled
   images, calibrated onto the label scale by a 4-parameter logistic (the ECNU-SJTU way).
4. **Students** (:func:`~kdfiqa.pipeline.train` and :func:`~kdfiqa.pipeline.run_distill`), EMOv2-1M
   (the seed's student), budget-checked against :data:`~kdfiqa.budget.VQUALA2025` at 224x224 (its
   deployment size) before any step: the *control* on the labels alone; *offline KD* on labels ∪
   pseudo-labels; *online KD* through :class:`~kdfiqa.distill.Distiller` on labels and the unlabeled
   images together (HybridLoss against the labels on the labeled half of every batch + HybridLoss
   against the frozen teacher's calibrated scores on every image, the teacher seeing the
   higher-resolution view of the same crop: :func:`online_settings`); both *combined* (labels + pseudo-labels, 0.5 · temperature MSE);
   and the ablation, the online student under an *untrained* teacher. Every
   student has the same architecture, initial weights, optimiser and number of optimiser steps
   (fixed-length epochs); checkpoints are picked on the validation split only.
5. **Report**: every model on the test set through its checkpoint's own deployment transform
   (SRCC, PLCC, challenge score, each student's gain over the control), its size and cost at 224
   and the budget verdict, as a table, ``summary.json``, checkpoints and PNG plots.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import pipeline
from .atomic_write import write_atomic
from .budget import VQUALA2025, Budget, CostReport, measure
from .config import RunConfig
from .engine import ProgressDisplay, init_distributed
from .engine.distributed import rank_zero_writer_lock
from .engine.progress import epoch_line
from .errors import ConfigError, DataError, spelled

__all__ = ["DemoPlan", "PLANS", "BUDGET_RESOLUTION", "MODEL_ROLES", "STUDENT_ROLES", "ROLE_TITLES", "evaluate_checkpoint", "run_demo"]

BUDGET_RESOLUTION = 224
"""The students are budget-checked (and every cost reported) at this deployment resolution."""

STUDENT_ROLES = ("control", "offline_kd", "online_kd", "combined_kd", "untrained_teacher_kd")
"""The students of the demo, as keyed in ``summary.json``."""

MODEL_ROLES = ("teacher", *STUDENT_ROLES)

ROLE_TITLES = {
    "teacher": "teacher",
    "control": "student alone (control)",
    "offline_kd": "student, offline KD",
    "online_kd": "student, online KD",
    "combined_kd": "student, offline + online KD",
    "untrained_teacher_kd": "student, online KD, untrained teacher",
}
"""How the table and the plots name the models."""

SPLITS = ("labeled", "val", "unlabeled", "test")


@dataclass(frozen=True)
class DemoPlan:
    """The sizes and schedule of a demo run."""

    image_size: int
    """Side of the students' views: they train and are evaluated at this resolution."""
    teacher_size: int
    """Side of the synthetic images and of the teacher's views."""
    labeled: int
    val: int
    unlabeled: int
    test: int
    teacher: str
    student: str
    teacher_epochs: int
    student_epochs: int
    """Every student runs this many epochs of ``labeled + unlabeled`` samples: the same steps."""
    batch_size: int

    @property
    def total_images(self) -> int:
        return self.labeled + self.val + self.unlabeled + self.test


PLANS: dict[str, DemoPlan] = {
    "default": DemoPlan(image_size=48, teacher_size=64, labeled=128, val=64, unlabeled=512, test=256,
                        teacher="emo2_5m", student="emo2_1m", teacher_epochs=16, student_epochs=6, batch_size=32),
    "quick": DemoPlan(image_size=32, teacher_size=32, labeled=16, val=8, unlabeled=32, test=16, teacher="emo2_1m",
                      student="emo2_1m", teacher_epochs=1, student_epochs=1, batch_size=16),
}
"""``default``: the full demo, an EMOv2-5M teacher at 64x64 and EMOv2-1M students at 48x48;
``quick``: a smoke run of every stage, with an EMOv2-1M teacher (the student's layout). The losses,
optimiser and schedule are the packaged ``demo`` recipe's."""


@dataclass(frozen=True)
class DemoData:
    """The demo's splits as labels sources, and the unlabeled images' folder."""

    labeled: pipeline.Labels
    val: pipeline.Labels
    test: pipeline.Labels
    unlabeled: Path
    note: str

    def sizes(self) -> dict[str, int]:
        from .data import read_labels

        sizes = {name: len(read_labels(getattr(self, name).csv)) for name in ("labeled", "val", "test")}
        sizes["unlabeled"] = sum(1 for _ in self.unlabeled.iterdir())
        return {name: sizes[name] for name in SPLITS}


def _say(console: Any, text: str) -> None:
    console.print(text, highlight=False)


def _make_data(out: Path, plan: DemoPlan, seed: int, images: str | os.PathLike[str] | None) -> DemoData:
    """Synthetic faces split at random into one folder per split, with a labels CSV per labeled split
    (the unlabeled split's scores are not written anywhere the demo reads)."""
    from .data import make_synthetic_fiqa, read_labels
    from .distill import write_scores_csv

    shutil.rmtree(out / "splits", ignore_errors=True)  # a folder of an earlier demo run: made anew
    made = make_synthetic_fiqa(out / "data", plan.total_images, size=plan.teacher_size, seed=seed, sources=images)
    labels = read_labels(made.labels)
    order = np.random.default_rng(seed).permutation(len(labels)).tolist()
    folders: dict[str, Path] = {}
    start = 0
    for name in SPLITS:
        part = [labels[i] for i in sorted(order[start:start + getattr(plan, name)])]
        start += getattr(plan, name)
        folder = out / "splits" / name
        folder.mkdir(parents=True, exist_ok=True)
        for label in part:
            os.replace(made.image_dir / label.name, folder / label.name)
        if name != "unlabeled":
            write_scores_csv(out / "splits" / f"{name}.csv", [x.name for x in part], [x.score for x in part])
        folders[name] = folder
    made.image_dir.rmdir()
    splits = {n: pipeline.Labels(out / "splits" / f"{n}.csv", folders[n]) for n in ("labeled", "val", "test")}
    return DemoData(**splits, unlabeled=folders["unlabeled"],
                    note=(made.image_dir.parent / "SYNTHETIC_DATA.txt").read_text().strip())


def _config(plan: DemoPlan, data: DemoData, out: Path, *, role: str, seed: int, device: str) -> RunConfig:
    """The run config of one model: the packaged ``demo`` recipe (``kdfiqa recipes demo``) for the
    teacher's (``train``) or the students' (``distill``) command, with the plan's data, sizes and
    epochs; the same form ``kdfiqa train/distill --config`` reads. The control and the offline
    student have no online teacher (``distill.loss`` null)."""
    from .config import ConfigLayer, load_recipe, resolve_config

    teacher = role == "teacher"
    size = plan.teacher_size if teacher else plan.image_size
    command = "train" if teacher else "distill"
    layer = {
        "description": f"kdfiqa demo: {ROLE_TITLES[role]}",
        "model": {"name": plan.teacher if teacher else plan.student, "input": size},
        "data": {"root": str(data.labeled.root), "csv": str(data.labeled.csv), "val_root": str(data.val.root),
                 "val_csv": str(data.val.csv),
                 "samples_per_epoch": None if teacher else plan.labeled + plan.unlabeled},
        "train": {"output_dir": str(out / role), "epochs": plan.teacher_epochs if teacher else plan.student_epochs,
                  "batch_size": plan.batch_size, "seed": seed, "device": device},
        "distill": {"loss": None, "teacher_input": plan.teacher_size},
    }
    return resolve_config(command, [*load_recipe("demo", command), ConfigLayer("kdfiqa demo plan", layer)])


def _recipe_distill_loss() -> str:
    """The online distillation loss of the ``demo`` recipe's students."""
    from .config import load_recipe, resolve_config

    return resolve_config("distill", load_recipe("demo", "distill")).distill.loss


ONLINE_DISTILL_LOSS = "1.0*hybrid"
"""The online student's distillation term: HybridLoss (alpha 0.75) against the teacher's calibrated
scores. The recipe's 0.5 x temperature MSE faded to about a tenth of the loss; in the KD study
(``benchmarks/kd_gain.py``) this term and 2 x temperature MSE gained most of the online variants."""


def online_settings(plan: DemoPlan) -> dict[str, Any]:
    """The ``distill`` settings of the demo's online student (and its untrained-teacher ablation): the
    unlabeled images trained on online beside the labels, half of every batch labeled, the teacher's
    outputs calibrated onto the label scale; the best online variant of ``benchmarks/kd_gain.py``."""
    return {"loss": ONLINE_DISTILL_LOSS, "unlabeled_use": "online", "labeled_per_batch": plan.batch_size // 2,
            "calibrate_online": True, "raw_if_degenerate": True}


def _student_config(base: RunConfig, *, teacher: Path | None, pseudo: pipeline.Labels | None,
                    recipe_loss: str | None, online: Mapping[str, Any] | None, unlabeled: Path) -> RunConfig:
    """``base`` with the teacher it distils from online (``teacher``, with the recipe's distillation
    loss, the teacher seeing its own view of each crop), the pseudo-labels it adds, and ``online``
    settings that train on the ``unlabeled`` images online."""
    import dataclasses

    data = base.data
    if pseudo is not None:
        data = dataclasses.replace(data, pseudo_csv=str(pseudo.csv), pseudo_root=str(pseudo.root))
    if online is not None:
        data = dataclasses.replace(data, unlabeled=str(unlabeled))
    settings = {"teachers": [str(teacher)] if teacher else [], "loss": recipe_loss if teacher else None, **(online or {})}
    distill = dataclasses.replace(base.distill, **settings)
    return dataclasses.replace(base, data=data, distill=distill)


def _untrained_teacher(config: RunConfig, path: Path) -> Path:
    """The teacher network as initialised (the same seed), saved as a checkpoint for the ablation."""
    from .checkpoint import build_checkpoint, save_checkpoint
    from .models.deploy import deploy_config, set_deploy_config

    model = pipeline.build_model(config)
    set_deploy_config(model, deploy_config(model).replace(input_size=config.model.input))
    return save_checkpoint(path, build_checkpoint(model, config=config.to_dict()))


def evaluate_checkpoint(checkpoint: Path, test: pipeline.Labels, device: torch.device
                        ) -> tuple[dict[str, float], list[str], np.ndarray, np.ndarray]:
    """Challenge metrics of a checkpoint on the test split, fed by its own deployment transform, with
    the test names, its predictions and the true scores."""
    from torch.utils.data import DataLoader

    from .data import FIQADataset
    from .engine import predict
    from .inference import load_inference_model
    from .metrics import evaluate

    loaded = load_inference_model(checkpoint)
    dataset = FIQADataset(test.root, test.csv, transform=loaded.transform())
    preds = predict(loaded.model.to(device), DataLoader(dataset, batch_size=64, shuffle=False), device=device)
    pred, mos = preds.scores.double().numpy(), preds.mos.double().numpy()
    return evaluate(pred, mos), list(preds.names), pred, mos


def _cost(report: CostReport, budget: Budget) -> dict[str, Any]:
    return {"params": report.params, "gflops_224": report.gflops, "within_budget": budget.fits(report)}


SHORT_TITLES = {"teacher": "teacher", "control": "control (alone)", "offline_kd": "offline KD",
                "online_kd": "online KD", "combined_kd": "offline+online KD",
                "untrained_teacher_kd": "untrained teacher"}
"""Table row names, short enough for an 80-column terminal."""


def _table(summary: Mapping[str, Any]) -> Any:
    from rich import box
    from rich.table import Table

    budget, models = summary["budget"]["name"], summary["models"]
    table = Table(
        title=f"kdfiqa demo on SYNTHETIC data: held-out test set ({summary['splits']['test']} images)",
        caption=f"teacher {models['teacher']['network']}, students {models['control']['network']}; gain: score "
                f"minus the control's; params and GFLOPs (fvcore) at {BUDGET_RESOLUTION}x{BUDGET_RESOLUTION}, "
                f"where a deployed student must fit {budget}",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1),
    )
    for column in ("model", "SRCC", "PLCC", "score", "gain", "params", "GFLOPs", "budget"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for role in MODEL_ROLES:
        row = models[role]
        gain = "" if role in ("teacher", "control") else f"{summary['gains'][role]['score']:+.3f}"
        name = SHORT_TITLES[role] + (" COLLAPSED" if row["collapsed"] else "")
        table.add_row(name, f"{row['srcc']:.3f}", f"{row['plcc']:.3f}", f"{row['score']:.3f}", gain,
                      f"{row['params'] / 1e6:.2f}M", f"{row['gflops_224']:.3f}",
                      "fits" if row["within_budget"] else "OVER")
    return table


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


STATE_FILE = "demo.json"
"""The demo's own record in its folder, written once its data is made: the options it was started with
(``--resume`` continues only a demo started with the same ones)."""

STAGES = ("data", "teacher", "pseudo_labels", *STUDENT_ROLES, "evaluation")
"""The demo's stages in order: each training stage keeps its files in ``out/<stage>``."""

STAGE_NAMES = {"data": "data", "pseudo_labels": "pseudo-labels", "evaluation": "evaluation", **SHORT_TITLES}
"""How the stage lines name the stages."""


class DemoProgress(ProgressDisplay):
    """What the demo shows while a model trains: the progress bar of each epoch on a terminal, and
    one line per finished epoch, indented under its stage's line (marked when it collapsed)."""

    def on_epoch_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        line = epoch_line(record, trainer.config.epochs) + ("  (collapsed)" if record.get("collapsed") else "")
        self.console.print(f"    {line}", markup=False, highlight=False)

    def on_interrupt(self, trainer: Any, signum: int) -> None:
        self.console.print("    stopping after this step (last.pt keeps it)", markup=False, highlight=False)


def _command(settings: Mapping[str, Any], out: Path, *, resume: bool) -> str:
    """The ``kdfiqa demo`` command line of a demo's ``settings`` (``quick``, ``seed``, ``images``,
    ``device``: those not at their default)."""
    import shlex

    words = ["kdfiqa", "demo", *(["--resume"] if resume else []), "--out", str(out)]
    if settings["quick"]:
        words.append("--quick")
    if settings["seed"] != 0:
        words += ["--seed", str(settings["seed"])]
    if settings["images"] is not None:
        words += ["--images", settings["images"]]
    if settings["device"] != "cpu":
        words += ["--device", settings["device"]]
    return shlex.join(words)


def _again(settings: Mapping[str, Any], out: Path, *, resume: bool) -> str:
    """How to start (or resume) the demo of ``settings`` again: its command line, or the
    :func:`run_demo` call from Python."""
    given = ", ".join(f"{k}={v!r}" for k, v in settings.items() if k in ("quick", "seed", "images", "device")
                      and v != {"quick": False, "seed": 0, "images": None, "device": "cpu"}[k])
    call = f"run_demo({str(out)!r}{', ' + given if given else ''}{', resume=True' if resume else ''})"
    return spelled(f"`{_command(settings, out, resume=resume)}`", call)


def _held_demo(out: Path, settings: Mapping[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds an earlier demo unless ``overwrite`` (a new one) or ``resume`` (the
    same demo, started with the same ``settings``; one without its :data:`STATE_FILE` cannot be
    resumed)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{spelled('--out', 'out_dir')} {out}: is a file where a folder is expected; choose another path")
    if resume and overwrite:
        raise ConfigError(f"{spelled('--resume', 'resume=True')} continues the demo in {spelled('--out', 'out_dir')} and "
                          f"{spelled('--overwrite', 'overwrite=True')} replaces it: pass one of them")
    state = out / STATE_FILE
    if resume:
        if not state.is_file():
            raise ConfigError(f"{spelled('--resume', 'resume=True')}: {out} holds no demo to resume (no {STATE_FILE}); "
                              f"start one with {_again(settings, out, resume=False)}")
        try:
            stored = json.loads(state.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{spelled('--resume', 'resume=True')}: {state} is damaged ({type(exc).__name__}); start "
                              f"again with {spelled('--overwrite', 'overwrite=True')}") from None
        if stored != dict(settings):
            raise ConfigError(f"{spelled('--resume', 'resume=True')}: the demo in {out} was started with other options; "
                              f"resume it with {_again(stored, out, resume=True)}")
        return
    held = [p for p in (out / "summary.json", *sorted(out.glob("*/last.pt"))) if p.is_file()] if out.is_dir() else []
    if held and not overwrite:
        raise ConfigError(f"{spelled('--out', 'out_dir')} {out}: already holds a demo ({held[0].relative_to(out)}); pass "
                          f"{spelled('--resume', 'resume=True')} to continue it, {spelled('--overwrite', 'overwrite=True')} "
                          f"to replace it, or choose another {spelled('--out', 'out_dir')}")


def _stored_data(out: Path) -> DemoData:
    """The splits a resumed demo made before (see :func:`_make_data`)."""
    splits = {n: pipeline.Labels(out / "splits" / f"{n}.csv", out / "splits" / n) for n in ("labeled", "val", "test")}
    return DemoData(**splits, unlabeled=out / "splits" / "unlabeled",
                    note=(out / "data" / "SYNTHETIC_DATA.txt").read_text().strip())


def _finished_run(config: RunConfig) -> pipeline.RunResult | None:
    """The result of the training stage of ``config`` when its ``last.pt`` holds every epoch (or an
    early stop), read from its files without touching them; ``None`` for a stage not finished."""
    from .checkpoint import load_checkpoint
    from .engine import TrainState

    out = Path(config.train.output_dir)
    last, best = out / "last.pt", out / "best.pt"
    if not last.is_file():
        return None
    state = TrainState.from_checkpoint(load_checkpoint(last), last)
    if state.batch_in_epoch or (state.epoch < config.train.epochs and not state.stopped_early):
        return None
    return pipeline.RunResult(out, best if best.is_file() else last, list(state.history), config)


class _Stages:
    """The demo's stage lines: ``[k/N] stage: what it does`` when one starts, ``done in S s`` when it
    ends, ``finished earlier: reused`` for one a resumed demo skips, and each stage's time."""

    def __init__(self, console: Any, resume: bool) -> None:
        self.console, self.resume = console, resume
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []
        self.current = "data"
        self._started = time.perf_counter()

    def start(self, stage: str, what: str) -> None:
        self.current, self._started = stage, time.perf_counter()
        _say(self.console, f"[{STAGES.index(stage) + 1}/{len(STAGES)}] {what}")

    def reuse(self, stage: str, what: str, where: str) -> None:
        self.timings[stage] = 0.0
        self.reused.append(stage)
        _say(self.console, f"[{STAGES.index(stage) + 1}/{len(STAGES)}] {what}: finished earlier, reused ({where})")

    def done(self, note: str = "") -> None:
        self.timings[self.current] = round(time.perf_counter() - self._started, 3)
        _say(self.console, f"    done in {self.timings[self.current]:.1f} s{note}")


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    images: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    plan: DemoPlan | None = None,
    budget: Budget = VQUALA2025,
    console: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run the demo of the module docstring into ``out_dir`` and return its summary. A folder that
    already holds a demo (its ``summary.json`` or a model's ``last.pt``) is refused unless
    ``overwrite`` (start over) or ``resume``. The folder is this demo's while it runs: its writer lock
    (:func:`kdfiqa.engine.distributed.rank_zero_writer_lock`) is taken before it is looked at, so a
    second demo into it, from another process, is refused with one line naming the holder's pid.

    ``resume`` continues the demo in ``out_dir`` started with the same options: a stage whose files
    say it finished (the data, the pseudo-labels, a model whose ``last.pt`` holds every epoch) is
    reused as it is, the interrupted model continues from its ``last.pt``, and the rest run. The
    console shows a header, one line per stage with one line per finished epoch under it (and the
    progress bar of each epoch on a terminal), then the results table and the gains; on Ctrl-C it
    says how to resume. ``callbacks`` (:class:`~kdfiqa.engine.Callback`) run in every model's
    training after the demo's own.

    torch uses at most one thread per usable core while it runs (more would only contend).

    ``quick`` picks the ``quick`` plan of :data:`PLANS` (``plan`` overrides either); ``images`` is a
    folder of the user's own unlabeled face photos used as clean sources instead of drawn faces;
    ``device`` is ``cpu``, ``cuda`` or ``auto``. Writes into ``out_dir``: ``demo.json`` (the options
    it was started with), ``data/`` (the synthetic set's notes), ``splits/`` (one image folder per
    split and the labeled splits' CSVs), ``pseudo_labels.csv``, one training folder per model
    (``best.pt``, ``last.pt``, ``log.jsonl``), ``predictions/`` (``image,predicted,true`` on the test
    set per model), ``plots/`` (``scatter_<model>.png``, ``training_curves.png``) and
    ``summary.json``, whose ``models`` entry holds, per model, the test metrics of
    :func:`kdfiqa.metrics.evaluate`, the parameter count, the GFLOPs at 224, the budget verdict and
    whether its training collapsed (``collapsed``: marked in the table and warned about), whose
    ``gains`` entry each student's gain over the control, and whose ``reused_stages`` the stages a
    resumed demo took from before.
    """
    from .console import make_console

    out = Path(out_dir)
    settings = {"quick": quick, "seed": seed, "images": None if images is None else str(images), "device": device,
                "plan": asdict(plan or PLANS["quick" if quick else "default"])}
    if images is not None and not Path(images).is_dir():
        raise DataError(f"{spelled('--images')} {images}: no such folder; give a folder of face photos")
    # the whole folder is this demo's while it runs: a second demo into it is refused, naming this pid
    with rank_zero_writer_lock(os.path.join(out, ""), init_distributed(device)):
        _held_demo(out, settings, resume=resume, overwrite=overwrite)
        console = console or make_console()
        stages = _Stages(console, resume)
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, _usable_cores()))
        try:
            return _run(out, DemoPlan(**settings["plan"]), settings, stages=stages, budget=budget,
                        callbacks=[DemoProgress(console=console), *callbacks], replace=overwrite or resume)
        except KeyboardInterrupt:
            if (out / STATE_FILE).is_file():
                _say(console, f"interrupted during the {STAGE_NAMES[stages.current]} stage; finished stages are "
                              f"kept: resume with `{_command(settings, out, resume=True)}`")
            else:
                _say(console, f"interrupted while making the data; nothing to resume: start again with "
                              f"`{_command(settings, out, resume=False)}`")
            raise
        finally:
            torch.set_num_threads(threads)


def _run(out: Path, plan: DemoPlan, settings: Mapping[str, Any], *, stages: _Stages, budget: Budget,
         callbacks: Sequence[Any], replace: bool) -> dict[str, Any]:
    from .data.csv_files import write_table
    from .models import model_info
    from .plots import curves_plot, scatter_plot

    started = time.perf_counter()
    console, resume, seed, images = stages.console, stages.resume, settings["seed"], settings["images"]
    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(settings["device"])
    source = "crops of your photos in " + str(images) if images is not None else "procedurally drawn cartoon faces"
    _say(console, f"[bold]kdfiqa demo[/bold]: SYNTHETIC data ({source}), degraded at known severities; "
                  "scores are computed from the severities, not rated by people.")
    _say(console, f"{len(STAGES)} stages into {out}: " + ", ".join(STAGE_NAMES[s] for s in STAGES)
                  + (" (resumed: finished stages are reused)" if resume else "")
                  + f"; Ctrl-C stops, `{_command(settings, out, resume=True)}` continues.")
    if resume:
        data = _stored_data(out)
        stages.reuse("data", "data", f"{out / 'splits'}")
    else:
        stages.start("data", f"data: {plan.total_images} synthetic images of {plan.teacher_size}x{plan.teacher_size}")
        data = _make_data(out, plan, seed, images)
        write_atomic(out / STATE_FILE, json.dumps({"settings": dict(settings)}, indent=2) + "\n", overwrite=True)
        stages.done()
    sizes = data.sizes()
    _say(console, f"    splits in {out / 'splits'}: " + ", ".join(f"{name} {count}" for name, count in sizes.items())
                  + " (the unlabeled part's scores are not used)")

    configs = {role: _config(plan, data, out, role=role, seed=seed, device=settings["device"]) for role in MODEL_ROLES}
    distill_loss = _recipe_distill_loss()

    def trained(role: str, what: str, run: Any) -> pipeline.RunResult:
        """Stage ``role``: reused when finished, resumed from its ``last.pt`` when interrupted, else run
        (a new run replacing any partial files)."""
        finished = _finished_run(configs[role]) if resume else None
        if finished is not None:
            stages.reuse(role, what, finished.checkpoint.relative_to(out).as_posix())
            return finished
        stages.start(role, what)
        again = resume and (Path(configs[role].train.output_dir) / "last.pt").is_file()
        if again:
            _say(console, f"    resuming from {role}/last.pt")
        result = run(configs[role], ctx=ctx, resume=again, overwrite=not again, callbacks=callbacks)
        stages.done(f"; best {result.checkpoint.name}" + (" (collapsed: every epoch)" if result.collapsed else ""))
        return result

    results = {"teacher": trained(
        "teacher", f"teacher: {plan.teacher} ({model_info(plan.teacher).description}) trained on the {plan.labeled} "
                   f"labeled images, {plan.teacher_epochs} epochs at {plan.teacher_size}x{plan.teacher_size} "
                   f"(students: {plan.image_size}x{plan.image_size})", pipeline.train)}
    teacher_ckpt = results["teacher"].checkpoint

    pseudo_csv = out / "pseudo_labels.csv"
    what = (f"pseudo-labels: the teacher scores the {sizes['unlabeled']} unlabeled images, calibrated on the labels "
            "by a 4-parameter logistic (its raw scores where that fit is degenerate, as warned)")
    if resume and pseudo_csv.is_file():  # written atomically: present means finished
        pseudo = pipeline.Labels(pseudo_csv, data.unlabeled, score_range=None)
        stages.reuse("pseudo_labels", what, pseudo_csv.name)
    else:
        stages.start("pseudo_labels", what)
        teacher = pipeline.build_teacher(configs["teacher"], ctx, [str(teacher_ckpt)])
        pseudo = pipeline.pseudo_label(teacher, data.unlabeled, pseudo_csv, calibrate_on=data.labeled,
                                       raw_if_degenerate=True, batch_size=64, ctx=ctx, overwrite=True)
        stages.done(f" -> {pseudo.csv}")

    gate = measure(pipeline.build_model(configs["control"]), BUDGET_RESOLUTION)
    _say(console, f"budget: {plan.student} at {BUDGET_RESOLUTION}x{BUDGET_RESOLUTION}: {gate.gflops:.4f} GFLOPs, "
                  f"{gate.params:,} params: {'fits' if budget.fits(gate) else 'does not fit'} {budget.describe()} "
                  f"(every distilled student is checked again before its first step; the demo trains at {plan.image_size}x{plan.image_size} only for speed)")
    untrained = out / "untrained_teacher" / "init.pt"
    if not (resume and untrained.is_file()):  # written atomically, from the seed alone
        _untrained_teacher(configs["teacher"], untrained)
    online = online_settings(plan)
    on_unlabeled = (f"labels + the {sizes['unlabeled']} unlabeled images online ({online['labeled_per_batch']} of "
                    f"{plan.batch_size} labeled per batch), {ONLINE_DISTILL_LOSS} against the")
    students = {
        "control": (None, None, None, "labels only"),
        "offline_kd": (None, pseudo, None, "labels + calibrated pseudo-labels"),
        "online_kd": (teacher_ckpt, None, online, f"{on_unlabeled} teacher's calibrated scores"),
        "combined_kd": (teacher_ckpt, pseudo, None, f"labels + pseudo-labels, {distill_loss} against the teacher"),
        "untrained_teacher_kd": (untrained, None, online, f"{on_unlabeled} untrained teacher"),
    }
    steps = plan.student_epochs * ((plan.labeled + plan.unlabeled) // plan.batch_size)
    for role, (source, labels, on_images, what) in students.items():
        if source is not None or labels is not None:
            configs[role] = _student_config(configs[role], teacher=source, pseudo=labels, recipe_loss=distill_loss,
                                            online=on_images, unlabeled=data.unlabeled)
        results[role] = trained(role, f"{ROLE_TITLES[role]}: {plan.student} on {what}, {plan.student_epochs} epochs "
                                      f"of {plan.labeled + plan.unlabeled} samples ({steps} steps)",
                                pipeline.train if source is None and labels is None else pipeline.run_distill)

    stages.start("evaluation", f"evaluation: every model on the {sizes['test']} held-out test images, predictions "
                               "and plots")
    models: dict[str, Any] = {}
    costs = {plan.student: gate}  # one measurement per network: the students share theirs
    for role in MODEL_ROLES:
        result = results[role]
        metrics, names, pred, mos = evaluate_checkpoint(result.checkpoint, data.test, ctx.device)
        network = configs[role].model.name
        if network not in costs:
            costs[network] = measure(pipeline.build_model(configs[role]), BUDGET_RESOLUTION)
        write_table(out / "predictions" / f"{role}.csv", ("image", "predicted", "true"),
                    [(n, float(p), float(m)) for n, p, m in zip(names, pred, mos)])
        scatter_plot(pred, mos, out / "plots" / f"scatter_{role}.png",
                     title=f"{ROLE_TITLES[role]} ({network})", split=f"test split, {len(names)} images",
                     note=f"SRCC {metrics['srcc']:.3f}", collapsed=result.collapsed)
        models[role] = {
            "network": network, **metrics, **_cost(costs[network], budget),
            "checkpoint": result.checkpoint.relative_to(out).as_posix(),
            "epochs": len(result.history), "steps": result.history[-1]["step"] if result.history else 0,
            "collapsed": result.collapsed,
        }
    curves_plot({ROLE_TITLES[r] + (" (collapsed)" if results[r].collapsed else ""): results[r].history
                 for r in MODEL_ROLES}, out / "plots" / "training_curves.png",
                title=f"kdfiqa demo (synthetic data): validation score on the validation split "
                      f"({sizes['val']} images) and training loss per epoch")
    stages.done(f"; plots in {out / 'plots'}")

    control = models["control"]
    summary = {
        "synthetic_data": True,
        "data_note": data.note,
        "seed": seed,
        "quick": settings["quick"],
        "plan": asdict(plan),
        "train_resolution": [plan.image_size, plan.image_size],
        "teacher_resolution": [plan.teacher_size, plan.teacher_size],
        "budget_resolution": [BUDGET_RESOLUTION, BUDGET_RESOLUTION],
        "budget": {"name": budget.name, "max_gflops": budget.max_gflops, "max_params": budget.max_params},
        "splits": sizes,
        "split_files": {name: getattr(data, name).csv.relative_to(out).as_posix() for name in ("labeled", "val", "test")},
        "split_roots": {name: getattr(data, name).root.relative_to(out).as_posix() for name in ("labeled", "val", "test")},
        "models": models,
        "gains": {role: {k: models[role][k] - control[k] for k in ("srcc", "plcc", "score")}
                  for role in STUDENT_ROLES if role != "control"},
        "elapsed_s": time.perf_counter() - started,
        "timings_s": stages.timings,
        "reused_stages": stages.reused,
    }
    # a demo another process finished into this folder meanwhile is replaced only when asked
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n", overwrite=replace)
    console.print(_table(summary))
    collapsed = [ROLE_TITLES[r] for r in MODEL_ROLES if models[r]["collapsed"]]
    if collapsed:
        _say(console, f"warning: {'; '.join(collapsed)} collapsed (every validated epoch predicted a near-constant "
                      f"score): their figures and gains are not a result; try another {spelled('--seed')}")
    gains = summary["gains"]
    reused = f" ({len(stages.reused)} stages reused)" if stages.reused else ""
    _say(console, "KD gain over the control on the held-out test set (score): "
                  + ", ".join(f"{ROLE_TITLES[r].removeprefix('student, ')} {gains[r]['score']:+.4f}" for r in gains)
                  + f". Outputs in {out}; {summary['elapsed_s']:.0f} s{reused}.")
    return summary
