"""The Trainer in one process: learning, files written, early stopping, non-finite losses,
native-resolution and multi-crop validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from engine_toys import ToyFaces, ToyNet, ToyObjective  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, load_weights  # noqa: E402
from kdfiqa.engine import NonFiniteLossError, TrainConfig, Trainer, predict  # noqa: E402
from kdfiqa.engine.distributed import init_distributed  # noqa: E402
from kdfiqa.engine.evaluation import evaluate_model  # noqa: E402
from kdfiqa.errors import DataError  # noqa: E402


def config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(output_dir=str(tmp_path), epochs=3, batch_size=8, lr=0.02, device="cpu", seed=0,
                quiet=True)
    return TrainConfig(**{**base, **kw})


def test_training_improves_validation_and_writes_best_last_and_log(tmp_path):
    torch.manual_seed(0)
    val = ToyFaces(24, seed=1, noise=0.0)
    objective = ToyObjective(ToyNet())
    ctx = init_distributed("cpu")
    before, _ = evaluate_model(objective.model, val, ctx, batch_size=8)
    history = Trainer(objective, ToyFaces(64), val, config(tmp_path, ema_decay=0.5)).fit()
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == len(history) == 3
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[-1]["step"] == 24
    assert set(lines[0]) >= {"epoch", "step", "lr", "train", "val", "time", "images_per_s"}
    assert set(lines[0]["train"]) == {"loss", "mse", "aux"}
    assert set(lines[0]["val"]) >= {"srcc", "plcc", "score"} and lines[0]["val"]["n"] == 24
    best_epoch = max(lines, key=lambda r: r["val"]["score"])
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best_epoch["epoch"] and best["metrics"] == best_epoch["val"]
    assert best_epoch["val"]["score"] > before["score"]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 3 and last["config"]["train"]["lr"] == 0.02
    # The saved model is the model alone: the objective's projector is not in its state_dict.
    assert set(last["state_dict"]) == set(objective.model.state_dict())
    # best.pt's validated (EMA) weights reproduce its recorded metrics, checked with scipy.
    model = ToyNet()
    load_weights(model, tmp_path / "best.pt")
    out = predict(model, DataLoader(val, batch_size=5))
    assert stats.spearmanr(out.scores, out.mos)[0] == pytest.approx(best["metrics"]["srcc"])


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    torch.manual_seed(0)
    cfg = config(tmp_path, epochs=6, optimizer="sgd", lr=1e-30, scheduler="none", patience=2)
    objective = ToyObjective(ToyNet())
    objective.model.bn.momentum = 0.0  # frozen BN statistics: the validation score cannot change
    trainer = Trainer(objective, ToyFaces(16), ToyFaces(8, seed=1, noise=0.0), cfg)
    history = trainer.fit()
    assert trainer.stopped_early and len(history) == 3
    assert [r["best"] for r in history] == [True, False, False]


def test_non_finite_loss_names_step_and_images_and_keeps_last_good(tmp_path):
    torch.manual_seed(0)
    objective = ToyObjective(ToyNet(), nan_on_index=13)
    cfg = config(tmp_path, epochs=2, batch_size=4, scheduler="none", save_every_steps=1)
    with pytest.raises(NonFiniteLossError) as info:
        Trainer(objective, ToyFaces(16), None, cfg).fit()
    message = str(info.value)
    order = [int(i) for i in torch.utils.data.DistributedSampler(
        range(16), num_replicas=1, rank=0, shuffle=True, seed=0)]
    batch = next(b for b in range(4) if 13 in order[4 * b: 4 * b + 4])
    names = [f"img{i}.png" for i in order[4 * batch: 4 * batch + 4]]
    assert f"step {batch + 1}" in message and all(n in message for n in names)
    assert "\n" not in message
    if batch:
        last = load_checkpoint(tmp_path / "last.pt")
        assert last["step"] == batch
        assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    else:
        assert not (tmp_path / "last.pt").exists()


def test_native_resolution_validation_with_batch_size_one(tmp_path):
    torch.manual_seed(0)
    sizes = [(16, 16), (20, 24), (12, 18), (16, 30), (24, 16), (18, 18)]
    val = ToyFaces(6, seed=2, sizes=sizes)
    cfg = config(tmp_path, epochs=1, val_batch_size=1)
    history = Trainer(ToyObjective(ToyNet()), ToyFaces(16), val, cfg).fit()
    assert history[0]["val"]["n"] == 6
    with pytest.raises(DataError, match="val_batch_size=1"):
        evaluate_model(ToyNet(), val, init_distributed("cpu"), batch_size=3)


def test_multi_crop_predictions_are_the_mean_over_crops():
    torch.manual_seed(0)
    model = ToyNet().eval()
    crops = torch.randn(3, 5, 3, 16, 16)
    batch = {"image": crops, "score": torch.rand(3), "name": ["a", "b", "c"],
             "index": torch.arange(3)}
    out = predict(model, [batch])
    with torch.no_grad():
        expected = [sum(model(crops[i, j:j + 1]).item() for j in range(5)) / 5 for i in range(3)]
    assert out.scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.names == ["a", "b", "c"]
