"""``kdfiqa demo --quick`` end to end, interrupted (SIGINT, as Ctrl-C) in a later stage and resumed, its
outputs checked against independent recomputations, and the PIL plots."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from kdfiqa import pipeline
from kdfiqa._warnings import import_fvcore_nn
from kdfiqa.checkpoint import load_checkpoint
from kdfiqa.models.rebuild import load_model
from kdfiqa.cli.main import main
from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset, build_transform
from kdfiqa.demo import MODEL_ROLES, PLANS, ROLE_TITLES, SHORT_TITLES, STUDENT_ROLES, run_demo
from kdfiqa.distill import Teacher
from kdfiqa.engine import Callback
from kdfiqa.plots import PALETTE, curves_plot, nice_ticks, scatter_plot

METRIC_KEYS = {"srcc", "plcc", "krcc", "rmse", "score", "n"}


INTERRUPTED = "combined_kd"
"""The stage the demo is interrupted in; the stages before it have finished by then."""
FINISHED = ("teacher", "control", "offline_kd", "online_kd")


class InterruptAfterFirstStep(Callback):
    """Sends this process SIGINT, as Ctrl-C does, after the first step of the stage ``role``."""

    def __init__(self, role: str) -> None:
        self.role = role

    def on_step_end(self, trainer, step, terms):
        if trainer.output_dir.name == self.role and trainer.state.batch_in_epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)


def _snapshot(out):
    """(mtime, digest) of every file the stages before :data:`INTERRUPTED` wrote."""
    paths = [*(out / role / name for role in FINISHED for name in ("best.pt", "last.pt", "log.jsonl")),
             out / "pseudo_labels.csv", out / "demo.json", out / "untrained_teacher" / "init.pt",
             *sorted((out / "splits").glob("*.csv"))]
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in paths if p.is_file()}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """(output folder, printed text, files of the finished stages) of a ``kdfiqa demo --quick`` run
    interrupted by SIGINT after the first step of :data:`INTERRUPTED`."""
    from rich.console import Console

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, quick=True, seed=0, device="cpu", console=Console(file=printed, width=4096),
                 callbacks=[InterruptAfterFirstStep(INTERRUPTED)])
    assert (out / INTERRUPTED / "last.pt").is_file() and not (out / "summary.json").exists()
    return out, printed.getvalue(), _snapshot(out)


@pytest.fixture(scope="module")
def demo(interrupted):
    """(output folder, exit status, printed text) of ``kdfiqa demo --resume`` continuing the
    interrupted run: the outputs every other test checks are those of an interrupted demo."""
    out, _, _ = interrupted
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["demo", "--resume", "--quick", "--out", str(out), "--seed", "0", "--device", "cpu"])
    return out, status, printed.getvalue()


@pytest.mark.slow
def test_an_interrupted_demo_says_how_to_resume_and_resumes_without_retraining(interrupted, demo, summary):
    out, first, before = interrupted
    assert "stopping after this step" in first
    assert f"interrupted during the {SHORT_TITLES[INTERRUPTED]} stage" in first
    assert f"resume with `kdfiqa demo --resume --out {out} --quick`" in first
    assert {f"{role}/{name}" for role in FINISHED for name in ("last.pt", "log.jsonl")} <= set(before)
    _, status, text = demo
    assert status == 0
    assert _snapshot(out) == before  # not retrained, not rewritten: same bytes, same modification times
    for role in FINISHED:
        assert f"{ROLE_TITLES[role]}: " in text and f"finished earlier, reused ({role}/" in text, role
    assert f"resuming from {INTERRUPTED}/last.pt" in text
    assert summary["reused_stages"] == ["data", *FINISHED[:1], "pseudo_labels", *FINISHED[1:]]
    assert summary["models"][INTERRUPTED]["steps"] == summary["models"]["control"]["steps"]
    lines = text.splitlines()
    stage_lines = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in stage_lines] == [f"[{k}/9" for k in range(1, 10)]
    epoch_lines = [line for line in lines if line.lstrip().startswith("epoch ")]
    assert len(epoch_lines) == 2  # the interrupted student and the one after it, each 1 epoch


def test_resume_is_refused_without_a_demo_or_with_other_options(demo, tmp_path, capsys):
    out, _, _ = demo
    cases = [(["--out", str(tmp_path / "none")], "holds no demo to resume"),
             (["--out", str(out), "--quick", "--seed", "1"], f"resume it with `kdfiqa demo --resume --out {out} --quick`"),
             (["--out", str(out), "--quick", "--overwrite"], "pass one of them")]
    for args, message in cases:
        assert main(["demo", "--resume", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def summary(demo):
    out, status, _ = demo
    assert status == 0
    return json.loads((out / "summary.json").read_text())


def _read_csv(path):
    with open(path, newline="") as f:
        return [(name, float(score)) for name, score in csv.reader(f)]


def test_demo_prints_the_table_and_says_the_data_is_synthetic(demo):
    _, status, text = demo
    assert status == 0
    assert "SYNTHETIC" in text and "not rated by people" in text
    for role in MODEL_ROLES:
        assert SHORT_TITLES[role] in text and ROLE_TITLES[role] in text, role
    for word in ("SRCC", "PLCC", "score", "gain", "params", "GFLOPs", "vquala2025", "fits", "KD gain"):
        assert word in text, word
    assert "224x224" in text  # the budget is about deployment at 224, said in the output


def test_the_table_rows_are_whole_when_the_output_is_not_a_terminal(demo, summary):
    """Captured output (not a terminal) is laid out unwrapped: each model's row holds its whole name,
    collapse mark and figures on one line, nothing cut with an ellipsis."""
    _, _, text = demo
    assert "\u2026" not in text
    for role in MODEL_ROLES:
        row = summary["models"][role]
        name = SHORT_TITLES[role] + (" COLLAPSED" if row["collapsed"] else "")
        line = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert line.split()[len(name.split()):][:3] == [f"{row[k]:.3f}" for k in ("srcc", "plcc", "score")], line


def test_summary_has_every_figure(summary):
    plan = PLANS["quick"]
    assert summary["synthetic_data"] is True and "synthetic" in summary["data_note"]
    assert summary["budget_resolution"] == [224, 224]
    assert summary["train_resolution"] == [plan.image_size, plan.image_size]
    assert summary["splits"] == {"labeled": plan.labeled, "val": plan.val, "unlabeled": plan.unlabeled,
                                 "test": plan.test}
    assert set(summary["models"]) == set(MODEL_ROLES)
    for role, row in summary["models"].items():
        assert METRIC_KEYS | {"params", "gflops_224", "within_budget", "network", "checkpoint"} <= set(row), role
        assert row["n"] == plan.test
        assert math.isclose(row["score"], (row["srcc"] + row["plcc"]) / 2, abs_tol=1e-12)
    control = summary["models"]["control"]
    assert set(summary["gains"]) == set(STUDENT_ROLES) - {"control"}
    for role, gain in summary["gains"].items():
        for key in ("srcc", "plcc", "score"):
            assert math.isclose(gain[key], summary["models"][role][key] - control[key], abs_tol=1e-12)
    steps = {summary["models"][role]["steps"] for role in STUDENT_ROLES}
    assert len(steps) == 1 and steps.pop() > 0  # every student takes the same number of optimiser steps
    assert {summary["models"][role]["network"] for role in STUDENT_ROLES} == {plan.student}


def test_students_share_initial_weights_and_differ_only_in_their_teacher(demo, summary):
    out, _, _ = demo
    configs = {role: load_checkpoint(out / summary["models"][role]["checkpoint"])["config"] for role in STUDENT_ROLES}
    for config in configs.values():
        assert config["train"] == {**configs["control"]["train"], "output_dir": config["train"]["output_dir"]}
        assert config["model"] == configs["control"]["model"]
    assert configs["control"]["data"]["pseudo_csv"] is None and configs["control"]["distill"]["teachers"] == []
    assert configs["offline_kd"]["data"]["pseudo_csv"] and configs["offline_kd"]["distill"]["loss"] is None
    online = configs["online_kd"]
    assert online["distill"]["loss"] and online["data"]["pseudo_csv"] is None
    # the online student trains on the unlabeled images online, half of every batch labeled, against the
    # teacher's calibrated scores
    assert online["data"]["unlabeled"] == str(out / "splits" / "unlabeled")
    assert online["distill"]["unlabeled_use"] == "online" and online["distill"]["calibrate_online"] is True
    assert online["distill"]["labeled_per_batch"] == online["train"]["batch_size"] // 2
    assert configs["combined_kd"]["distill"]["loss"] and configs["combined_kd"]["data"]["pseudo_csv"]
    assert configs["combined_kd"]["data"]["unlabeled"] is None
    # the ablation is the online student under another (untrained) teacher, nothing else changed
    ablation = configs["untrained_teacher_kd"]
    assert ablation["distill"]["teachers"] != online["distill"]["teachers"]
    assert {**ablation["distill"], "teachers": None} == {**online["distill"], "teachers": None}
    assert ablation["data"] == online["data"]


def test_splits_are_disjoint_and_unlabeled_scores_unused(demo, summary):
    out, _, _ = demo
    names = {name: [n for n, _ in _read_csv(out / path)] for name, path in summary["split_files"].items()}
    names["unlabeled"] = sorted(p.name for p in (out / "splits" / "unlabeled").iterdir())
    all_names = [n for part in names.values() for n in part]
    assert len(all_names) == len(set(all_names)) == sum(summary["splits"].values())
    pseudo = _read_csv(out / "pseudo_labels.csv")
    assert sorted(n for n, _ in pseudo) == names["unlabeled"]
    assert all(0.0 <= s <= 1.0 for _, s in pseudo)


@pytest.mark.slow
def test_the_demo_student_is_the_cli_and_api_student(demo, summary, tmp_path):
    """The demo runs the CLI's stages: its combined-KD student's stored config, given to
    ``kdfiqa distill --config`` and to :func:`kdfiqa.pipeline.distill`, gives the same weights, bit for bit."""
    out, _, _ = demo
    ckpt = load_checkpoint(out / summary["models"]["combined_kd"]["checkpoint"])
    config = RunConfig.from_dict(ckpt["config"])
    stored = tmp_path / "combined.yaml"
    stored.write_text(config.to_yaml())
    assert main(["distill", "--config", str(stored), "--out", str(tmp_path / "cli")]) == 0
    api_config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, output_dir=str(tmp_path / "api")),
        data=dataclasses.replace(config.data, pseudo_csv=None, pseudo_root=None))
    teacher = Teacher(config.distill.teachers[0])
    pseudo = pipeline.Labels(Path(config.data.pseudo_csv), Path(config.data.pseudo_root))
    api = pipeline.distill(api_config, teacher=teacher, pseudo=pseudo)
    name = Path(summary["models"]["combined_kd"]["checkpoint"]).name  # best.pt, or last.pt if every epoch collapsed
    assert api.checkpoint.name == name
    for other in (load_checkpoint(tmp_path / "cli" / name), load_checkpoint(api.checkpoint)):
        assert set(other["state_dict"]) == set(ckpt["state_dict"])
        for name, tensor in ckpt["state_dict"].items():
            assert torch.equal(other["state_dict"][name], tensor), name


@pytest.mark.slow
def test_checkpoints_reproduce_the_summary_figures(demo, summary):
    """Load each saved checkpoint, score the saved test split at its own resolution and recompute the
    metrics with scipy."""
    out, _, _ = demo
    fvnn = import_fvcore_nn()
    for role, row in summary["models"].items():
        size = summary["teacher_resolution"] if role == "teacher" else summary["train_resolution"]
        test = FIQADataset(out / summary["split_roots"]["test"], out / summary["split_files"]["test"],
                           transform=build_transform({"mode": "resize", "size": size}))
        images = torch.stack([test[i]["image"] for i in range(len(test))])
        mos = np.array([float(test[i]["score"]) for i in range(len(test))])
        model = load_model(out / row["checkpoint"])
        assert model.model_name == row["network"]
        with torch.no_grad():
            pred = model(images).reshape(-1).double().numpy()
        with open(out / "predictions" / f"{role}.csv", newline="") as f:
            saved = {r["image"]: (float(r["predicted"]), float(r["true"])) for r in csv.DictReader(f)}
        saved_pred = np.array([saved[n][0] for n in test.names])
        np.testing.assert_allclose(saved_pred, pred, rtol=0, atol=1e-5)  # independent forward pass
        np.testing.assert_array_equal([saved[n][1] for n in test.names], mos)
        # The summary's figures are those of the saved predictions (near-constant predictions of a
        # barely trained model make PLCC sensitive to float rounding, hence the saved ones).
        assert math.isclose(row["srcc"], stats.spearmanr(saved_pred, mos)[0], abs_tol=1e-9), role
        assert math.isclose(row["plcc"], stats.pearsonr(saved_pred, mos)[0], abs_tol=1e-9), role
        assert math.isclose(row["krcc"], stats.kendalltau(saved_pred, mos)[0], abs_tol=1e-9), role
        assert math.isclose(row["rmse"], float(np.sqrt(np.mean((saved_pred - mos) ** 2))), abs_tol=1e-9), role
        assert row["params"] == fvnn.parameter_count(model)[""] == sum(p.numel() for p in model.parameters())
        assert row["within_budget"] == (row["gflops_224"] <= 0.5 and row["params"] <= 5_000_000)
    student = load_model(out / summary["models"]["combined_kd"]["checkpoint"])
    flops = fvnn.FlopCountAnalysis(student, torch.zeros(1, 3, 224, 224))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    # fvcore skips fused attention; kdfiqa counts it as its two matmuls, so it can only be higher.
    assert summary["models"]["combined_kd"]["gflops_224"] >= flops.total() / 1e9 > 0.1
    assert summary["models"]["combined_kd"]["within_budget"] is True


def _non_background_fraction(path) -> float:
    img = np.asarray(Image.open(path).convert("RGB"))
    return float(np.mean(np.any(img != 255, axis=-1)))


def test_plots_are_decodable_and_drawn(demo):
    out, _, _ = demo
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {f"scatter_{role}.png" for role in MODEL_ROLES} | {"training_curves.png"}
    for path in pngs:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) >= 300
            assert len(img.convert("RGB").getcolors(1 << 20)) > 5
        assert 0.02 < _non_background_fraction(path) < 0.6, path.name


def test_scatter_puts_points_where_the_values_are(tmp_path):
    """A point at (true, pred) = (0.8, 0.2) lands right of and below one at (0.2, 0.8)."""
    path = scatter_plot([0.2, 0.8], [0.8, 0.2], tmp_path / "s.png", title="two points", size=400)
    img = np.asarray(Image.open(path).convert("RGB"))
    ys, xs = np.nonzero(np.all(img == PALETTE[0], axis=-1))
    assert xs.size > 0
    left, right = xs < xs.mean(), xs > xs.mean()
    assert ys[right].mean() > ys[left].mean()  # image rows grow downwards: the lower pred sits lower


def test_curves_plot_draws_each_run(tmp_path):
    runs = {
        "a": [{"epoch": e, "train": {"loss": 1.0 / e}, "val": {"score": 0.1 * e}} for e in (1, 2, 3)],
        "b": [{"epoch": e, "train": {"loss": 2.0 / e}, "val": {"score": None}} for e in (1, 2, 3)],
    }
    img = np.asarray(Image.open(curves_plot(runs, tmp_path / "c.png")).convert("RGB"))
    for colour in PALETTE[:2]:
        assert np.all(img == colour, axis=-1).sum() > 50


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), (1.0, 12.0, [0.0, 5.0, 10.0, 15.0]),
     (0.013, 0.047, [0.01, 0.02, 0.03, 0.04, 0.05])],
)
def test_nice_ticks(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_nice_ticks_minimum_step():
    assert nice_ticks(1.0, 2.0, 6, min_step=1.0) == [1.0, 2.0]


def test_missing_images_folder_is_a_one_line_error(tmp_path, capsys):
    status = main(["demo", "--quick", "--out", str(tmp_path / "o"), "--images", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "nowhere" in err[0]


def test_a_folder_holding_a_demo_is_refused_unless_overwrite(demo, summary, capsys):
    out, _, _ = demo
    before = (out / "summary.json").read_bytes()
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a demo (summary.json)" in err and "--overwrite" in err, err
    assert (out / "summary.json").read_bytes() == before
