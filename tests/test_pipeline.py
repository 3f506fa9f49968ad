"""One pipeline: the CLI and the Python API run the same stages; inputs are used as given; every
validation happens before a model is built; one distributed context; the deployment config is
written by every path."""

from __future__ import annotations

import csv
import re
import dataclasses
import json
import shutil
import sys

import pytest
import torch

import kdfiqa.checkpoint
import kdfiqa.distill
import kdfiqa.engine.distributed
import kdfiqa.models
from kdfiqa import pipeline
from kdfiqa.checkpoint import load_checkpoint
from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset, build_transform
from kdfiqa.distill import Supervised, Teacher
from kdfiqa.engine import Trainer, TrainConfig
from kdfiqa.errors import ConfigError
from kdfiqa.inference import load_inference_model
from tiny_fiqa import TINY, run_cli, synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    images, labels = synthetic(root, 24, 0, "labeled")
    unlabeled, _ = synthetic(root, 8, 1, "unlabeled")
    return root, images, labels, unlabeled



def _common(images, labels, **extra):
    argv = ["--model", TINY, "--root", images, "--csv", labels, "--device", "cpu", "--quiet", "--epochs", "1",
            "--batch-size", "4", "--val-fraction", "0.25", "--seed", "3"]
    for flag, value in extra.items():
        argv += [f"--{flag.replace('_', '-')}", value]
    return argv


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def _assert_same_weights(a, b):
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_cli_and_api_distill_give_bit_identical_students(tmp_path, data, capsys):
    _, images, labels, _ = data
    teacher_dir = tmp_path / "teacher"
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--input", "40", "--out", teacher_dir])
    assert code == 0, err
    teacher = teacher_dir / "best.pt"
    cli_dir = tmp_path / "cli"
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--teacher", teacher, "--teacher-input", "40",
                                 "--distill-loss", "0.5*temperature_mse", "--out", cli_dir])
    assert code == 0, err
    stored = RunConfig.from_dict(load_checkpoint(cli_dir / "best.pt")["config"])
    api_config = dataclasses.replace(stored, train=dataclasses.replace(stored.train, output_dir=str(tmp_path / "api")))
    api = pipeline.distill(api_config, teacher=Teacher(str(teacher), input_size=40))
    _assert_same_weights(_weights(cli_dir / "best.pt"), _weights(api.checkpoint))
    _assert_same_weights(_weights(cli_dir / "last.pt"), _weights(api.output_dir / "last.pt"))


def test_same_command_and_seed_give_the_same_weights(tmp_path, data, capsys):
    _, images, labels, _ = data
    for name in ("a", "b"):
        assert run_cli(capsys, ["train", *_common(images, labels), "--out", tmp_path / name])[0] == 0
    _assert_same_weights(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))


def test_a_given_pseudo_label_csv_is_used_as_given(tmp_path, data, capsys):
    root, images, labels, unlabeled = data
    pseudo = tmp_path / "mine.csv"
    names = sorted(p.name for p in unlabeled.iterdir())
    pseudo.write_text("".join(f"{n},0.5\n" for n in names))
    out = tmp_path / "offline"
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--pseudo-csv", pseudo, "--pseudo-root",
                                 unlabeled, "--distill-loss", "none", "--out", out])
    assert code == 0, err
    config = load_checkpoint(out / "best.pt")["config"]
    assert config["data"]["pseudo_csv"] == str(pseudo) and config["data"]["pseudo_root"] == str(unlabeled)
    assert not (out / "pseudo_labels.csv").exists()
    assert pseudo.read_text() == "".join(f"{n},0.5\n" for n in names)


@pytest.mark.parametrize("extra, needle", [
    (["--pseudo-csv", "{labels}", "--unlabeled", "{unlabeled}", "--teacher", TINY], "cannot be combined"),
    (["--pseudo-root", "{unlabeled}", "--teacher", TINY], "--pseudo-root is only used with --pseudo-csv"),
    (["--calibrate", "--teacher", TINY], "--calibrate and --self-train act on"),
    (["--teacher", TINY, "--budget", "vquala2052"], "unknown budget"),
    (["--teacher", TINY, "--feature-loss", "backbone.0"], "STUDENT_MODULE:TEACHER_MODULE"),
    (["--teacher", TINY, "--task-loss", "1.0*msee"], "msee"),
    (["--teacher", TINY, "--set", "data.train_transform={mode: zoom}"], "mode"),
    (["--teacher", TINY, "--lr", "nan"], "not a finite number"),
    (["--teacher", TINY, "--set", "train.lr=.nan"], "not a finite number"),
    (["--teacher", TINY, "--val-fraction", "0.05"], "--val-fraction"),
    (["--teacher", TINY, "--batch-size", "64"], "--batch-size"),
])
def test_bad_settings_are_refused_before_any_model_is_built(tmp_path, data, capsys, monkeypatch, extra, needle):
    _, images, labels, unlabeled = data
    built = []
    real = kdfiqa.models.create_model
    monkeypatch.setattr(kdfiqa.models, "create_model", lambda *a, **k: built.append(a) or real(*a, **k))
    extra = [str(e).replace("{labels}", str(labels)).replace("{unlabeled}", str(unlabeled)) for e in extra]
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), *extra, "--out", tmp_path / "run"])
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert built == []
    assert not (tmp_path / "run").exists()


def test_one_distributed_context_and_one_teacher_per_run(tmp_path, data, capsys, monkeypatch):
    """``kdfiqa distill`` makes the distributed context once, and builds its teacher once even when
    that teacher both labels --unlabeled and teaches online."""
    _, images, labels, unlabeled = data
    contexts, teachers = [], []
    real_context = kdfiqa.engine.distributed.init_distributed

    def counting_context(*args, **kwargs):
        contexts.append(args)
        return real_context(*args, **kwargs)

    for module in [m for name, m in sys.modules.items() if name.startswith("kdfiqa")]:
        if getattr(module, "init_distributed", None) is real_context:
            monkeypatch.setattr(module, "init_distributed", counting_context)

    class CountingTeacher(Teacher):
        def __init__(self, *args, **kwargs):
            teachers.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(kdfiqa.distill, "Teacher", CountingTeacher)
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--teacher", TINY, "--unlabeled", unlabeled,
                                 "--out", tmp_path / "d"])
    assert code == 0, err
    assert len(contexts) == 1 and len(teachers) == 1
    assert (tmp_path / "d" / "pseudo_labels.csv").is_file()


def test_every_path_writes_the_deployment_transform(tmp_path, data, capsys):
    """A student trained at 40x40 (not its model's 32 nor 224) is evaluated at 40 from the CLI's and
    the Python API's checkpoints alike."""
    _, images, labels, _ = data
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--input", "40", "--out", tmp_path / "cli"])
    assert code == 0, err
    spec = {"mode": "resize", "size": 40}
    train = FIQADataset(images, labels, transform=build_transform({**spec, "flip": True}))
    val = FIQADataset(images, labels, transform=build_transform(spec))
    torch.manual_seed(0)
    model = kdfiqa.models.create_model(TINY)
    Trainer(Supervised(model), train, val, TrainConfig(output_dir=str(tmp_path / "api"), epochs=1, batch_size=8,
                                                        device="cpu", quiet=True)).fit()
    for path in (tmp_path / "cli" / "best.pt", tmp_path / "api" / "best.pt"):
        loaded = load_inference_model(path)
        assert loaded.input_size == (3, 40, 40), path
        deploy = load_checkpoint(path)["model"]["deploy"]
        assert deploy["input_size"] == [3, 40, 40] and deploy["eval_transform"]["size"] == [40, 40], deploy
        code, out, err = run_cli(capsys, ["budget", path, "--json", "--max-gflops", "1"])
        assert code == 0, err
        assert [r["input_size"] for r in json.loads(out)["results"]] == [[3, 224, 224]]  # vquala2025's deployment
        code, out, err = run_cli(capsys, ["budget", path, "--json", "--input", "40"])
        assert code == 0, err
        assert [r["input_size"] for r in json.loads(out)["results"]] == [[3, 40, 40]]


def test_distill_checks_the_budget_at_the_deployment_size(tmp_path, data, capsys, caplog):
    """Training small does not dodge the budget: the student is measured at 224x224 by default, and
    a --deploy-input below the budget's own deployment size does not lower it."""
    import logging

    caplog.set_level(logging.INFO)
    _, images, labels, _ = data
    wide = ["distill", *_common(images, labels), "--teacher", TINY, "--set", "model.kwargs.width=160"]
    for extra in ([], ["--deploy-input", "32"]):
        code, _, err = run_cli(capsys, [*wide, *extra, "--out", tmp_path / "over"])
        assert code == 2, err
        assert "exceeds budget vquala2025" in err and "224" in err, err
        assert not (tmp_path / "over").exists()
    assert run_cli(capsys, [*wide, "--budget", "none", "--out", tmp_path / "free"])[0] == 0
    argv = [a for a in ["distill", *_common(images, labels), "--teacher", TINY] if a != "--quiet"]  # --quiet hides
    code, _, err = run_cli(capsys, [*argv, "--deploy-input", "240", "--out", tmp_path / "large"])  # the verdict line
    assert code == 0, err
    assert "fits vquala2025" in caplog.text and "240x240" in caplog.text


def test_validation_split_too_small_is_refused_before_training(tmp_path, capsys):
    images, labels = synthetic(tmp_path, 20, 0, "few")
    code, _, err = run_cli(capsys, ["train", "--model", TINY, "--root", images, "--csv", labels, "--device", "cpu",
                                 "--quiet", "--batch-size", "4", "--out", tmp_path / "r"])
    assert code == 2
    assert "--val-fraction" in err and "2 validation image(s)" in err, err
    assert not (tmp_path / "r").exists()


def test_labels_source_round_trip(tmp_path, data):
    _, _, labels, unlabeled = data
    with open(labels, newline="") as f:
        rows = list(csv.reader(f))
    source = pipeline.Labels(labels, labels.parent / "images")
    assert len(source.dataset()) == len(rows)
    with pytest.raises(ConfigError, match="given twice"):
        config = RunConfig.from_dict({"model": {"name": TINY}, "data": {"root": str(labels.parent / "images"),
                                      "csv": str(labels), "pseudo_csv": str(labels)}})
        pipeline.validate(config, "distill", pseudo=source)


@pytest.mark.slow
def test_same_command_and_seed_give_the_same_weights_in_separate_processes(tmp_path, data):
    import subprocess

    _, images, labels, _ = data
    for name in ("a", "b"):
        common = [str(a) for a in _common(images, labels)]
        common[common.index(TINY)] = "mobilenetv3_small_fiqa"  # registered in a fresh process too
        argv = [sys.executable, "-m", "kdfiqa.cli.main", "train", *common, "--input", "32", "--out", str(tmp_path / name)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    _assert_same_weights(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))


def test_train_given_a_budget_checks_it_at_the_deployment_size(tmp_path, data, capsys):
    _, images, labels, _ = data
    wide = ["--set", "model.kwargs.width=160"]  # fits at 32x32, not at 224x224
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), *wide, "--budget", "vquala2025",
                                 "--out", tmp_path / "checked"])
    assert code == 2 and "exceeds budget vquala2025" in err, err
    assert not (tmp_path / "checked").exists()
    assert run_cli(capsys, ["train", *_common(images, labels), *wide, "--out", tmp_path / "free"])[0] == 0


def test_the_teacher_sees_its_view_in_its_own_normalisation(tmp_path, data, capsys):
    """A teacher trained on symmetric (-1, 1) inputs is fed its view that way during online KD,
    whatever the student's normalisation (here ImageNet's, which reaches 2.6)."""
    from kdfiqa.models import create_model, deploy_config, set_deploy_config

    _, images, labels, _ = data
    student_dir = tmp_path / "student"
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--teacher", TINY, "--teacher-input", "40",
                                 "--distill-loss", "0.5*temperature_mse", "--out", student_dir])
    assert code == 0, err
    stored = RunConfig.from_dict(load_checkpoint(student_dir / "best.pt")["config"])
    assert stored.data.train_transform["normalize"] == "imagenet"
    network = create_model(TINY)
    set_deploy_config(network, deploy_config(network).replace(normalize="symmetric"))
    seen = []
    network.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    config = dataclasses.replace(stored, train=dataclasses.replace(stored.train, output_dir=str(tmp_path / "sym")))
    pipeline.distill(config, teacher=Teacher(network, input_size=40))
    fed = torch.cat([x.flatten() for x in seen])
    assert fed.numel() > 0 and fed.min() >= -1.0 - 1e-6 and fed.max() <= 1.0 + 1e-6
    assert fed.max() > 0.5 and fed.min() < -0.5  # the images span the range


def test_an_ensemble_member_converts_the_first_members_view_to_its_own_normalisation():
    from kdfiqa.data.transforms import renormalize
    from kdfiqa.models import create_model, deploy_config, set_deploy_config

    symmetric, imagenet = create_model(TINY), create_model(TINY)
    set_deploy_config(symmetric, deploy_config(symmetric).replace(normalize="symmetric"))
    seen = []
    imagenet.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    teacher = Teacher([symmetric, imagenet])
    assert teacher.normalize == "symmetric"
    pixels = torch.rand(2, 3, 32, 32)
    view = pixels * 2 - 1  # symmetric
    teacher({"image": torch.zeros(2, 3, 32, 32), "teacher_image": view})
    expected = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(renormalize(expected, "imagenet", "symmetric"), view, atol=1e-6, rtol=1e-5)


def _sized(eval_transform, input_size=(224, 224)):
    config = RunConfig()
    return dataclasses.replace(config, model=dataclasses.replace(config.model, input=list(input_size)),
                               data=dataclasses.replace(config.data, eval_transform=eval_transform))


@pytest.mark.parametrize("eval_transform,expected", [
    ({"mode": "resize", "size": [224, 256]}, [(3, 224, 224), (3, 224, 256)]),  # larger in width only
    ({"preset": "bit_ssvgg_test"}, [(3, 224, 224), (3, 224, 336)]),  # the size comes from a preset
    ({"mode": "center_crop", "size": 224, "crop": 256}, [(3, 224, 224)]),  # the network sees size, not crop
    ({"mode": "resize", "size": 160}, [(3, 224, 224)]),  # covered by the budget's deployment size
])
def test_the_budget_is_checked_at_the_size_the_checkpoint_deploys_at(eval_transform, expected):
    from kdfiqa.budget import VQUALA2025

    assert pipeline.deploy_sizes(_sized(eval_transform), VQUALA2025) == expected


@pytest.mark.slow
def test_a_given_student_is_checked_at_the_runs_deployment_size(tmp_path, data):
    """A Student built (and checked) at 224 is re-checked at the run's 256 before anything trains."""
    from kdfiqa.budget import BudgetExceeded
    from kdfiqa.distill import Student
    from kdfiqa.models import create_model

    _, images, labels, _ = data
    config = RunConfig.from_dict({
        "model": {"name": "emo2_1m", "input": 256},
        "data": {"root": str(images), "csv": str(labels), "val_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 4, "output_dir": str(tmp_path / "run"), "device": "cpu"},
        "distill": {"loss": "0.5*temperature_mse"},
    })
    student = Student(create_model("emo2_1m"))
    assert student.within_budget and student.input_sizes == [(3, 224, 224)]
    with pytest.raises(BudgetExceeded, match="256x256"):
        pipeline.distill(config, student=student, teacher=Teacher(create_model(TINY)))
    assert not (tmp_path / "run").exists()


def test_pseudo_label_never_overwrites_an_input_and_asks_before_replacing(tmp_path, data):
    _, images, labels, unlabeled = data
    teacher_dir = tmp_path / "teacher"
    network = kdfiqa.models.create_model(TINY)
    teacher_ckpt = teacher_dir / "teacher.pt"
    teacher_dir.mkdir()
    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint

    save_checkpoint(teacher_ckpt, build_checkpoint(network))
    calibration = pipeline.Labels(labels, images)
    before = labels.read_bytes(), teacher_ckpt.read_bytes()
    for out in (labels, teacher_ckpt):
        with pytest.raises(ConfigError, match="would overwrite"):
            pipeline.pseudo_label(str(teacher_ckpt), unlabeled, out, calibrate_on=calibration, overwrite=True)
    assert (labels.read_bytes(), teacher_ckpt.read_bytes()) == before
    out = tmp_path / "pseudo.csv"
    first = pipeline.pseudo_label(str(teacher_ckpt), unlabeled, out)  # a checkpoint path is a teacher
    assert first.csv == out and out.read_text().count("\n") == 8
    with pytest.raises(ConfigError, match="overwrite=True"):
        pipeline.pseudo_label(str(teacher_ckpt), unlabeled, out)
    pipeline.pseudo_label(str(teacher_ckpt), unlabeled, out, overwrite=True)


def test_pseudo_labels_of_validation_or_labeled_images_are_refused(tmp_path, data, capsys):
    _, images, labels, unlabeled = data
    rows = labels.read_text().splitlines()
    train_csv, val_csv = tmp_path / "train.csv", tmp_path / "val.csv"
    train_csv.write_text("\n".join(rows[:18]) + "\n")
    val_csv.write_text("\n".join(rows[18:]) + "\n")
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text(rows[20].split(",")[0] + ",0.5\n")  # a validation image
    base = ["train", *_common(images, train_csv), "--val-csv", val_csv, "--pseudo-root", images]
    code, _, err = run_cli(capsys, [*base, "--pseudo-csv", pseudo, "--out", tmp_path / "a"])
    assert code == 2 and "also in the validation set" in err and str(pseudo) in err, err
    pseudo.write_text(rows[0].split(",")[0] + ",0.5\n")  # a labeled image
    code, _, err = run_cli(capsys, [*base, "--pseudo-csv", pseudo, "--out", tmp_path / "b"])
    assert code == 2 and "also in the labeled training share" in err, err
    pseudo.write_text("\n".join(rows) + "\n")  # a val_fraction split of the same labels: all collide
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--pseudo-root", images, "--pseudo-csv", pseudo,
                                 "--out", tmp_path / "c"])
    assert code == 2 and "also in the" in err, err


def test_a_label_file_read_against_the_wrong_root_names_its_root_option_not_skip_bad(tmp_path, data, capsys):
    """Pseudo-labels of the unlabeled folder given without --pseudo-root resolve against --root, where
    none of their images is: the error names --pseudo-root (and never --skip-bad, which would drop
    them all), with or without --skip-bad; likewise --val-root for a validation CSV."""
    _, images, labels, generated = data
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for path in sorted(generated.glob("*.png")):  # names of their own, as a real unlabeled folder has
        shutil.copy(path, unlabeled / f"u_{path.name}")
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text("".join(f"{p.name},0.5\n" for p in sorted(unlabeled.glob("*.png"))))
    base = ["train", *_common(images, labels), "--pseudo-csv", pseudo]
    for extra in ([], ["--skip-bad"]):
        code, _, err = run_cli(capsys, [*base, *extra, "--out", tmp_path / "run"])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert f"--pseudo-csv {pseudo}: 8 of 8 of its images are missing under {images}" in lines[0]
        assert "(--pseudo-root not given, so --root's)" in lines[0] and "give --pseudo-root the folder" in lines[0]
        assert "--skip-bad" not in lines[0]
    assert run_cli(capsys, [*base, "--pseudo-root", unlabeled, "--out", tmp_path / "ok"])[0] == 0
    rows = labels.read_text().splitlines()
    train_csv, val_csv = tmp_path / "train.csv", tmp_path / "val.csv"
    train_csv.write_text("\n".join(rows[:18]) + "\n")
    val_csv.write_text("\n".join(rows[18:]) + "\n")
    code, _, err = run_cli(capsys, ["train", *_common(images, train_csv), "--val-csv", val_csv, "--val-root", unlabeled,
                                 "--out", tmp_path / "val"])
    assert code == 2 and f"--val-csv {val_csv}: 6 of 6 of its images are missing under {unlabeled}," in err, err
    assert "give --val-root the folder" in err and "--skip-bad" not in err


def test_an_unlabeled_folder_holding_labeled_images_is_refused_before_the_teacher_labels_it(tmp_path, data, capsys):
    _, images, labels, _ = data
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--teacher", TINY, "--unlabeled", images,
                                 "--out", tmp_path / "run"])
    assert code == 2 and f"{images}: image" in err and "also in the labels" in err, err
    assert not list(tmp_path.rglob("*.csv"))


@pytest.mark.filterwarnings("ignore::kdfiqa.metrics.ConstantInputWarning")  # constant predictions, on purpose
def test_a_run_that_collapsed_is_said_last_with_its_files_kept(tmp_path, data, capsys):
    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint

    _, images, labels, _ = data
    constant = kdfiqa.models.create_model(TINY)
    with torch.no_grad():
        constant.head.weight.zero_()
    save_checkpoint(tmp_path / "constant.pt", build_checkpoint(constant))
    argv = ["train", *_common(images, labels), "--init", tmp_path / "constant.pt", "--lr", "1e-12",
            "--set", "train.optimizer=sgd", "--set", "train.weight_decay=0", "--set", "train.momentum=0",
            "--out", tmp_path / "run"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0 and err.strip().splitlines()[-1].startswith("warning: kdfiqa train: the run collapsed"), err
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "best.pt").exists()
    stored = RunConfig.from_dict(load_checkpoint(tmp_path / "run" / "last.pt")["config"])
    config = dataclasses.replace(stored, train=dataclasses.replace(stored.train, output_dir=str(tmp_path / "api")))
    assert pipeline.train(config).collapsed
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--out", tmp_path / "fine"])
    assert code == 0 and "collapsed" not in err, err


def test_a_new_run_removes_the_files_of_an_earlier_one_and_a_lone_best_pt_is_a_run(tmp_path, data, capsys):
    _, images, labels, _ = data
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"another run's best")
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--out", out])
    assert code == 2 and "already holds a run (best.pt)" in err and "--overwrite" in err, err
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--out", out, "--overwrite"])
    assert code == 0, err
    assert not (out / "best.pt").exists() or (out / "best.pt").read_bytes() != b"another run's best"
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_a_validation_csv_sharing_images_with_the_training_csv_is_refused(tmp_path, data, capsys):
    _, images, labels, _ = data
    code, _, err = run_cli(capsys, ["train", *_common(images, labels), "--val-csv", labels, "--out", tmp_path / "leak"])
    assert code == 2 and "is also in the validation set" in err and "training images must come from other" in err, err
    assert not (tmp_path / "leak").exists()


def test_bad_images_of_the_training_and_the_validation_set_are_listed_together(tmp_path, data, capsys):
    _, images, labels, _ = data
    rows = labels.read_text().splitlines()
    train_csv, val_csv = tmp_path / "train.csv", tmp_path / "val.csv"
    train_csv.write_text("\n".join([*rows[:16], "gone_train,0.5"]) + "\n")
    val_csv.write_text("\n".join([*rows[16:], "gone_val,0.5"]) + "\n")
    code, _, err = run_cli(capsys, ["train", *_common(images, train_csv), "--val-csv", val_csv, "--out", tmp_path / "r"])
    assert code == 2 and "2 of 26 images cannot be used" in err, err
    assert "gone_train.png" in err and "gone_val.png" in err


def test_a_teacher_csv_missing_training_images_is_refused_before_the_first_step(tmp_path, data, capsys):
    _, images, labels, _ = data
    rows = labels.read_text().splitlines()
    scores, train_csv, val_csv = tmp_path / "teacher_scores.csv", tmp_path / "train.csv", tmp_path / "val.csv"
    scores.write_text("\n".join(rows[1:]) + "\n")  # the first training image has no teacher score
    train_csv.write_text("\n".join(rows[:18]) + "\n")
    val_csv.write_text("\n".join(rows[18:]) + "\n")
    code, _, err = run_cli(capsys, ["distill", *_common(images, train_csv), "--val-csv", val_csv, "--teacher", scores,
                                 "--distill-loss", "0.5*temperature_mse", "--out", tmp_path / "run"])
    first = rows[0].split(",")[0]
    assert code == 2 and f"no teacher score for image {first!r}" in err, err
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "log.jsonl").exists()


def test_each_ensemble_member_runs_at_its_own_size_and_a_bare_distiller_converts_the_students_image():
    """One teacher view (the first member's 40x40) is resized for a 48x48 member; a Distiller fed a
    batch without a teacher view converts the student's ImageNet image for a symmetric teacher."""
    from kdfiqa.distill import Distiller, Student
    from kdfiqa.models import create_model, deploy_config, set_deploy_config

    small, large = create_model(TINY), create_model(TINY)
    set_deploy_config(small, deploy_config(small).replace(input_size=(3, 40, 40)))
    set_deploy_config(large, deploy_config(large).replace(input_size=(3, 48, 48), normalize="symmetric"))
    seen = {}
    for name, net in (("small", small), ("large", large)):
        net.backbone.register_forward_pre_hook(lambda module, args, name=name: seen.__setitem__(name, args[0]))
    Teacher([small, large])({"image": torch.zeros(2, 3, 32, 32), "teacher_image": torch.rand(2, 3, 40, 40)})
    assert tuple(seen["small"].shape[-2:]) == (40, 40) and tuple(seen["large"].shape[-2:]) == (48, 48)
    seen.clear()
    pixels = torch.rand(2, 3, 32, 32)
    imagenet = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    distiller = Distiller(Teacher(large), Student(create_model(TINY), budget=kdfiqa.budget.Budget(1.0, 10**7)))
    distiller.frozen_forward({"image": imagenet, "score": torch.rand(2)})
    fed = seen["large"]
    assert fed.min() >= -1.0 - 1e-5 and fed.max() <= 1.0 + 1e-5 and tuple(fed.shape[-2:]) == (48, 48)


def test_overwrite_removes_an_earlier_runs_stage_folders_but_never_an_input(tmp_path, data, capsys):
    _, images, labels, _ = data
    out = tmp_path / "run"
    for stage in ("ssar", "self_train_1/teacher", "self_train_2/teacher"):
        (out / stage).mkdir(parents=True)
        (out / stage / "last.pt").write_bytes(b"an earlier run's stage")
    (out / "pseudo_labels.csv").write_text("old.png,0.5\n")
    teacher = out / "self_train_2" / "teacher" / "best.pt"  # a teacher of that earlier run, given as input
    kdfiqa.checkpoint.save_checkpoint(teacher, kdfiqa.checkpoint.build_checkpoint(kdfiqa.models.create_model(TINY)))
    code, _, err = run_cli(capsys, ["distill", *_common(images, labels), "--teacher", teacher,
                                 "--distill-loss", "0.5*temperature_mse", "--out", out, "--overwrite"])
    assert code == 0, err
    assert not (out / "ssar").exists() and not (out / "self_train_1").exists()
    assert not (out / "pseudo_labels.csv").exists()
    assert teacher.is_file()  # kept: an input of this run


def test_batch_of_one_pairs_train_and_suggested_batch_sizes_work(tmp_path):
    from kdfiqa.data import FIQADataset, build_transform
    from kdfiqa.distill import Supervised
    from kdfiqa.distill.ssar import SSARObjective
    from kdfiqa.engine import Trainer, TrainConfig
    from kdfiqa.errors import ConfigError
    from kdfiqa.models import create_model

    images, labels = synthetic(tmp_path, 10, 0, "labeled")
    data = FIQADataset(images, labels, transform=build_transform({"mode": "resize", "size": 32}))
    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=3, drop_last=False, device="cpu")
    model = create_model("mobilenetv3_small_fiqa")
    with pytest.raises(ConfigError, match=r"use batch_size (\d+) or (\d+)") as refused:
        Trainer(Supervised(model), data, None, config)  # 10 % 3 == 1
    for size in map(int, re.search(r"batch_size (\d+) or (\d+)", str(refused.value)).groups()):
        assert 10 % size != 1
    objective = SSARObjective(model)
    assert objective.images_per_sample == 2  # a last "batch of one" is a clean and a degraded image
    assert Trainer(objective, data, None, config).config.batch_size == 3
