"""Resuming a run continues it exactly: killed (SIGKILL) or interrupted (SIGINT) runs, resumed from
last.pt, end with the same weights, bit for bit, as the uninterrupted run with the same seed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from engine_toys import ToyFaces, ToyNet, ToyObjective, toy_distiller  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from kdfiqa.engine import Callback, TrainConfig, Trainer  # noqa: E402

TOTAL_STEPS = 15  # engine_train.py: 22 samples, batch 4, drop_last -> 5 steps x 3 epochs


def run_script(out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPTS / "engine_train.py"), str(out), "--workers", "2", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_run(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == TOTAL_STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["ema"]["state_dict"].items():
        assert torch.equal(value, b["ema"]["state_dict"][key]), f"ema {key}"
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), f"optimizer {pid} {name}"
    strip = [{k: v for k, v in r.items() if k not in ("time", "images_per_s")}
             for r in a["trainer"]["history"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("time", "images_per_s")}
                     for r in b["trainer"]["history"]]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("baseline")
    done = run_script(out)
    assert done.returncode == 0, done.stderr
    return load(out / "last.pt")


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_identical(baseline, tmp_path):
    kill_at = random.Random(20250705).randint(3, TOTAL_STEPS - 1)
    killed = run_script(tmp_path, "--kill-at", str(kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = load(tmp_path / "last.pt")
    assert partial["step"] < kill_at  # the kill came before that step's checkpoint
    resumed = run_script(tmp_path, "--resume", str(tmp_path / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(baseline, load(tmp_path / "last.pt"))


@pytest.mark.slow
def test_sigint_saves_last_and_exits_cleanly(baseline, tmp_path):
    interrupted = run_script(tmp_path, "--sigint-at", "7")
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    saved = load(tmp_path / "last.pt")
    assert 7 <= saved["step"] <= 8
    assert saved["trainer"]["batch_in_epoch"] in (2, 3)  # mid-epoch: 5 steps per epoch
    resumed = run_script(tmp_path, "--resume", str(tmp_path / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(baseline, load(tmp_path / "last.pt"))


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            raise RuntimeError("simulated crash")


def in_process_run(out: Path, resume: Path | None = None, crash_at: int | None = None,
                   objective=lambda: ToyObjective(ToyNet())) -> None:
    torch.manual_seed(0)
    config = TrainConfig(output_dir=str(out), epochs=2, batch_size=4, lr=0.05, optimizer="sgd",
                         scheduler="step", step_size=1, save_every_steps=3, device="cpu",
                         deterministic=True, seed=3, quiet=True)
    callbacks = [StopAt(crash_at)] if crash_at else []
    Trainer(objective(), ToyFaces(18), None, config, callbacks=callbacks).fit(resume)


def crash_and_resume(tmp_path: Path, objective, edit=lambda ckpt: None) -> tuple[dict, dict]:
    """(last.pt of an uninterrupted run, of a run crashed at step 7 and resumed from step 6 after
    ``edit`` changed its checkpoint)."""
    in_process_run(tmp_path / "a", objective=objective)
    with pytest.raises(RuntimeError, match="simulated crash"):
        in_process_run(tmp_path / "b", crash_at=7, objective=objective)
    path = tmp_path / "b" / "last.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 6  # mid-epoch 2 (4 steps per epoch)
    edit(ckpt)
    save_checkpoint(path, ckpt)
    in_process_run(tmp_path / "b", resume=path, objective=objective)
    a, b = load(tmp_path / "a" / "last.pt"), load(path)
    assert a["step"] == b["step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["trainer"]["history"][-1]["train"] == b["trainer"]["history"][-1]["train"]
    return a, b


def test_mid_epoch_resume_in_process_without_workers(tmp_path):
    """num_workers=0: augmentation noise comes from the main process RNG, restored on resume."""
    a, b = crash_and_resume(tmp_path, lambda: ToyObjective(ToyNet()))
    assert torch.equal(a["trainer"]["objective"]["projector.weight"],
                       b["trainer"]["objective"]["projector.weight"])


def test_distillation_resumes_bit_identical_with_its_projector(tmp_path):
    a, b = crash_and_resume(tmp_path, toy_distiller)
    for key in ("feature_losses.0.projector.weight", "feature_losses.0.projector.bias"):
        assert torch.equal(a["trainer"]["objective"][key], b["trainer"]["objective"][key]), key


def test_checkpoints_written_before_train_state_still_resume(tmp_path):
    """Older files kept epoch and step at the top level only, and no rank_rng in one process."""

    def downgrade(ckpt: dict) -> None:
        del ckpt["trainer"]["epoch"], ckpt["trainer"]["step"]
        ckpt["trainer"]["rank_rng"] = []

    crash_and_resume(tmp_path, lambda: ToyObjective(ToyNet()), downgrade)
