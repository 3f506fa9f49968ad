"""Calibrated pseudo-labels: the logistic is fitted on the training share of the labels only."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdfiqa.distill
from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset, split_dataset
from kdfiqa.engine import init_distributed
from kdfiqa.pipeline import build_teacher
from kdfiqa.pipeline.labelling import label_unlabeled
from tiny_fiqa import TINY, synthetic


@pytest.fixture
def calibration_sets(monkeypatch) -> list:
    """The labelled set each pseudo-labelling call would calibrate on (no teacher pass is run)."""
    seen: list = []

    def record(teacher, images, out_csv, *, calibrate_on=None, **kwargs):
        seen.append(calibrate_on)
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        Path(out_csv).write_text("")
        return Path(out_csv)

    monkeypatch.setattr(kdfiqa.distill, "pseudo_label", record)
    return seen


def _config(tmp_path: Path, **data) -> RunConfig:
    root, csv = synthetic(tmp_path, 12, seed=0, name="labeled")
    unlabeled, _ = synthetic(tmp_path, 3, seed=1, name="unlabeled")
    return RunConfig.from_dict({
        "data": {"root": str(root), "csv": str(csv), "unlabeled": str(unlabeled), **data},
        "distill": {"calibrate": True},
        "train": {"device": "cpu", "output_dir": str(tmp_path / "run")},
    })


def test_calibration_leaves_out_the_validation_split(tmp_path, calibration_sets):
    config = _config(tmp_path, val_fraction=0.25, split_seed=3)
    label_unlabeled(config, build_teacher(config, sources=[TINY]), tmp_path / "p.csv", init_distributed("cpu"))
    (used,) = calibration_sets
    labeled = FIQADataset(config.data.root, config.data.csv)
    train, val = split_dataset(labeled, 0.25, 3)
    assert sorted(used.names) == sorted(train.names)
    assert not set(used.names) & set(val.names) and len(val.names) == 3


def test_calibration_uses_every_label_when_validation_has_its_own_csv(tmp_path, calibration_sets):
    val_root, val_csv = synthetic(tmp_path, 4, seed=2, name="val")
    config = _config(tmp_path, val_root=str(val_root), val_csv=str(val_csv))
    label_unlabeled(config, build_teacher(config, sources=[TINY]), tmp_path / "p.csv", init_distributed("cpu"))
    (used,) = calibration_sets
    assert sorted(used.names) == sorted(FIQADataset(config.data.root, config.data.csv).names)
