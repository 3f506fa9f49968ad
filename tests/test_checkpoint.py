"""Checkpoint format: round trips, atomic writes under SIGKILL, and refusing unsafe or wrong files."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from kdfiqa import __version__
from kdfiqa.checkpoint import FORMAT, build_checkpoint, load_checkpoint, load_weights, save_checkpoint
from kdfiqa.engine.rng import rng_state, set_rng_state
from kdfiqa.models.rebuild import load_model
from kdfiqa.errors import CheckpointError
from kdfiqa.models import deploy_config, registry, set_deploy_config

SCRIPTS = Path(__file__).parent / "scripts"


class Tiny(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, width)
        self.bn = nn.BatchNorm1d(width)


@pytest.fixture
def tiny_registered():
    """A registry entry "ckpt_tiny" for the test's duration only."""

    def tiny(width: int = 3, pretrained: bool = False) -> nn.Module:
        assert not pretrained, "load_model must never ask for downloaded weights"
        return Tiny(width)

    registry.register_model(tiny, name="ckpt_tiny", default_input_size=(3, 16, 16))
    yield registry.create_model
    registry.MODELS.remove("ckpt_tiny")


def draws() -> tuple:
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def test_round_trip_holds_every_documented_key(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.Adam(model.parameters())
    model.fc(torch.randn(4, 2)).sum().backward()
    opt.step()
    ckpt = build_checkpoint(model, optimizer=opt, epoch=2, step=9, config={"train": {"lr": 0.1}},
                            metrics={"srcc": 0.5})
    save_checkpoint(tmp_path / "a.pt", ckpt)
    back = load_checkpoint(tmp_path / "a.pt")
    assert back["format"] == FORMAT and back["kdfiqa_version"] == __version__
    assert set(back) >= {"model", "state_dict", "optimizer", "scheduler", "scaler", "ema", "epoch",
                         "step", "rng", "config", "metrics"}
    assert (back["epoch"], back["step"], back["metrics"]) == (2, 9, {"srcc": 0.5})
    for key, value in model.state_dict().items():
        assert torch.equal(back["state_dict"][key], value)
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path / "r.pt", build_checkpoint(Tiny()))
    expected = draws()
    draws()  # move every generator on
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = draws()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_rng_state_restores_in_memory():
    state = rng_state()
    expected = draws()
    set_rng_state(state)
    got = draws()
    assert torch.equal(got[0], expected[0]) and got[2] == expected[2]


def test_non_plain_entries_are_refused_before_writing(tmp_path):
    ckpt = build_checkpoint(Tiny(), config={"path": Path("x")})
    with pytest.raises(TypeError, match=r"config.*PosixPath|config.*Path"):
        save_checkpoint(tmp_path / "bad.pt", ckpt)
    assert not list(tmp_path.iterdir())


class Payload:
    """Unpickling this creates a file: the test's proof that a payload would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {"name": None}, "state_dict": {}, "epoch": 0, "step": 0,
                "x": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_corrupt_and_foreign_files_give_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)
    good = save_checkpoint(tmp_path / "good.pt", build_checkpoint(Tiny()))
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(random.Random(0).randbytes(2000))
    for name in ("cut.pt", "noise.pt"):
        with pytest.raises(CheckpointError, match="corrupt") as info:
            load_checkpoint(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    torch.save(Tiny().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    future = build_checkpoint(Tiny())
    future.update(format="kdfiqa.checkpoint.v9", kdfiqa_version="9.0.0")
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"kdfiqa\.checkpoint\.v9.*kdfiqa 9\.0\.0"):
        load_checkpoint(tmp_path / "future.pt")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=3000), pickle_header=st.booleans())
def test_random_bytes_are_a_corrupt_checkpoint_never_a_crash(tmp_path, payload, pickle_header):
    path = tmp_path / "random.pt"
    path.write_bytes((b"\x80\x02" if pickle_header else b"") + payload)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing from the loader leaks out as a warning
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            assert "random.pt" in str(exc) and "\n" not in str(exc)


def test_load_model_rebuilds_through_the_registry(tmp_path, tiny_registered):
    torch.manual_seed(0)
    model = tiny_registered("ckpt_tiny", width=5, pretrained=False)
    save_checkpoint(tmp_path / "m.pt", build_checkpoint(model, step=3))
    back = load_model(tmp_path / "m.pt")
    assert back.model_name == "ckpt_tiny" and not back.training
    assert back.fc.out_features == 5
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_a_checkpoint_for_another_model_says_what_it_holds(tmp_path, tiny_registered):
    model = tiny_registered("ckpt_tiny", width=5)
    save_checkpoint(tmp_path / "m.pt", build_checkpoint(model, epoch=4))
    with pytest.raises(CheckpointError, match=r"holds model 'ckpt_tiny'.*epoch 4.*not 'emo2_1m'"):
        load_model(tmp_path / "m.pt", expected_name="emo2_1m")
    other = Tiny(width=7)
    other.model_name = "ckpt_tiny"
    with pytest.raises(CheckpointError, match=r"holds model 'ckpt_tiny'.*do not fit"):
        load_weights(other, tmp_path / "m.pt")
    unnamed = Tiny()
    save_checkpoint(tmp_path / "u.pt", build_checkpoint(unnamed))
    with pytest.raises(CheckpointError, match="outside the registry"):
        load_model(tmp_path / "u.pt")


def test_ema_weights_are_preferred_when_present(tmp_path):
    model, ema = Tiny(), Tiny()
    with torch.no_grad():
        ema.fc.weight.fill_(0.25)

    class State:
        def state_dict(self):
            return {"decay": 0.9, "updates": 1, "state_dict": ema.state_dict()}

    save_checkpoint(tmp_path / "e.pt", build_checkpoint(model, ema=State()))
    target = Tiny()
    load_weights(target, tmp_path / "e.pt")
    assert torch.equal(target.fc.weight, ema.fc.weight)
    load_weights(target, tmp_path / "e.pt", weights="model")
    assert torch.equal(target.fc.weight, model.fc.weight)


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "checkpoint_kill_during_save.py"),
                             str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["step"] == 1  # the complete previous checkpoint
    partial = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(partial) == 1  # the kill did land in the middle of writing the new one
    with pytest.raises((RuntimeError, EOFError, pickle.UnpicklingError)):
        torch.load(partial[0], weights_only=True)


def _rewritten(tmp_path: Path, ckpt: dict, name: str = "edited.pt", **model: object) -> Path:
    """``ckpt`` with ``ckpt["model"]`` entries replaced (a key given None is removed), saved as is."""
    spec = {**ckpt["model"], **model}
    path = tmp_path / name
    torch.save({**ckpt, "model": {k: v for k, v in spec.items() if v is not None}}, path)
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_deploy_config_is_stored_and_restored(tmp_path, tiny_registered):
    model = tiny_registered("ckpt_tiny", width=5)
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, 12, 20), normalize="symmetric"))
    ckpt = build_checkpoint(model)
    assert ckpt["model"] == {"name": "ckpt_tiny", "kwargs": {"width": 5},
                             "deploy": deploy_config(model).to_dict()}
    back = load_model(save_checkpoint(tmp_path / "m.pt", ckpt))
    assert deploy_config(back) == deploy_config(model)
    assert back.deploy_config.eval_transform == {"mode": "resize", "size": [12, 20], "normalize": "symmetric"}


@pytest.mark.parametrize("stored, size, transform", [
    # as earlier versions wrote it: input_size and normalize beside the transform, sizes as given
    ({"input_size": [3, 12, 20], "normalize": "symmetric",
      "eval_transform": {"mode": "resize", "size": [12, 20], "normalize": "symmetric"}},
     (3, 12, 20), {"mode": "resize", "size": [12, 20], "normalize": "symmetric"}),
    ({"input_size": [3, 224, 224], "normalize": "symmetric",
      "eval_transform": {"mode": "center_crop", "size": 224, "resize": [240, 240], "normalize": "symmetric"}},
     (3, 224, 224), {"mode": "center_crop", "size": [224, 224], "resize": [240, 240], "normalize": "symmetric"}),
    ({"input_size": [3, 32, 40], "normalize": "imagenet", "eval_transform": {"mode": "native", "normalize": "imagenet"}},
     (3, 32, 40), {"mode": "native", "normalize": "imagenet"}),
    # a run config's 224 next to its 224x336 test view: the view is what the network was fed
    ({"input_size": [3, 224, 224], "normalize": "imagenet",
      "eval_transform": {"mode": "resize", "size": [224, 336], "normalize": "imagenet"}},
     (3, 224, 336), {"mode": "resize", "size": [224, 336], "normalize": "imagenet"}),
])
def test_deploy_configs_of_earlier_versions_still_load(tmp_path, tiny_registered, stored, size, transform):
    model = tiny_registered("ckpt_tiny", width=5)
    old = {"name": "ckpt_tiny", "kwargs": {"width": 5}, "output": "sigmoid", **stored}
    back = load_model(_rewritten(tmp_path, build_checkpoint(model), deploy=old))
    config = deploy_config(back)
    assert (config.input_size, config.eval_transform, config.normalize) == (size, transform, stored["normalize"])
    assert config.to_dict()["input_size"] == list(size) and config.to_dict()["normalize"] == stored["normalize"]
    assert type(config).from_dict(config.to_dict()) == config


def test_files_without_deploy_take_the_run_config_then_the_registry_default(tmp_path, tiny_registered):
    model = tiny_registered("ckpt_tiny", width=5)
    old = build_checkpoint(model, config={"model": {"input": [24, 28]},
                                          "data": {"eval_transform": {"mode": "resize", "normalize": "none"}}})
    back = load_model(_rewritten(tmp_path, old, deploy=None, kwargs={"width": 5, "pretrained": True}))
    assert back.deploy_config.input_size == (3, 24, 28)
    assert back.deploy_config.eval_transform == {"mode": "resize", "size": [24, 28], "normalize": "none"}
    preset = build_checkpoint(model, config={"data": {"eval_transform": "conquerit_test"}})
    back = load_model(_rewritten(tmp_path, preset, deploy=None))
    assert (back.deploy_config.normalize, back.deploy_config.eval_transform["mode"]) == ("symmetric", "center_crop")
    bare = load_model(_rewritten(tmp_path, build_checkpoint(model), deploy=None))
    assert bare.deploy_config.input_size == (3, 16, 16)  # the registry's default_input_size
    with pytest.raises(CheckpointError, match=r"config\.data\.eval_transform.*mode") as info:
        load_model(_rewritten(tmp_path, build_checkpoint(model, config={"data": {"eval_transform": {"mode": "zoom"}}}),
                              deploy=None))
    _one_line(info)


@pytest.mark.parametrize("deploy, needle", [
    ([1, 2], "must be a mapping"),
    ({"name": "ckpt_tiny", "kwargs": {"width": 5}, "colour": "red"}, "unknown deploy field"),
    ({"name": "ckpt_tiny", "kwargs": {"width": 5}, "input_size": [3, 0, 8]}, "input_size"),
    ({"name": "ckpt_tiny", "kwargs": {"width": 5}, "eval_transform": {"mode": "zoom"}}, "mode"),
    ({"name": "ckpt_tiny", "kwargs": {"width": 5}, "output": "softmax"}, "output"),
    ({"name": "ckpt_tiny", "kwargs": {"width": 7}}, "altered"),
    ({"name": "emo2_1m", "kwargs": {"width": 5}}, "altered"),
])
def test_a_malformed_deploy_config_is_one_line(tmp_path, tiny_registered, deploy, needle):
    ckpt = build_checkpoint(tiny_registered("ckpt_tiny", width=5))
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model(_rewritten(tmp_path, ckpt, deploy=deploy))
    assert "edited.pt" in _one_line(info)


def test_stored_kwargs_outside_the_allow_list_are_refused_before_building(tmp_path, monkeypatch, tiny_registered):
    ckpt = build_checkpoint(tiny_registered("ckpt_tiny", width=5))
    with pytest.raises(CheckpointError, match=r"refused to replay model argument\(s\) colour;.*only width") as info:
        load_model(_rewritten(tmp_path, ckpt, deploy=None, kwargs={"width": 5, "colour": 1}))
    _one_line(info)
    timm_ckpt = build_checkpoint(registry.create_model("timm:mobilenetv3_small_050", drop_rate=0.1))
    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: calls.append(kw))
    for key in ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs = {"drop_rate": 0.1, key: "/etc/passwd"}
        with pytest.raises(CheckpointError, match=f"refused to replay model argument\\(s\\) {key};") as info:
            load_model(_rewritten(tmp_path, timm_ckpt, deploy=None, kwargs=kwargs))
        assert "drop_rate" in _one_line(info)
    assert calls == []  # nothing was built, no file was opened


def test_a_constructor_rejecting_stored_kwargs_is_one_line(tmp_path):
    model = registry.create_model("timm:mobilenetv3_small_050", drop_rate=0.1)
    ckpt = build_checkpoint(model)
    path = _rewritten(tmp_path, ckpt, deploy=None, kwargs={"img_size": 64})  # a CNN takes no img_size
    with pytest.raises(CheckpointError, match=r"cannot be built here: model timm:mobilenetv3_small_050\(img_size=64\) cannot be built: TypeError: .*img_size") as info:
        load_model(path)
    _one_line(info)
    back = load_model(save_checkpoint(tmp_path / "ok.pt", ckpt))
    assert back.deploy_config.kwargs == {"drop_rate": 0.1} and back.backbone.model.drop_rate == 0.1


@pytest.mark.parametrize("content,needle", [(b"", "is empty"), (b"epoch: 3\n", "is not a PyTorch checkpoint")])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, content, needle):
    from kdfiqa.checkpoint import load_checkpoint
    from kdfiqa.errors import CheckpointError

    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path)


def test_a_run_folder_given_as_a_model_names_its_checkpoint(tmp_path):
    from kdfiqa.errors import ConfigError
    from kdfiqa.targets import load_target

    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"is a folder, not a model or a checkpoint; give {tmp_path / 'best.pt'}"):
        load_target(tmp_path)
