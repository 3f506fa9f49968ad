"""``kdfiqa budget`` and ``kdfiqa models``: verdicts, exit codes, JSON shape, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kdfiqa import __version__
from kdfiqa._warnings import import_fvcore_nn
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.models import create_model

FACTORIES = '''
import torch
from torch import nn

def small():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))

def huge():
    return nn.Sequential(nn.Conv2d(3, 512, 7), nn.Conv2d(512, 512, 3), nn.AdaptiveAvgPool2d(1))

def broken():
    raise ValueError("cannot build this")

def not_a_module():
    return 42
'''


@pytest.fixture()
def factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_json_matches_fvcore_and_the_documented_shape(capsys):
    code, out, _ = run(capsys, "budget", "timm:mobilenetv3_small_100", "--input", "224", "160x192", "--json")
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"target", "budget", "results", "within"}
    assert result["budget"] == {"name": "vquala2025", "max_gflops": 0.5, "max_params": 5_000_000}
    model = create_model("timm:mobilenetv3_small_100").eval()
    fvnn = import_fvcore_nn()
    for row, (h, w) in zip(result["results"], [(224, 224), (160, 192)]):
        assert set(row) == {"input_size", "flops", "gflops", "params", "within"}
        assert row["input_size"] == [3, h, w]
        reference = fvnn.FlopCountAnalysis(model, torch.randn(1, 3, h, w))
        reference.unsupported_ops_warnings(False)
        reference.uncalled_modules_warnings(False)
        assert row["flops"] == reference.total() and row["gflops"] == reference.total() / 1e9
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["within"] is True
    assert result["within"] is True


@pytest.mark.slow
def test_over_budget_exits_1_and_names_the_costliest_modules(capsys, factories):
    code, out, _ = run(capsys, "budget", f"{factories}:huge", "--input", "64")
    assert code == 1
    assert "OVER" in out and "costliest modules" in out
    assert "1 " in out or "0 " in out  # module names of the Sequential appear as indices
    code, out, _ = run(capsys, "budget", f"{factories}:huge", "--input", "64", "--json")
    assert code == 1 and json.loads(out)["within"] is False


def test_custom_limits_override_the_preset(capsys, factories):
    code, out, _ = run(capsys, "budget", f"{factories}:small", "--input", "32", "--max-params", "100", "--json")
    result = json.loads(out)
    assert code == 1 and result["budget"]["name"] == "custom" and result["budget"]["max_params"] == 100
    assert result["results"][0]["params"] == 8 * 27 + 8 + 8 + 1


@pytest.mark.parametrize("target,message", [
    ("{f}:broken", "calling broken() failed: ValueError: cannot build this"),
    ("{f}:not_a_module", "returned int, not an nn.Module"),
    ("{f}:missing", "has no callable named 'missing'"),
    ("no_such_file.py:f", "does not exist"),
    ("emo2_1mm", "unknown model 'emo2_1mm'"),
    ("no_such_package.module:f", "cannot import module"),
])
def test_bad_targets_exit_2_with_one_line(capsys, factories, target, message):
    code, out, err = run(capsys, "budget", target.format(f=factories))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_target(capsys, tmp_path):
    model = create_model("mobilenetv3_small_fiqa")
    path = tmp_path / "student.pt"
    save_checkpoint(path, build_checkpoint(model))
    code, out, _ = run(capsys, "budget", str(path), "--json")
    result = json.loads(out)
    assert code == 0 and result["results"][0]["params"] == sum(p.numel() for p in model.parameters())
    assert result["results"][0]["input_size"] == [3, 224, 224]


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["budget", "emo2_1m", "--input", "abc"])
    assert exc.value.code == 2
    assert "not an input size" in capsys.readouterr().err
    for value in ("-1", "nan", "inf"):
        code, _, err = run(capsys, "budget", "emo2_1m", "--max-gflops", value)
        assert code == 2 and "--max-gflops must be a finite number > 0" in err, err


@pytest.mark.parametrize("gflops,params", [(float("nan"), 10), (0.0, 10), (0.5, 0), (0.5, 1.5), (True, 10)])
def test_a_budget_with_an_impossible_limit_is_refused(gflops, params):
    from kdfiqa.budget import Budget
    from kdfiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="must be"):
        Budget(max_gflops=gflops, max_params=params)


@pytest.mark.slow
def test_models_lists_every_registered_model_with_its_verdict(capsys):
    code, out, _ = run(capsys, "models", "emo2_*", "--json", "--cost")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and sorted(rows) == ["emo2_1m", "emo2_20m", "emo2_2m", "emo2_5m"]
    assert rows["emo2_1m"]["within_vquala2025"] and rows["emo2_1m"]["role"] == "student"
    assert not rows["emo2_5m"]["within_vquala2025"] and rows["emo2_5m"]["role"] == "teacher"
    assert rows["emo2_1m"]["params"] == sum(p.numel() for p in create_model("emo2_1m").parameters())
    code, _, err = run(capsys, "models", "zzz*")
    assert code == 1 and "no registered model matches 'zzz*'" in err


@pytest.mark.slow
def test_models_lists_at_once_and_measures_only_when_asked(capsys):
    """Without --cost nothing is built (no cost fields); with it, each row is printed whole on one line
    of the captured (non-terminal) output, its name and figures unbroken."""
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and "emo2_1m" in {r["name"] for r in rows} and len(rows) > 10
    assert all(set(r) == {"name", "role", "input_size", "description"} for r in rows)
    code, out, _ = run(capsys, "models", "mobilenetv3_*", "--cost")
    lines = out.splitlines()
    assert code == 0 and "vquala2025" in lines[0] and "<= 5,000,000 params" in lines[0]
    assert lines[1].split() == ["name", "role", "input", "params", "GFLOPs", "vquala2025"]
    for name in ("mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa"):
        row = next(line.split() for line in lines if line.startswith(name + " "))
        params = sum(p.numel() for p in create_model(name).parameters())
        assert row[:4] == [name, "student", "3x224x224", f"{params:,}"] and row[5] == "within", row


def test_command_modules_and_their_parsers_import_nothing_heavy():
    code = """
import argparse, sys
from kdfiqa.cli import budget, evaluate, export, models, predict
sub = argparse.ArgumentParser().add_subparsers()
for command in (budget, evaluate, export, models, predict):
    command.register(sub)
print(",".join(m for m in ("torch", "timm", "fvcore", "rich", "scipy", "PIL") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_entry_point_version_and_help():
    version = subprocess.run(["kdfiqa", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"kdfiqa {__version__}"
    helptext = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", "budget", "--help"],
                              capture_output=True, text=True, check=True).stdout
    assert "examples:" in helptext and "--max-gflops" in helptext
