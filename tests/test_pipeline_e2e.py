"""End to end through the command line: teacher -> pseudo-labels -> student -> evaluate/predict/export."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from kdfiqa.cli.main import main
from tiny_fiqa import TINY, synthetic


def _evaluate(capsys, target: str, root, labels) -> dict:
    capsys.readouterr()
    assert main(["evaluate", target, "--root", str(root), "--csv", str(labels), "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_teacher_pseudo_label_distill_evaluate_predict_export(tmp_path, capsys):
    images, labels = synthetic(tmp_path, 96, 0, "labeled")
    unlabeled, _ = synthetic(tmp_path, 48, 1, "unlabeled")
    val_images, val_labels = synthetic(tmp_path, 48, 2, "val")
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    pseudo = tmp_path / "pseudo.csv"
    common = ["--root", str(images), "--csv", str(labels), "--val-csv", str(val_labels),
              "--val-root", str(val_images), "--device", "cpu", "--quiet", "--batch-size", "16",
              "--scheduler", "none", "--lr", "3e-3", "--seed", "0", "--model", TINY]

    assert main(["train", *common, "--set", "model.kwargs.width=16", "--epochs", "8", "--out", str(teacher)]) == 0
    assert main(["pseudo-label", "--teacher", str(teacher / "best.pt"), "--images", str(unlabeled),
                 "--out", str(pseudo), "--calibrate", "--root", str(images), "--csv", str(labels)]) == 0
    with pseudo.open() as f:
        rows = list(csv.reader(f))
    assert len(rows) == 48 and all(0.0 <= float(score) <= 1.0 for _, score in rows)

    assert main(["distill", *common, "--teacher", str(teacher / "best.pt"), "--pseudo-csv", str(pseudo),
                 "--pseudo-root", str(unlabeled), "--distill-loss", "0.5*temperature_mse",
                 "--epochs", "8", "--out", str(student)]) == 0

    ckpt = torch.load(student / "best.pt", weights_only=True, map_location="cpu")
    assert ckpt["config"]["data"]["eval_transform"] == {"mode": "resize", "size": [32, 32], "normalize": "imagenet"}
    assert ckpt["config"]["data"]["train_transform"]["teacher_size"] == [32, 32]
    assert ckpt["model"]["name"] == TINY and ckpt["model"]["kwargs"] == {}
    assert ckpt["model"]["deploy"]["input_size"] == [3, 32, 32]
    assert ckpt["config"]["data"]["pseudo_csv"] == str(pseudo)  # used as given
    assert ckpt["config"]["distill"]["teachers"] == [str(teacher / "best.pt")]
    from tiny_fiqa import TinyFIQA

    bare = TinyFIQA().state_dict()
    assert set(ckpt["state_dict"]) == set(bare)  # no projector, no teacher weight in the student
    assert sum(t.numel() for t in ckpt["state_dict"].values()) == sum(t.numel() for t in bare.values())

    trained = _evaluate(capsys, str(student / "best.pt"), val_images, val_labels)
    torch.manual_seed(0)
    untrained = _evaluate(capsys, TINY, val_images, val_labels)
    assert trained["n"] == untrained["n"] == 48
    assert trained["score"] > untrained["score"] + 0.05, (trained, untrained)

    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(student / "best.pt"), str(val_images), "--out", str(predictions),
                 "--device", "cpu"]) == 0
    with predictions.open() as f:
        assert len(list(csv.DictReader(f))) == 48
    exported = tmp_path / "exported"
    assert main(["export", str(student / "best.pt"), "--out", str(exported), "--format", "torchscript"]) == 0
    assert any(exported.iterdir())
