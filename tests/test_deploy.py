"""The deploy config: its rules, what create_model attaches, and every consumer reading it back from a
checkpoint of a student deployed below 224x224 (evaluate, predict, export, budget, Teacher)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.models.rebuild import load_model
from kdfiqa.cli.main import main
from kdfiqa.data import build_transform
from kdfiqa.distill import Teacher
from kdfiqa.errors import ConfigError
from kdfiqa.export import METADATA_KEY
from kdfiqa.inference import load_inference_model
from kdfiqa.models import DeployConfig, create_model, deploy_config, set_deploy_config
from kdfiqa.models.deploy import attached_deploy_config

from test_cli_inference import _image, _read_scores, _reference, calibrated_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def test_defaults_and_completed_eval_transform():
    config = DeployConfig("net", input_size=(48, 64))
    assert config.input_size == (3, 48, 64) and (config.normalize, config.output) == ("imagenet", "sigmoid")
    assert config.eval_transform == {"mode": "resize", "size": [48, 64], "normalize": "imagenet"}
    preset = DeployConfig("net", eval_transform={"preset": "conquerit_test"}, normalize="symmetric")
    assert preset.eval_transform == {"mode": "center_crop", "size": [224, 224], "resize": [240, 240],
                                     "normalize": "symmetric"}
    training = DeployConfig("net", eval_transform={"mode": "random_crop", "size": 32, "flip": True,
                                                   "teacher_size": 64})
    assert training.eval_transform == {"mode": "random_crop", "size": [32, 32], "normalize": "imagenet"}
    assert build_transform(dict(training.eval_transform)).spec == training.eval_transform


def test_replace_keeps_size_transform_and_normalisation_consistent():
    config = DeployConfig("net", kwargs={"head": {"hidden": (8,)}})
    smaller = config.replace(input_size=(3, 48, 48))
    assert smaller.eval_transform["size"] == [48, 48] and config.eval_transform["size"] == [224, 224]
    native = config.replace(eval_transform={"mode": "native"}).replace(input_size=64)
    assert native.eval_transform == {"mode": "native", "normalize": "imagenet"} and native.input_size == (3, 64, 64)
    symmetric = config.replace(eval_transform={"mode": "resize", "size": 40, "normalize": "symmetric"})
    assert symmetric.normalize == "symmetric"  # a new transform brings its normalisation
    assert config.replace(normalize="none", input_size=32).eval_transform == {
        "mode": "resize", "size": [32, 32], "normalize": "none"}
    # the transform is the one source: the normalisation it names wins over one that only fills gaps
    named = config.replace(eval_transform={"mode": "resize", "normalize": "symmetric"}, normalize="none")
    assert named.normalize == named.eval_transform["normalize"] == "symmetric"
    assert config.replace(eval_transform={"mode": "resize"}, normalize="none").normalize == "none"
    # Resize(256) + CenterCrop(224) at another size keeps its margin: Resize(512) + CenterCrop(448)
    cropped = config.replace(eval_transform={"mode": "center_crop", "size": 224, "resize": 256})
    assert cropped.replace(input_size=448).eval_transform["resize"] == 512
    pair = config.replace(eval_transform={"mode": "center_crop", "size": 224, "resize": [240, 240]})
    assert pair.replace(input_size=(3, 112, 224)).eval_transform["resize"] == [120, 240]


def test_round_trip_equality_and_immutability():
    config = DeployConfig("net", kwargs={"head": {"hidden": (8, 4)}, "window_size": 8}, input_size=(3, 40, 56),
                          output="linear")
    plain = config.to_dict()
    assert plain["kwargs"] == {"head": {"hidden": [8, 4]}, "window_size": 8}
    assert DeployConfig.from_dict(json.loads(json.dumps(plain))) == config
    assert hash(DeployConfig.from_dict(plain)) == hash(config)
    config.kwargs["head"]["hidden"].append(2)  # a copy: the config does not change
    assert config.kwargs["head"] == {"hidden": [8, 4]}
    with pytest.raises(TypeError):
        config.kwargs["window_size"] = 7  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.input_size = (3, 1, 1)  # type: ignore[misc]
    for bad, needle in [({"name": 3}, "name"), ({"name": "x", "kwargs": [1]}, "kwargs must be a mapping"),
                        ({"name": "x", "normalize": "zscore"}, "normalize"), ({"name": "x", "oops": 1}, "unknown"),
                        ({"name": "x", "input_size": "224x0"}, "input_size"),
                        ({"name": "x", "input_size": [3, 20000, 20]}, "input_size")]:
        with pytest.raises(ConfigError, match=needle) as info:
            DeployConfig.from_dict(bad, source="f.pt")
        assert str(info.value).startswith("f.pt: ") and "\n" not in str(info.value)


def test_create_model_attaches_and_hand_built_models_derive():
    model = create_model("emo2_1m", pretrained=False, head={"out_activation": None, "hidden": (16,)})
    config = attached_deploy_config(model)
    assert config is deploy_config(model) and config.name == "emo2_1m"
    assert config.kwargs == {"head": {"out_activation": None, "hidden": [16]}}
    assert (config.input_size, config.output) == ((3, 224, 224), "linear")

    class HandBuilt(nn.Module):
        default_input_size = (3, 32, 40)

    derived = deploy_config(HandBuilt())
    assert attached_deploy_config(HandBuilt()) is None
    assert (derived.name, derived.input_size, derived.output) == (None, (3, 32, 40), "sigmoid")
    with pytest.raises(TypeError):
        set_deploy_config(HandBuilt(), derived.to_dict())  # type: ignore[arg-type]


# ------------------------------------------------- a student deployed at 64x64: every consumer agrees

SIZE = 64


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("deploy")
    images = root / "images"
    images.mkdir()
    names = []
    for i, (h, w) in enumerate([(70, 90), (96, 80), (66, 130), (120, 100), (80, 80)]):
        names.append(f"img{i}.png")
        _image(images / names[-1], h, w, i)
    mos = np.linspace(0.1, 0.9, len(names))
    labels = root / "labels.csv"
    labels.write_text("".join(f"{n},{s:.4f}\n" for n, s in zip(names, mos)))
    model = calibrated_model("mobilenetv3_small_fiqa")
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, SIZE, SIZE)))  # as training will
    path = save_checkpoint(root / "student.pt", build_checkpoint(model))
    refs = [_reference(model, images / n, (SIZE, SIZE)) for n in names]
    return {"root": images, "names": names, "mos": mos, "csv": labels, "ckpt": path, "refs": refs}


def test_load_model_and_inference_use_the_deployed_size(student):
    assert deploy_config(load_model(student["ckpt"])).input_size == (3, SIZE, SIZE)
    loaded = load_inference_model(student["ckpt"])
    assert loaded.input_size == (3, SIZE, SIZE)
    assert loaded.transform_spec == {"mode": "resize", "size": [SIZE, SIZE], "normalize": "imagenet"}


def test_predict_and_evaluate_score_at_the_deployed_size(student, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["predict", str(student["ckpt"]), str(student["root"]), "--out", str(out), "--device", "cpu"]) == 0
    _, scores = _read_scores(out)
    got = [scores[f"{student['root'].as_posix()}/{n}"] for n in student["names"]]
    np.testing.assert_allclose(got, student["refs"], atol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", str(student["ckpt"]), "--root", str(student["root"]), "--csv", str(student["csv"]),
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["srcc"] == pytest.approx(stats.spearmanr(student["refs"], student["mos"])[0], abs=1e-4)
    assert result["plcc"] == pytest.approx(stats.pearsonr(student["refs"], student["mos"])[0], abs=1e-4)


@pytest.mark.slow
def test_export_traces_at_the_deployed_size_and_records_the_config(student, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(student["ckpt"]), "--out", str(out), "--format", "torchscript", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verifications"][0]["input_size"] == [3, SIZE, SIZE]
    # traced at its own size; the budget is checked at vquala2025's deployment size, never smaller
    assert [r["input_size"] for r in report["budget"]] == [[3, 224, 224]]
    extra = {METADATA_KEY: ""}
    torch.jit.load(report["paths"]["torchscript"], _extra_files=extra)
    meta = json.loads(extra[METADATA_KEY])
    assert meta["input_sizes"] == [[3, SIZE, SIZE]] and meta["model_name"] == "mobilenetv3_small_fiqa"
    assert meta["eval_transform"] == {"mode": "resize", "size": [SIZE, SIZE], "normalize": "imagenet"}
    assert DeployConfig.from_dict(meta["deploy"]) == deploy_config(load_model(student["ckpt"]))
    assert meta["source"] == str(student["ckpt"])


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("emo2_1m", 48), ("mobilenetv3_small_fiqa", SIZE)])
def test_budget_and_teacher_use_the_deployed_size(name, size, tmp_path, capsys):
    model = create_model(name)
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, size, size)))
    path = save_checkpoint(tmp_path / f"{name}.pt", build_checkpoint(model))
    assert main(["budget", str(path), "--json"]) == 0  # vquala2025 is checked at its deployment size, 224
    assert [r["input_size"] for r in json.loads(capsys.readouterr().out)["results"]] == [[3, 224, 224]]
    assert Teacher(path).input_size == (3, size, size)
    assert Teacher(model).input_size == (3, size, size)
    larger = save_checkpoint(tmp_path / "larger.pt", build_checkpoint(
        set_deploy_config(model, deploy_config(model).replace(input_size=(3, 256, 256)))))
    assert main(["budget", str(larger), "--json"]) in (0, 1)  # and at the model's own size when larger
    assert [r["input_size"] for r in json.loads(capsys.readouterr().out)["results"]] == [[3, 256, 256]]
