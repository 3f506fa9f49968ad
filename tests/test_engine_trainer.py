"""The Trainer in one process: complete after __init__, learning, files written, callbacks (early
stopping, best.pt only on improvement, hooks), Ctrl-C, distillation with the teacher outside the
trained module, non-finite losses, native-resolution and multi-crop validation."""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from engine_toys import ToyFaces, ToyNet, ToyObjective, toy_distiller  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, load_weights  # noqa: E402
from kdfiqa.data import build_transform  # noqa: E402
from kdfiqa.engine import (  # noqa: E402
    BestCheckpoint,
    Callback,
    EarlyStopping,
    JsonlLog,
    NonFiniteLossError,
    ProgressDisplay,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    TrainState,
    predict,
)
from kdfiqa.engine.distributed import init_distributed  # noqa: E402
from kdfiqa.engine.evaluation import evaluate_model  # noqa: E402
from kdfiqa.errors import ConfigError, DataError  # noqa: E402


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


def test_a_trainer_is_complete_after_init(tmp_path):
    torch.manual_seed(0)
    objective = ToyObjective(ToyNet())
    ctx = init_distributed("cpu")
    trainer = Trainer(objective, ToyFaces(20), None, config(tmp_path, patience=2, ema_decay=0.9),
                      ctx=ctx)
    assert trainer.ctx is ctx
    assert len(trainer.loader) == 2 and trainer.schedule is not None and trainer.ema is not None
    assert trainer.net is trainer.trainable is objective  # one process: no DDP wrapper
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in objective.parameters()}
    assert [type(c) for c in trainer.callbacks] == [EarlyStopping, BestCheckpoint, JsonlLog,
                                                     ProgressDisplay]
    assert trainer.state == TrainState() and trainer.history == [] and trainer.best_metric is None
    assert not trainer.stopped_early and not any(tmp_path.iterdir())  # nothing written before fit


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    torch.manual_seed(0)
    cfg = config(tmp_path, epochs=6, optimizer="sgd", lr=1e-30, scheduler="none", patience=2)
    objective = ToyObjective(ToyNet())
    objective.model.bn.momentum = 0.0  # frozen BN statistics: the validation score cannot change
    trainer = Trainer(objective, ToyFaces(16), ToyFaces(8, seed=1, noise=0.0), cfg)
    history = trainer.fit()
    assert trainer.stopped_early and len(history) == 3
    assert [r["best"] for r in history] == [True, False, False]
    # best.pt was written only when the score improved (epoch 1), last.pt after every epoch
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    last = load_checkpoint(tmp_path / "last.pt")
    states = last["callbacks"]
    assert states["EarlyStopping[score,max]"] == {"best": history[0]["val"]["score"], "bad_epochs": 2}
    assert last["trainer"]["stopped_early"] and trainer.best_metric == history[0]["val"]["score"]


def _records(*values: float | None, monitor: str = "score") -> list[dict]:
    return [{"val": {} if v is None else {monitor: v}} for v in values]


def test_early_stopping_counts_epochs_without_improvement_in_its_own_state():
    trainer = SimpleNamespace(state=TrainState())
    stopper = EarlyStopping(patience=2)
    for record in _records(0.5, 0.4, 0.6, 0.6):
        stopper.on_epoch_end(trainer, record)
        assert not trainer.state.stopped_early
    stopper.on_epoch_end(trainer, _records(None)[0])  # no monitored metric: not counted
    stopper.on_epoch_end(trainer, {"val": {"score": 0.9}, "collapsed": True})  # never an improvement
    assert stopper.state_dict() == {"best": 0.6, "bad_epochs": 2} and trainer.state.stopped_early


def test_monitor_and_mode_default_from_the_metric_and_are_checked(tmp_path):
    assert EarlyStopping(2, "rmse").mode == "min" and BestCheckpoint(tmp_path, "srcc").mode == "max"
    low = BestCheckpoint(tmp_path / "best.pt", monitor="rmse")
    assert [low.update(r) for r in _records(0.5, 0.6, 0.4, None, monitor="rmse")] == [True, False, True, False]
    assert low.best == 0.4 and low.state_key == "BestCheckpoint[rmse,min]"
    with pytest.raises(ConfigError, match=r"^EarlyStopping: metric 'auc' has no known mode; pass mode='max' or "
                                          r"mode='min'$"):
        EarlyStopping(2, "auc")
    assert EarlyStopping(2, "auc", mode="max").mode == "max"
    with pytest.raises(ConfigError, match=r"^BestCheckpoint: mode 'up' is not 'max' or 'min'$"):
        BestCheckpoint(tmp_path, mode="up")


def test_best_checkpoint_writes_only_on_improvement(tmp_path):
    saved = []
    trainer = SimpleNamespace(save_checkpoint=saved.append)
    best = BestCheckpoint(tmp_path / "best.pt")
    for record in _records(0.5, 0.5, 0.4, 0.7, 0.1):
        best.on_epoch_end(trainer, record)
    assert saved == [tmp_path / "best.pt"] * 2 and best.best == 0.7


class Recorder(Callback):
    """Records every hook call; ends training after epoch ``stop_after`` through the train state."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_after = stop_after

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.state.epoch))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_step_end(self, trainer, step, terms):
        self.calls.append(("step", step))

    def on_epoch_end(self, trainer, record):
        self.calls.append(("epoch_end", record["epoch"], trainer.history[-1] is record))
        if record["epoch"] == self.stop_after:
            trainer.state.stopped_early = True

    def on_fit_end(self, trainer):
        self.calls.append(("fit_end",))


def test_callback_hooks_run_in_order_and_can_stop_training(tmp_path):
    torch.manual_seed(0)
    recorder = Recorder(stop_after=2)
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), None, config(tmp_path, batch_size=8),
                      callbacks=[recorder])
    history = trainer.fit()
    assert len(history) == 2 and trainer.stopped_early
    assert recorder.calls == [
        ("fit_start", 0),
        ("epoch_start", 0), ("step", 1), ("step", 2), ("epoch_end", 1, True),
        ("epoch_start", 1), ("step", 3), ("step", 4), ("epoch_end", 2, True),
        ("fit_end",),
    ]
    assert load_checkpoint(tmp_path / "last.pt")["trainer"]["stopped_early"]


class SigintAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_says_at_once_how_to_resume_then_saves_last(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = config(tmp_path, epochs=1, batch_size=2, quiet=False)
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), None, cfg, callbacks=[SigintAt(2)])
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="resume with"):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before
    lines = capsys.readouterr().err.splitlines()
    notice = f"stopping after this step; resume with resume=True (last.pt: {tmp_path / 'last.pt'})"
    assert lines.count(notice) == 1
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3  # the step after the signal


def test_distillation_trains_student_and_projector_with_the_teacher_outside(tmp_path):
    torch.manual_seed(0)
    distiller = toy_distiller()
    teacher = copy.deepcopy(distiller.teacher.state_dict())
    projector = distiller.trainable.feature_losses[0].projector.weight.detach().clone()
    trainer = Trainer(distiller, ToyFaces(16), ToyFaces(8, seed=1), config(tmp_path, epochs=2))
    assert trainer.trainable is trainer.net is distiller.trainable
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in distiller.trainable.parameters()}
    assert not optimised & {id(p) for p in distiller.teacher.parameters()}
    history = trainer.fit()
    assert {"loss", "task", "distill", "feature/bn"} <= set(history[0]["train"])
    for key, value in distiller.teacher.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    assert not torch.equal(distiller.trainable.feature_losses[0].projector.weight, projector)
    last = load_checkpoint(tmp_path / "last.pt")
    assert set(last["state_dict"]) == set(ToyNet().state_dict())
    assert set(last["trainer"]["objective"]) == {"feature_losses.0.projector.weight",
                                                 "feature_losses.0.projector.bias"}


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


def test_the_validation_transform_becomes_the_models_deploy_config(tmp_path):
    torch.manual_seed(0)
    val = ToyFaces(8, seed=1)
    val.transform = build_transform({"mode": "resize", "size": 16, "normalize": "symmetric"})
    Trainer(ToyObjective(ToyNet()), ToyFaces(16), val, config(tmp_path, epochs=1)).fit()
    deploy = load_checkpoint(tmp_path / "best.pt")["model"]["deploy"]
    assert deploy["input_size"] == [3, 16, 16] and deploy["normalize"] == "symmetric"
    assert deploy["eval_transform"]["mode"] == "resize" and deploy["eval_transform"]["size"] == [16, 16]


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


def test_a_collapsed_model_is_flagged_and_never_kept_as_best(tmp_path, capsys):
    """A model whose validation predictions are constant is reported, and best.pt is not written;
    the metrics' ConstantInputWarning is not repeated each epoch (the tests make it an error)."""
    from kdfiqa.data import FIQADataset, build_transform
    from kdfiqa.distill import Supervised
    from kdfiqa.engine import Trainer, TrainConfig
    from kdfiqa.models import create_model
    from tiny_fiqa import TINY, synthetic

    images, labels = synthetic(tmp_path, 12, 0, "labeled")
    data = FIQADataset(images, labels, transform=build_transform({"mode": "resize", "size": 32}))
    model = create_model(TINY)
    with torch.no_grad():
        model.head.weight.zero_()
    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=4, lr=1e-12, optimizer="sgd",
                         momentum=0.0, weight_decay=0.0, scheduler="none", device="cpu")
    history = Trainer(Supervised(model), data, data, config).fit()
    assert history[-1]["collapsed"] is True and history[-1]["best"] is False
    assert history[-1]["val"]["spread"] < 1e-4
    assert not (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    assert "collapsed" in capsys.readouterr().err


@pytest.mark.parametrize("batch_size,drop_last,needle", [(5, False, "a last batch of 1 of the 11"),
                                                         (1, True, "batch_size 1")])
def test_a_batch_of_one_that_batch_norm_cannot_train_on_is_refused_before_training(tmp_path, batch_size, drop_last,
                                                                                 needle):
    from kdfiqa.data import FIQADataset, build_transform
    from kdfiqa.distill import Supervised
    from kdfiqa.engine import Trainer, TrainConfig
    from kdfiqa.errors import ConfigError
    from kdfiqa.models import create_model
    from tiny_fiqa import TINY, synthetic

    images, labels = synthetic(tmp_path, 11, 0, "labeled")
    data = FIQADataset(images, labels, transform=build_transform({"mode": "resize", "size": 32}))
    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=batch_size, drop_last=drop_last,
                         device="cpu")
    with pytest.raises(ConfigError, match=needle):
        Trainer(Supervised(create_model("mobilenetv3_small_fiqa")), data, None, config)  # its head: BatchNorm1d
    assert not (tmp_path / "run" / "last.pt").exists()
    Trainer(Supervised(create_model(TINY)), data, None, config)  # 2-D batch norms train on one sample
