"""Experiment logs (``--log-to``): every scalar of log.jsonl and of each step reaches TensorBoard event
files, an MLflow file store and an offline W&B run; a resumed run continues the same runs; a missing
extra is one line naming it, before the run folder is touched."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from engine_toys import ToyFaces, ToyNet, ToyObjective  # noqa: E402

from kdfiqa.cli.main import main  # noqa: E402
from kdfiqa.engine import TrainConfig, Trainer, Tracker  # noqa: E402
from kdfiqa.engine.tracking import epoch_scalars  # noqa: E402
from kdfiqa.errors import ConfigError  # noqa: E402
from tiny_fiqa import TINY, synthetic  # noqa: E402


def fit(out: Path, log_to: list[str], epochs: int = 2, resume: Path | None = None) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(output_dir=str(out), epochs=epochs, batch_size=4, lr=0.05, optimizer="sgd",
                         scheduler="none", device="cpu", seed=3, quiet=True, log_to=log_to)
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(16), ToyFaces(8, seed=1, noise=0.0), config,
                      run_config={"model": {"name": "toy"}})
    trainer.fit(resume)
    return trainer


def expected(trainer: Trainer) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run logged: its log.jsonl numbers at each epoch's last step (the per-step
    terms are checked by count and step)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for record in trainer.history:
        for key, value in epoch_scalars(record).items():
            found.setdefault(key, []).append((record["step"], value))
    return found


def test_epoch_scalars_are_the_numbers_of_a_record():
    record = {"epoch": 1, "step": 4, "lr": 0.1, "train": {"loss": 0.5}, "val": {"srcc": 0.2, "rmse": None},
              "best": True, "collapsed": False, "time": 1.5, "images_per_s": 10.0}
    assert epoch_scalars(record) == {"train/loss": 0.5, "val/srcc": 0.2, "lr": 0.1, "images_per_s": 10.0,
                                     "time": 1.5, "epoch": 1.0}


def test_tensorboard_event_files_hold_every_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = fit(tmp_path / "run", ["tensorboard"])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for key, points in expected(trainer).items():
        assert [s for s, _ in logged[key]] == [s for s, _ in points]
        assert [v for _, v in logged[key]] == pytest.approx([v for _, v in points], rel=1e-6)
    assert [s for s, _ in logged["step/loss"]] == list(range(1, trainer.state.step + 1))
    assert {"step/lr", "val/srcc", "train/loss", "images_per_s"} <= set(logged)


def test_mlflow_file_store_holds_every_scalar_and_a_resume_continues_the_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    fit(out, ["mlflow"], epochs=1)
    trainer = fit(out, ["mlflow"], epochs=2, resume=out / "last.pt")
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("kdfiqa").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the resumed run logged into the same one
    run_id = runs[0].info.run_id
    for key, points in expected(trainer).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in history] == [s for s, _ in points]
        assert [v for _, v in history] == pytest.approx([v for _, v in points], rel=1e-6)
    assert len(client.get_metric_history(run_id, "step/loss")) == trainer.state.step
    config = json.loads(Path(client.download_artifacts(run_id, "config.json", str(tmp_path))).read_text())
    assert config["model"] == {"name": "toy"} and config["train"]["log_to"] == ["mlflow"]


def wandb_history(folder: Path) -> list[dict]:
    """The history rows of an offline W&B run (its ``run-ID.wandb`` record log: 32 KiB blocks of
    length-prefixed chunks holding protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = next(folder.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    rows, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_offline_run_holds_every_scalar(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    trainer = fit(tmp_path / "run", ["wandb"])
    wandb.teardown()  # the service process writes the run's file: wait until it has finished
    folders = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(folders) == 1  # offline by default
    rows = wandb_history(folders[0])
    by_step: dict[int, dict] = {}
    for row in rows:
        by_step.setdefault(row["_step"], {}).update(row)
    assert sorted(by_step) == list(range(1, trainer.state.step + 1)), rows
    for key, points in expected(trainer).items():
        assert [by_step[step][key] for step, _ in points] == pytest.approx([v for _, v in points], rel=1e-6)
    assert sorted(by_step) == list(range(1, trainer.state.step + 1))
    assert all("step/loss" in row and "step/lr" in row for row in by_step.values())


def test_only_rank_zero_logs(tmp_path):
    pytest.importorskip("tensorboard")
    tracker = Tracker(["tensorboard"], tmp_path / "run")

    class Rank1:
        class ctx:
            is_main = False

    tracker.on_fit_start(Rank1())
    tracker.on_step_end(Rank1(), 1, {"loss": 1.0})
    tracker.on_fit_end(Rank1())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_extra_is_one_line_before_the_run_folder_is_touched(tmp_path, monkeypatch, capsys, backend):
    images, labels = synthetic(tmp_path, 8, 0, "data")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a))
    out = tmp_path / "run"
    code = main(["train", "--root", str(images), "--csv", str(labels), "--model", TINY, "--out", str(out),
                 "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.5", "--device", "cpu", "--quiet",
                 "--log-to", backend])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"pip install 'kdfiqa[{backend}]'" in err and "--log-to" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match=rf"kdfiqa\[{backend}\]"):
        Tracker([backend], tmp_path / "elsewhere")


def test_train_log_to_tensorboard_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, labels = synthetic(tmp_path, 8, 0, "data")
    out = tmp_path / "run"
    code = main(["train", "--root", str(images), "--csv", str(labels), "--model", TINY, "--out", str(out),
                 "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.5", "--device", "cpu", "--quiet",
                 "--log-to", "tensorboard"])
    assert code == 0, capsys.readouterr().err
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert {"step/loss", "step/lr", "train/loss", "val/srcc", "images_per_s"} <= set(events.Tags()["scalars"])
