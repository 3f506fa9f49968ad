"""Model folders (model.safetensors, config.json, README.md): written from a model or a checkpoint, read
back safely through the checkpoint's allow-listed model-spec path, and accepted wherever a checkpoint
is: load_target, evaluate/predict/budget, Teacher, --init, and hf-hub:ORG/NAME (a local folder here)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import huggingface_hub
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.distill import Teacher
from kdfiqa.errors import CheckpointError, ConfigError
from kdfiqa.models import create_model, registry
from kdfiqa.models.model_folder import (
    CARD,
    CONFIG,
    FORMAT,
    WEIGHTS,
    is_model_folder,
    load_folder_weights,
    load_model_folder,
    read_model_folder,
    write_model_folder,
)
from kdfiqa.targets import load_target
from tiny_fiqa import TINY, synthetic


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model(TINY, width=4).eval()


@pytest.fixture
def folder(tmp_path, model):
    return write_model_folder(model, tmp_path / "tiny-fiqa", test_metrics={"srcc": 0.61, "plcc": float("nan")})


def _one_line(info: pytest.ExceptionInfo) -> str:
    text = str(info.value)
    assert "\n" not in text
    return text


def _edit(folder, **changes):
    values = json.loads((folder / CONFIG).read_text())
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    (folder / CONFIG).write_text(json.dumps(values))
    return values


def test_a_folder_round_trips_the_weights_and_the_deploy_config(folder, model):
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CARD]) and is_model_folder(folder)
    back = load_model_folder(folder)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back(x), model(x)) and not back.training
    assert back.deploy_config == model.deploy_config
    values = json.loads((folder / CONFIG).read_text())
    assert values["format"] == FORMAT and values["architecture"] == TINY
    assert values["deploy"] == model.deploy_config.to_dict()
    assert values["budget"] == {"name": "vquala2025", "max_gflops": 0.5, "max_params": 5_000_000, "fits": True}
    assert values["cost"][0]["input_size"] == [3, 224, 224] and values["cost"][0]["params"] == 425
    assert values["metrics"] == {"test": {"srcc": 0.61, "plcc": None}}  # JSON has no NaN
    card = (folder / CARD).read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: kdfiqa\n")
    for needle in (f"`{TINY}`", "425", "vquala2025", "**fits**", "| test | 0.6100 |", "## Data", "## Licence"):
        assert needle in card


def test_a_checkpoint_gives_its_teacher_recipe_and_validation_metrics(tmp_path, model):
    run = {"source": "recipe:ecnu", "description": "two-stage distillation", "loss": {"task": "hybrid"},
           "distill": {"teachers": ["/home/me/runs/teacher/best.pt"], "loss": "0.5*temperature_mse"},
           "data": {"csv": "/home/me/data/train.csv"},
           "train": {"epochs": 3, "optimizer": "adamw", "lr": 0.001, "scheduler": "cosine", "batch_size": 8, "seed": 0}}
    ckpt = save_checkpoint(tmp_path / "best.pt", build_checkpoint(model, config=run, metrics={"srcc": 0.7, "rmse": 0.1}))
    folder = write_model_folder(ckpt, tmp_path / "out", budget=None, license="cc-by-nc-4.0", data_note="Synthetic faces.")
    card = (folder / CARD).read_text()
    for needle in ("license: cc-by-nc-4.0", "`best.pt`", "`0.5*temperature_mse`", "recipe:ecnu", "`hybrid`",
                   "3 epochs, adamw lr 0.001", "`train.csv`", "| validation | 0.7000 |", "Synthetic faces.",
                   "not checked"):
        assert needle in card
    assert "/home/me" not in card
    values = read_model_folder(folder)
    assert values.budget is None and values.metrics == {"validation": {"srcc": 0.7, "rmse": 0.1}}
    assert torch.equal(load_model_folder(folder).head.weight, model.head.weight)


def test_an_existing_folder_is_kept_unless_overwritten(folder, model):
    with pytest.raises(ConfigError, match="already holds .*overwrite=True") as info:
        write_model_folder(model, folder)
    _one_line(info)
    assert write_model_folder(model, folder, overwrite=True) == folder


def test_a_model_outside_the_registry_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="outside the registry") as info:
        write_model_folder(torch.nn.Linear(2, 1), tmp_path / "x")
    _one_line(info)
    assert not (tmp_path / "x").exists()


def test_forbidden_kwargs_in_config_json_are_refused_before_building(folder, monkeypatch):
    calls = []
    monkeypatch.setattr(registry, "create_model", lambda *a, **kw: calls.append(kw))
    values = json.loads((folder / CONFIG).read_text())
    deploy = {**values["deploy"], "kwargs": {"width": 4, "checkpoint_path": "/etc/passwd"}}
    _edit(folder, deploy=deploy)
    with pytest.raises(CheckpointError, match=r"refused to replay model argument\(s\) checkpoint_path;.*width") as info:
        load_model_folder(folder)
    assert "tiny-fiqa" in _one_line(info) and calls == []


@pytest.mark.parametrize("changes,needle", [
    ({"format": "kdfiqa.model_folder.v9"}, "is not 'kdfiqa.model_folder.v1'"),
    ({"colour": "red"}, "unknown field"),
    ({"deploy": None}, "'deploy' is required"),
    ({"deploy": [1, 2]}, "'deploy' must be a dict"),
    ({"architecture": "emo2_1m"}, "differs from deploy.name"),
    ({"budget": {"fits": "yes"}}, "budget.fits"),
    ({"cost": [{"params": 1}]}, r"cost\[0\]"),
    ({"metrics": {"train": {}}}, "metrics.train"),
])
def test_a_malformed_config_json_is_one_line(folder, changes, needle):
    _edit(folder, **changes)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model_folder(folder)
    assert "config.json" in _one_line(info)


def test_damaged_or_mismatched_weights_are_one_line(folder, tmp_path):
    (folder / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_folder(folder)
    other = write_model_folder(create_model(TINY, width=2), tmp_path / "narrow")
    shutil.copy(other / WEIGHTS, tmp_path / "w.safetensors")
    good = write_model_folder(create_model(TINY, width=4), tmp_path / "wide")
    shutil.copy(tmp_path / "w.safetensors", good / WEIGHTS)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_model_folder(good)
    _one_line(info)
    (good / WEIGHTS).write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="damaged safetensors") as info:
        load_model_folder(good)
    _one_line(info)


def test_load_target_and_teacher_take_a_folder(folder, model):
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_target(str(folder))(x), model(x))
    teacher = Teacher(str(folder))
    assert torch.allclose(teacher({"image": x}), model.forward_logits(x))


def test_init_weights_from_a_folder(folder, model):
    fresh = create_model(TINY, width=4)
    load_folder_weights(fresh, folder)
    assert torch.equal(fresh.head.weight, model.head.weight)
    with pytest.raises(CheckpointError, match="not 'mobilenetv3_small_fiqa'"):
        load_folder_weights(create_model("mobilenetv3_small_fiqa"), folder)


def test_hub_targets_resolve_to_the_downloaded_folder(folder, model, monkeypatch):
    asked = []

    def download(repo_id, revision=None, allow_patterns=None):
        asked.append((repo_id, revision, sorted(allow_patterns)))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_target("hf-hub:kdfiqa/tiny@v1")(x), model(x))
    assert torch.allclose(Teacher("hf-hub:kdfiqa/tiny")({"image": x}), model.forward_logits(x))
    assert asked == [("kdfiqa/tiny", "v1", sorted([WEIGHTS, CONFIG, CARD])), ("kdfiqa/tiny", None, sorted([WEIGHTS, CONFIG, CARD]))]
    with pytest.raises(ConfigError, match="hf-hub:ORG/NAME"):
        load_target("hf-hub:no-org")

    def offline(**kwargs):
        raise OSError("network unreachable\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConfigError, match="cannot download kdfiqa/tiny .*network unreachable") as info:
        load_target("hf-hub:kdfiqa/tiny")
    _one_line(info)


def test_the_commands_take_a_folder(folder, tmp_path, capsys):
    images, labels = synthetic(tmp_path, 12, 0, "data")
    assert main(["budget", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == str(folder)
    assert main(["evaluate", str(folder), "--root", str(images), "--csv", str(labels), "--json"]) == 0
    assert "srcc" in capsys.readouterr().out
    assert main(["predict", str(folder), str(images), "--out", str(tmp_path / "scores.csv")]) == 0
    assert (tmp_path / "scores.csv").read_text().startswith("image,score")
    default = write_model_folder(create_model(TINY), tmp_path / "default-width", budget=None)
    code = main(["train", "--root", str(images), "--csv", str(labels), "--model", TINY, "--init", str(default),
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.3",
                 "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    code = main(["train", "--root", str(images), "--csv", str(labels), "--model", TINY, "--init", str(tmp_path),
                 "--out", str(tmp_path / "run2"), "--epochs", "1", "--device", "cpu"])
    assert code == 2 and "no such checkpoint file or model folder" in capsys.readouterr().err
