"""TrainState: the checkpoint's "trainer" entry round-trips through a weights_only load, and every
missing or mistyped field is a one-line CheckpointError naming the file and the field."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from engine_toys import ToyFaces, ToyNet, ToyObjective  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from kdfiqa.engine.rng import rng_state  # noqa: E402
from kdfiqa.engine import TrainConfig, Trainer, TrainState  # noqa: E402
from kdfiqa.engine.distributed import init_distributed  # noqa: E402
from kdfiqa.errors import CheckpointError  # noqa: E402

FIELDS = [f.name for f in dataclasses.fields(TrainState)]


def full_state() -> TrainState:
    rng = rng_state()
    return TrainState(
        epoch=2, step=11, batch_in_epoch=3, epoch_rng=rng, epoch_terms={"loss": 1.5, "mse": 0.25},
        epoch_batches=3, stopped_early=False,
        history=[{"epoch": 1, "val": {"score": 0.75}}], world_size=1,
        rank_rng=[{"epoch": rng, "now": rng}], objective={"projector.weight": torch.randn(2, 2)},
    )


def test_state_dict_round_trips_through_a_weights_only_load():
    state = full_state()
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    loaded = TrainState()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert set(loaded.state_dict()) == set(FIELDS)
    for name in FIELDS:
        if name not in ("epoch_rng", "rank_rng", "objective"):
            assert getattr(loaded, name) == getattr(state, name), name
    assert torch.equal(loaded.objective["projector.weight"], state.objective["projector.weight"])
    assert torch.equal(loaded.epoch_rng["torch"], state.epoch_rng["torch"])


@pytest.mark.parametrize("name", FIELDS)
def test_a_missing_field_is_a_one_line_checkpoint_error(name):
    entry = full_state().state_dict()
    del entry[name]
    state = TrainState()
    with pytest.raises(CheckpointError) as info:
        state.load_state_dict(entry, source="runs/x/last.pt")
    message = str(info.value)
    assert message.startswith("runs/x/last.pt:") and f"'trainer.{name}'" in message
    assert "start a new run" in message and "\n" not in message
    assert state == TrainState()  # nothing was changed


@pytest.mark.parametrize("name, value", [
    ("epoch", "2"), ("step", -1), ("step", 3.0), ("batch_in_epoch", True), ("epoch_rng", [1, 2]),
    ("epoch_rng", {"torch": torch.zeros(1)}), ("epoch_terms", {"loss": "1.5"}),
    ("epoch_batches", None), ("stopped_early", 1),
    ("history", {"epoch": 1}), ("history", [1, 2]), ("world_size", 0), ("rank_rng", [{}]),
    ("objective", {"projector.weight": [1.0]}),
])
def test_a_mistyped_field_is_a_one_line_checkpoint_error(name, value):
    entry = full_state().state_dict()
    entry[name] = value
    with pytest.raises(CheckpointError) as info:
        TrainState().load_state_dict(entry, source="runs/x/last.pt")
    message = str(info.value)
    assert message.startswith("runs/x/last.pt:") and f"'trainer.{name}'" in message
    assert "expected" in message and "\n" not in message


def test_rank_streams_must_match_the_world_size():
    entry = dict(full_state().state_dict(), world_size=2)
    with pytest.raises(CheckpointError, match=r"'trainer\.rank_rng' holds 1 ranks' streams for world_size 2"):
        TrainState().load_state_dict(entry, source="runs/x/last.pt")


def _checkpointed_run(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, batch_size=4, device="cpu", quiet=True)
    Trainer(ToyObjective(ToyNet()), ToyFaces(8), None, cfg).fit()
    return tmp_path / "last.pt"


def _resume(path: Path) -> None:
    cfg = TrainConfig(output_dir=str(path.parent), epochs=2, batch_size=4, device="cpu", quiet=True)
    Trainer(ToyObjective(ToyNet()), ToyFaces(8), None, cfg).fit(resume=path)


def test_resuming_a_damaged_trainer_entry_names_the_file_and_field(tmp_path):
    path = _checkpointed_run(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt["trainer"]["epoch"] == ckpt["epoch"] == 1 and ckpt["trainer"]["step"] == ckpt["step"]
    ckpt["trainer"]["batch_in_epoch"] = "none"
    save_checkpoint(path, ckpt)
    mistyped = r"last\.pt: training state field 'trainer\.batch_in_epoch' is a str"
    with pytest.raises(CheckpointError, match=mistyped):
        _resume(path)
    ckpt["trainer"]["batch_in_epoch"] = 0
    del ckpt["trainer"]["history"]
    save_checkpoint(path, ckpt)
    missing = r"last\.pt: its training state has no field 'trainer\.history'"
    with pytest.raises(CheckpointError, match=missing):
        _resume(path)
    del ckpt["trainer"]
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match="weights only"):
        _resume(path)


def test_a_checkpoint_without_the_objectives_projector_cannot_resume(tmp_path):
    path = _checkpointed_run(tmp_path)
    ckpt = load_checkpoint(path)
    ckpt["trainer"]["objective"] = {}
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match=r"lacks this objective's trainable state \['projector.bias'"):
        _resume(path)


def test_a_loaded_state_gives_each_rank_its_streams_and_rank_0_the_sums():
    state = full_state()
    other = rng_state()
    other["python"] = dict(other["python"], gauss_next=0.5)
    state.rank_rng = [state.rank_rng[0], {"epoch": other, "now": other}]
    state.world_size = 2
    ctx = init_distributed("cpu")
    local, now = state.for_rank(dataclasses.replace(ctx, rank=1, world_size=2))
    assert local.epoch_rng is other and now is other and local.epoch_terms == {} and local.epoch_batches == 0
    local, now = state.for_rank(dataclasses.replace(ctx, rank=0, world_size=2))
    assert local.epoch_terms == state.epoch_terms and local.epoch_batches == 3
    local, _ = state.for_rank(dataclasses.replace(ctx, rank=1, world_size=3))  # world size changed
    assert local.epoch_rng is state.rank_rng[0]["epoch"]
