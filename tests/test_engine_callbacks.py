"""Callbacks own their resumable state: a third-party callback's state survives a resume, the
defaults can be replaced, state keys are unique, and checkpoints written before callbacks kept their
own state (best_metric and bad_epochs in the train state) still resume exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from engine_toys import ToyFaces, ToyNet, ToyObjective  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from kdfiqa.engine import (  # noqa: E402
    BestCheckpoint,
    Callback,
    EarlyStopping,
    JsonlLog,
    TrainConfig,
    Trainer,
    default_callbacks,
)
from kdfiqa.errors import CheckpointError, ConfigError  # noqa: E402


class StepCounter(Callback):
    """A third-party callback with resumable state: the sum of the steps it has seen."""

    def __init__(self) -> None:
        self.total = 0

    def on_step_end(self, trainer, step, terms) -> None:
        self.total += step

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state) -> None:
        self.total = state["total"]


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            raise RuntimeError("simulated crash")


def config(out: Path, **kw) -> TrainConfig:
    base = dict(output_dir=str(out), epochs=4, batch_size=4, lr=0.05, optimizer="sgd", scheduler="none",
                save_every_steps=3, device="cpu", deterministic=True, seed=3, quiet=True)
    return TrainConfig(**{**base, **kw})


def run(out: Path, *callbacks: Callback, resume: Path | None = None, **kw) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), ToyFaces(8, seed=1, noise=0.0), config(out, **kw),
                      callbacks=callbacks)
    trainer.fit(resume)
    return trainer


def crashed(out: Path, at: int, **kw) -> Path:
    """Run until step ``at`` crashes it; the path of its last.pt."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(out, StepCounter(), CrashAt(at), **kw)
    return out / "last.pt"


def test_a_third_party_callbacks_state_survives_a_resume(tmp_path):
    whole = run(tmp_path / "a", StepCounter())
    path = crashed(tmp_path / "b", 11)
    assert load_checkpoint(path)["callbacks"]["StepCounter"] == {"total": sum(range(1, 10))}  # saved at step 9
    counter = StepCounter()
    resumed = run(tmp_path / "b", counter, resume=path)
    assert counter.total == whole.callbacks[-1].total == sum(range(1, 17))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["callbacks"]["StepCounter"] == {"total": counter.total}
    assert resumed.best_metric == whole.best_metric
    assert [r["best"] for r in resumed.history] == [r["best"] for r in whole.history]


def test_early_stopping_resumes_its_count(tmp_path):
    frozen = dict(lr=1e-30, patience=3)  # the score cannot improve after the first epoch
    whole = run(tmp_path / "a", StepCounter(), **frozen)
    assert whole.stopped_early and len(whole.history) == 4
    path = crashed(tmp_path / "b", 11, **frozen)
    states = load_checkpoint(path)["callbacks"]
    assert states["EarlyStopping[score,max]"]["bad_epochs"] == 1
    resumed = run(tmp_path / "b", StepCounter(), resume=path, epochs=6, patience=3)
    assert resumed.stopped_early and len(resumed.history) == 4


class Probe(Callback):
    """Records what the Trainer's callbacks hold when ``fit`` starts."""

    def on_fit_start(self, trainer) -> None:
        self.seen = (trainer.best_metric, trainer.callbacks[0].bad_epochs)


def test_checkpoints_without_callback_states_still_resume_exactly(tmp_path):
    """Files written before callbacks kept their own state: best_metric and bad_epochs in the train state."""
    frozen = dict(lr=1e-30, patience=3)
    whole = run(tmp_path / "a", StepCounter(), **frozen)
    path = crashed(tmp_path / "b", 11, **frozen)
    ckpt = load_checkpoint(path)
    early = ckpt.pop("callbacks")["EarlyStopping[score,max]"]
    assert early["best"] is not None and early["bad_epochs"] == 1
    ckpt["trainer"].update(best_metric=early["best"], bad_epochs=early["bad_epochs"])
    save_checkpoint(path, ckpt)
    probe = Probe()
    resumed = run(tmp_path / "b", probe, resume=path, **frozen)
    assert probe.seen == (early["best"], 1)
    assert resumed.callbacks[0].state_dict() == whole.callbacks[0].state_dict()
    assert resumed.stopped_early and [r["best"] for r in resumed.history] == [r["best"] for r in whole.history]
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(path)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_a_damaged_callbacks_entry_names_the_file_and_the_callback(tmp_path):
    path = crashed(tmp_path, 11)
    ckpt = load_checkpoint(path)
    ckpt["callbacks"]["StepCounter"] = {}
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match=r"last\.pt: the state of callback 'StepCounter' does not fit it "
                                              r"\(KeyError: 'total'\)"):
        run(tmp_path, StepCounter(), resume=path)
    ckpt["callbacks"] = ["not", "a", "dict"]
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match=r"last\.pt: its 'callbacks' entry is not a dict of callback states"):
        run(tmp_path, StepCounter(), resume=path)


def test_defaults_can_be_replaced(tmp_path):
    cfg = config(tmp_path, patience=2, monitor="srcc")
    assert [(type(c), getattr(c, "monitor", None)) for c in default_callbacks(cfg, tmp_path)][:2] == [
        (EarlyStopping, "srcc"), (BestCheckpoint, "srcc")]
    torch.manual_seed(0)
    val = ToyFaces(8, seed=1, noise=0.0)
    bare = Trainer(ToyObjective(ToyNet()), ToyFaces(16), val, config(tmp_path / "bare", epochs=1), defaults=[])
    assert bare.callbacks == [] and bare.best_metric is None
    bare.fit()
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["last.pt"]
    assert bare.history[0]["best"] is False  # no BestCheckpoint: nothing is "best"

    rmse = BestCheckpoint(tmp_path / "low" / "lowest_rmse.pt", monitor="rmse")
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), val, config(tmp_path / "low", epochs=2),
                      defaults=[rmse], callbacks=[StepCounter()])
    trainer.fit()
    assert trainer.best_callback is rmse and trainer.best_metric == min(r["val"]["rmse"] for r in trainer.history)
    assert sorted(p.name for p in (tmp_path / "low").iterdir()) == ["last.pt", "lowest_rmse.pt"]


def test_two_callbacks_with_state_under_one_key_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        Trainer(ToyObjective(ToyNet()), ToyFaces(16), None, config(tmp_path),
                callbacks=[BestCheckpoint(tmp_path / "again.pt")])
    assert str(info.value) == (
        "callbacks BestCheckpoint and BestCheckpoint keep their state under the same key 'BestCheckpoint[score,max]'; "
        "give one of them another state_key, or leave the duplicate out (defaults= replaces the default callbacks)")

    class OtherBest(BestCheckpoint):
        @property
        def state_key(self) -> str:
            return "other best"

    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), None, config(tmp_path),
                      callbacks=[OtherBest(tmp_path / "other.pt"), BestCheckpoint(tmp_path / "srcc.pt", "srcc"),
                                 JsonlLog(tmp_path / "again.jsonl")])  # a callback without state may repeat
    assert len(trainer.callbacks) == 6
