"""The train, distill, pseudo-label and recipes commands: help, errors, precedence, budget gate, resume."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import yaml

from kdfiqa.cli.main import main
from kdfiqa.config import list_recipes
from tiny_fiqa import TINY, run_cli, synthetic

COMMANDS = ("train", "distill", "pseudo-label", "recipes")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    images, labels = synthetic(root, 20, 0, "labeled")
    return images, labels



@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_examples(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"kdfiqa {command}" in out.split("examples:")[1]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--epochs", "many"], "invalid int value"),
        (["train", "--bogus"], "unrecognized arguments"),
        (["train", "--model", TINY, "--out", "{tmp}/r"], "--root DIR (data.root)"),
        (["train", "--set", "train.lrr=1"], "unknown setting 'train.lrr'"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "--config", "{tmp}/missing.yaml"], "missing.yaml: config file not found"),
        (["train", "--model", "emo9_1m", "--root", "{tmp}", "--csv", "{tmp}/x.csv"], "unknown model 'emo9_1m'"),
        (["distill", "--model", TINY, "--root", "{tmp}", "--csv", "{tmp}/x.csv"], "no teacher"),
        (["pseudo-label", "--teacher", TINY, "--images", "{tmp}", "--out", "{tmp}/p.csv", "--calibrate"],
         "--calibrate needs the labeled set"),
        (["train", "--resume", "--model", TINY, "--out", "{tmp}/none"], "--resume: no last.pt"),
        (["recipes", "--resolved", "train"], "--resolved needs a recipe NAME"),
    ],
)
def test_user_errors_are_one_line_and_status_2(capsys, tmp_path, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "x.csv").write_text("a.png,0.5\n")  # files are checked first: the settings' errors need one
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects the flag itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_print_config_applies_recipe_then_flags_then_set(capsys):
    code, out, _ = run_cli(capsys, ["distill", "--recipe", "2077agent", "--lr", "0.01", "--epochs", "3",
                                 "--set", "train.epochs=2", "--teacher", "a.pt", "--teacher", "b.csv",
                                 "--distill-loss", "none", "--print-config"])
    assert code == 0
    config = yaml.safe_load(out)
    assert config["model"]["name"] == "emo2_1m" and config["model"]["input"] == 224
    assert config["train"]["lr"] == 0.01 and config["train"]["epochs"] == 2
    assert config["train"]["weight_decay"] == 1e-5 and config["train"]["scheduler"] == "step"
    assert config["distill"]["teachers"] == ["a.pt", "b.csv"] and config["distill"]["loss"] is None


def test_recipes_lists_every_recipe_and_shows_one(capsys):
    code, out, _ = run_cli(capsys, ["recipes"])
    assert code == 0
    for name, _ in list_recipes():
        assert name in out
    code, out, _ = run_cli(capsys, ["recipes", "ders"])
    assert code == 0 and yaml.safe_load(out)["model"]["name"] == "lighthspa_fiqa"


@pytest.mark.slow
def test_over_budget_student_is_refused_before_training_unless_allowed(capsys, caplog, tmp_path, data):
    caplog.set_level(logging.INFO)
    images, labels = data
    base = ["distill", "--model", TINY, "--set", "model.kwargs.width=600", "--teacher", TINY,
            "--root", images, "--csv", labels, "--device", "cpu", "--quiet", "--epochs", "1",
            "--batch-size", "8", "--val-fraction", "0.2"]
    code, _, err = run_cli(capsys, [*base, "--out", tmp_path / "refused"])
    assert code == 2
    assert "exceeds budget vquala2025" in err and "params >" in err
    assert not (tmp_path / "refused").exists()

    code, out, err = run_cli(capsys, [*base, "--allow-over-budget", "--out", tmp_path / "allowed"])
    assert code == 0, err
    assert "ALLOW_OVER_BUDGET IS SET" in caplog.text and "6,500,401 params" in caplog.text
    assert (tmp_path / "allowed" / "best.pt").is_file()


def test_resume_continues_therun_cli(capsys, tmp_path, data):
    images, labels = data
    base = ["train", "--model", TINY, "--root", images, "--csv", labels, "--device", "cpu", "--quiet",
            "--batch-size", "8", "--val-fraction", "0.2", "--out", tmp_path / "run"]
    assert run_cli(capsys, [*base, "--epochs", "1"])[0] == 0
    code, _, err = run_cli(capsys, [*base, "--epochs", "2", "--resume"])
    assert code == 2 and "train.epochs was 1" in err and "--allow-changes" in err, err
    code, _, err = run_cli(capsys, [*base, "--epochs", "1", "--resume", "--set", "loss.task=l1"])
    assert code == 2 and "loss.task was 'mse'" in err, err  # the objective is not changed silently
    code, _, err = run_cli(capsys, [*base, "--epochs", "1", "--resume", "--set", "model.kwargs.width=4"])
    assert code == 2 and "model.kwargs was {}" in err and "resumes with its own model" in err, err
    assert "--allow-changes" not in err  # which could not resume another model's weights
    code, out, err = run_cli(capsys, [*base, "--epochs", "2", "--resume", "--allow-changes"])
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert "saved" in out


def test_bad_images_stop_the_run_unless_skipped(capsys, caplog, tmp_path, data):
    caplog.set_level(logging.INFO)
    images, labels = data
    copy = tmp_path / "images"
    shutil.copytree(images, copy)
    victims = sorted(copy.glob("*.png"))[:2]
    victims[0].write_bytes(victims[0].read_bytes()[:100])  # truncated
    victims[1].write_bytes(b"")  # empty
    base = ["train", "--model", TINY, "--root", copy, "--csv", labels, "--device", "cpu", "--quiet",
            "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.2"]
    code, _, err = run_cli(capsys, [*base, "--out", tmp_path / "stopped"])
    assert code == 2
    assert all(v.name in err for v in victims) and "--skip-bad" in err
    assert not (tmp_path / "stopped" / "last.pt").exists()
    code, _, err = run_cli(capsys, [*base, "--skip-bad", "--out", tmp_path / "skipped"])
    assert code == 0, err
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert all(v.name in caplog.text for v in victims)
    assert (tmp_path / "skipped" / "last.pt").is_file()


@pytest.mark.parametrize("signum", [2, 15])
def test_a_stopped_run_exits_with_128_plus_its_signal(monkeypatch, capsys, signum):
    import kdfiqa.cli.models
    from kdfiqa.engine import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted("stopped; resume with last.pt", signum)

    monkeypatch.setattr(kdfiqa.cli.models, "run", stopped)
    assert main(["models"]) == 128 + signum
    assert "interrupted" in capsys.readouterr().err


def test_resume_at_another_input_size_points_at_allow_changes(capsys, tmp_path, data):
    images, labels = data
    base = ["train", "--model", TINY, "--root", images, "--csv", labels, "--device", "cpu", "--quiet",
            "--batch-size", "8", "--val-fraction", "0.2", "--epochs", "1", "--out", tmp_path / "run"]
    assert run_cli(capsys, base)[0] == 0
    code, _, err = run_cli(capsys, [*base, "--resume", "--input", "40"])
    assert code == 2 and "model.input was" in err and "--allow-changes" in err, err
