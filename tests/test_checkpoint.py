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
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from kdfiqa import __version__
from kdfiqa.checkpoint import (
    FORMAT,
    build_checkpoint,
    load_checkpoint,
    load_model,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kdfiqa.errors import CheckpointError
from kdfiqa.models import registry

SCRIPTS = Path(__file__).parent / "scripts"


class Tiny(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, width)
        self.bn = nn.BatchNorm1d(width)


@pytest.fixture
def tiny_registered(monkeypatch):
    """A registry entry "ckpt_tiny" for the test's duration only."""

    def tiny(width: int = 3, pretrained: bool = False) -> nn.Module:
        assert not pretrained, "load_model must never ask for downloaded weights"
        model = Tiny(width)
        model.model_kwargs = {"width": width, "pretrained": pretrained}
        return model

    info = registry.ModelInfo("ckpt_tiny", (3, 16, 16), True, "test model")
    monkeypatch.setitem(registry._MODELS, "ckpt_tiny", (tiny, info))
    return registry.create_model


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
