"""The ECNU-SJTU winner's pipeline options, each against what their released code does.

A fresh head on the teacher's backbone (``FIQA_Swin_B(pretrained_path=...)``), pseudo-labelling with
the teacher's own evaluation transform (Resize + CenterCrop), a calibration fitted on all of
train.csv on raw outputs without clipping, several pseudo-label sets, and model selection by
(logistic-fitted PLCC + SRCC) / 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kdfiqa.distill
from distill_tiny_models import DictDataset
from test_distill_pseudo_label import _images
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset
from kdfiqa.distill import Teacher, pseudo_label
from kdfiqa.engine import init_distributed
from kdfiqa.engine.evaluation import evaluate_model
from kdfiqa.metrics import evaluate
from kdfiqa.models import create_model
from kdfiqa.models.deploy import deploy_config, set_deploy_config
from kdfiqa.pipeline import Labels, build_model, build_teacher, labeled_data, resolve_transforms
from kdfiqa.pipeline.labelling import label_unlabeled
from tiny_fiqa import TINY, synthetic


def _saved(tmp_path: Path, model: nn.Module, name: str = "teacher.pt") -> Path:
    path = tmp_path / name
    save_checkpoint(path, build_checkpoint(model))
    return path


def test_fresh_head_keeps_the_checkpoints_backbone_and_starts_the_head_as_a_new_model(tmp_path):
    torch.manual_seed(5)
    trained = create_model("emo2_1m")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)  # weights no fresh build has
    path = _saved(tmp_path, trained)
    config = RunConfig.from_dict({"model": {"name": "emo2_1m", "init": str(path), "init_head": "fresh"},
                                  "train": {"seed": 3}})
    started = build_model(config)
    kept = build_model(RunConfig.from_dict({"model": {"name": "emo2_1m", "init": str(path)}, "train": {"seed": 3}}))
    torch.manual_seed(3)
    new = create_model("emo2_1m")
    for key, value in started.backbone.state_dict().items():
        assert torch.equal(value, trained.backbone.state_dict()[key]), key
    for key, value in started.head.state_dict().items():
        assert torch.equal(value, new.head.state_dict()[key]), key
        assert torch.equal(kept.head.state_dict()[key], trained.head.state_dict()[key]), key
    assert not torch.equal(started.head.fc.weight, trained.head.fc.weight)


def test_fresh_head_needs_a_head(tmp_path):
    from kdfiqa.errors import ConfigError
    from kdfiqa.pipeline.building import _head_state

    with pytest.raises(ConfigError, match="no .head"):
        _head_state(nn.Linear(2, 1))


class Regressor(nn.Module):
    """A linear-output 'teacher' whose score is its input's first pixel times 3: scores outside [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.head = type("Head", (nn.Module,), {})()
        self.head.out_activation = None

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :1, 0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_logits(x)


def test_a_linear_teachers_scores_are_its_raw_regression():
    teacher = Teacher(Regressor())
    batch = {"image": torch.tensor([-1.0, 0.1, 0.9]).view(3, 1, 1, 1).expand(3, 3, 4, 4)}
    assert torch.allclose(teacher.scores(batch).reshape(-1), torch.tensor([-3.0, 0.3, 2.7]))
    # forward still speaks in (clamped) logits, which the distillation losses compare
    assert torch.isfinite(teacher(batch)).all()


def test_unclipped_calibration_keeps_the_fitted_curve_beyond_the_label_range(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, 40)
    labels = np.clip(x + rng.normal(0, 0.02, x.size), 0, 1)  # linear: the logistic's asymptotes lie beyond [0, 1]
    images = _images(np.linspace(-0.5, 1.5, 21))  # beyond the calibration range: the fit extrapolates
    clipped = pseudo_label(Regressor(), images, tmp_path / "c.csv", calibrate_on=_images(x, labels=labels))
    kept = pseudo_label(Regressor(), images, tmp_path / "k.csv", calibrate_on=_images(x, labels=labels), clip=False)
    clipped, kept = np.array(list(clipped.values())), np.array(list(kept.values()))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(np.clip(kept, 0, 1), clipped)
    assert kept.min() < 0.0 and kept.max() > 1.0


def _distill_config(tmp_path: Path, **distill) -> RunConfig:
    root, csv = synthetic(tmp_path, 12, seed=0, name="labeled")
    unlabeled, _ = synthetic(tmp_path, 3, seed=1, name="unlabeled")
    return RunConfig.from_dict({
        "data": {"root": str(root), "csv": str(csv), "unlabeled": str(unlabeled), "val_fraction": 0.25},
        "distill": {"calibrate": True, **distill},
        "train": {"device": "cpu", "output_dir": str(tmp_path / "run")},
    })


@pytest.fixture
def labelling_calls(monkeypatch) -> list:
    """What each pseudo-labelling call got (no teacher pass is run)."""
    seen: list = []

    def record(teacher, images, out_csv, *, calibrate_on=None, clip=True, **kwargs):
        seen.append({"calibrate_on": calibrate_on, "clip": clip, "transform": images.transform.spec})
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        Path(out_csv).write_text("")
        return {}

    monkeypatch.setattr(kdfiqa.distill, "pseudo_label", record)
    return seen


def test_calibration_on_all_fits_every_label_row_unclipped(tmp_path, labelling_calls):
    config = _distill_config(tmp_path, calibrate_on="all", clip_pseudo_labels=False)
    label_unlabeled(config, build_teacher(config, sources=[TINY]), tmp_path / "p.csv", init_distributed("cpu"))
    (call,) = labelling_calls
    assert sorted(call["calibrate_on"].names) == sorted(FIQADataset(config.data.root, config.data.csv).names)
    assert call["clip"] is False


def test_pseudo_labels_use_the_teachers_evaluation_transform(tmp_path, labelling_calls):
    teacher = create_model(TINY)
    spec = {"mode": "center_crop", "size": [40, 40], "resize": 44, "normalize": "symmetric"}
    set_deploy_config(teacher, deploy_config(teacher).replace(input_size=(3, 40, 40), eval_transform=spec))
    path = _saved(tmp_path, teacher)
    config = _distill_config(tmp_path)
    label_unlabeled(config, build_teacher(config, sources=[str(path)]), tmp_path / "p.csv", init_distributed("cpu"))
    assert labelling_calls[0]["transform"] == spec


def test_the_student_trains_on_every_pseudo_label_set_each_image_once_per_set(tmp_path):
    config = _distill_config(tmp_path)
    config = resolve_transforms(config, create_model(TINY))
    unlabeled = Path(config.data.unlabeled)
    names = sorted(p.name for p in unlabeled.iterdir() if p.suffix == ".png")
    sets = []
    for k in range(2):
        csv = tmp_path / f"set{k}.csv"
        csv.write_text("".join(f"{n},{(k + 1) * 0.2 + 0.01 * i}\n" for i, n in enumerate(names)))
        sets.append(Labels(csv, unlabeled))
    train, _ = labeled_data(config, sets)
    assert len(train) == 9 + 2 * len(names)
    assert sorted(train.names[9:]) == sorted(names * 2)
    with pytest.raises(Exception, match="also in the labeled training share"):
        labeled_data(config, [sets[0], Labels(Path(config.data.csv), Path(config.data.root))])


def test_fitted_score_is_the_winners_selection_metric():
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    rng = np.random.default_rng(1)
    items = [{"image": torch.randn(3, 32, 32), "name": f"v{i}.png", "index": i,
              "score": torch.tensor(float(rng.uniform()), dtype=torch.float32)} for i in range(20)]
    metrics, preds = evaluate_model(model, DictDataset(items), init_distributed("cpu"), batch_size=5, fitted=True)
    reference = evaluate(preds.scores.numpy(), preds.mos.numpy(), fit="logistic4")
    assert metrics["fitted_plcc"] == reference["plcc"] and metrics["fitted_score"] == reference["score"]
    assert metrics["score"] == evaluate(preds.scores.numpy(), preds.mos.numpy())["score"]


def test_the_epoch_line_shows_the_fitted_score_that_selects_best():
    from kdfiqa.engine.progress import epoch_line

    record = {"epoch": 2, "train": {"loss": 0.5}, "lr": 1e-4, "images_per_s": 10.0, "time": 1.0, "best": True,
              "val": {"srcc": 0.5, "plcc": 0.4, "score": 0.45, "fitted_score": 0.52, "spread": 0.1}}
    assert "fitted_score 0.5200" in epoch_line(record, 3) and "* best" in epoch_line(record, 3)
    del record["val"]["fitted_score"]
    assert "fitted_score" not in epoch_line(record, 3)


def test_self_training_rebuilds_the_teacher_from_its_allow_listed_spec_never_its_stored_kwargs(tmp_path):
    """A teacher checkpoint whose stored run config carries a forbidden model argument (one that opens a
    file) retrains the checkpoint's own, allow-listed model spec; a checkpoint whose model spec itself
    carries one is refused with one line, before anything is built or opened."""
    from kdfiqa.errors import CheckpointError
    from kdfiqa.pipeline.labelling import _teacher_run_config

    teacher = create_model(TINY)
    stored = RunConfig.from_dict({"model": {"name": TINY}}).to_dict()
    stored["model"]["kwargs"] = {"checkpoint_path": str(tmp_path / "elsewhere.pth")}
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, build_checkpoint(teacher, config=stored))
    config = RunConfig.from_dict({"model": {"name": TINY}, "distill": {"self_train": 1}})
    retrain = _teacher_run_config(config, str(path), tmp_path / "round")
    assert retrain.model.name == TINY and "checkpoint_path" not in retrain.model.kwargs
    assert retrain.model.init == str(path)
    crafted = build_checkpoint(teacher, config=stored)
    crafted["model"]["kwargs"] = {"checkpoint_path": str(tmp_path / "elsewhere.pth")}
    save_checkpoint(path, crafted)
    with pytest.raises(CheckpointError, match="refused to replay model argument.*checkpoint_path") as info:
        _teacher_run_config(config, str(path), tmp_path / "round")
    assert "\n" not in str(info.value)
