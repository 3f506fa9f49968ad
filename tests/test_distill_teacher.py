"""The frozen teacher (kdfiqa.distill.Teacher): sources, resolution, offline scores, ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, logit
from torch import nn

import kdfiqa.targets
from distill_tiny_models import TINY_NAME, ConstantLogit, TinyFIQA, batch
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.distill import Teacher
from kdfiqa.distill.score_table import LOGIT_EPS
from kdfiqa.errors import ConfigError, DataError
from kdfiqa.models import create_model, deploy_config, set_deploy_config


class RecordingModel(TinyFIQA):
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return super().forward_logits(x)


def test_teacher_is_frozen_and_stays_in_eval_mode():
    t = Teacher(TinyFIQA())
    assert not t.training and all(not m.training for m in t.modules())
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert all(not m.training for m in t.modules())
    parent = nn.Sequential(t)
    parent.train()
    assert all(not m.training for m in t.modules())
    out = t(batch())
    assert out.shape == (4, 1) and not out.requires_grad


def test_teacher_uses_teacher_view_when_present_else_resizes_to_its_input_size():
    net = RecordingModel(default_input_size=(3, 32, 32))
    t = Teacher(net)
    b = batch(2, 16, teacher_size=32)
    t(b)
    assert torch.equal(net.seen, b["teacher_image"])
    b = batch(2, 16, teacher_size=24)  # a view of another size (an ensemble's): resized to the network's
    t(b)
    expected = torch.nn.functional.interpolate(b["teacher_image"], size=(32, 32), mode="bilinear",
                                               align_corners=False, antialias=True)
    assert torch.equal(net.seen, expected)
    b.pop("teacher_image")
    t(b)
    assert net.seen.shape == (2, 3, 32, 32)
    Teacher(net, input_size=(20, 28))(b)
    assert net.seen.shape == (2, 3, 20, 28)
    # a constant image stays constant under resizing: the student's view is what gets resized
    b["image"] = torch.full((2, 3, 16, 16), 0.75)
    t(b)
    assert torch.allclose(net.seen, torch.full_like(net.seen, 0.75))


def test_teacher_logits_equal_the_network_logits():
    torch.manual_seed(0)
    net = TinyFIQA().eval()
    b = batch(3)
    with torch.no_grad():
        expected = net.forward_logits(b["image"])
    assert torch.allclose(Teacher(net)(b), expected)


def test_registered_name_checkpoint_and_timm_sources(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = create_model(TINY_NAME)
    with torch.no_grad():
        model.backbone[1].running_mean.uniform_(-1, 1)  # non-default state must survive the round trip
    path = save_checkpoint(tmp_path / "teacher.pt", build_checkpoint(model))
    b = batch(3)
    with torch.no_grad():
        expected = model.eval().forward_logits(b["image"])
    assert torch.allclose(Teacher(path)(b), expected, atol=1e-6)
    assert isinstance(Teacher(TINY_NAME).network, TinyFIQA)

    calls = []
    monkeypatch.setattr(kdfiqa.targets, "create_model", lambda name, **kw: calls.append((name, kw)) or TinyFIQA())
    Teacher("timm:resnet18", model_kwargs={"pretrained": False})
    assert calls == [("timm:resnet18", {"pretrained": False})]


def test_sources_resolve_through_load_target_and_run_at_their_deploy_size(tmp_path):
    torch.manual_seed(0)
    model = create_model(TINY_NAME)
    assert Teacher(model).input_size == (3, 16, 16)  # the registry's default_input_size
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, 20, 24)))
    path = save_checkpoint(tmp_path / "teacher.ckpt", build_checkpoint(model))
    teacher = Teacher(path)
    assert teacher.input_size == (3, 20, 24)  # the checkpoint's deploy config, not the registry's 16
    recorded = RecordingModel()
    recorded.load_state_dict(teacher.network.state_dict())
    Teacher(set_deploy_config(recorded, deploy_config(teacher.network)))(batch(2, 16))
    assert recorded.seen.shape == (2, 3, 20, 24)
    factory = tmp_path / "teachers.py"
    factory.write_text("from distill_tiny_models import TinyFIQA\n\ndef build():\n    return TinyFIQA(width=3)\n")
    assert Teacher(f"{factory}:build").network.head.in_features == 6
    assert Teacher(ConstantLogit(0.0)).input_size is None  # no size known: fed as it is


def test_bad_sources_are_config_errors():
    with pytest.raises(ConfigError, match="forward_logits"):
        Teacher(nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="empty"):
        Teacher([])
    with pytest.raises(ConfigError):
        Teacher(3.5)


def _write_scores(path, rows):
    path.write_text("".join(f"{name},{score}\n" for name, score in rows))
    return path


def test_offline_csv_teacher_returns_clamped_logits_of_given_scores(tmp_path):
    rows = [("img_0_0", 0.3), ("img_0_1.png", 0.9), ("img_0_2", 0.0), ("img_0_3", 1.0)]
    t = Teacher(_write_scores(tmp_path / "scores.csv", rows))
    out = t(batch(4)).numpy()[:, 0].astype(np.float64)
    clamped = np.clip([s for _, s in rows], LOGIT_EPS, 1 - LOGIT_EPS)
    np.testing.assert_allclose(out, logit(clamped), rtol=1e-4)  # float32 near 1 - eps
    np.testing.assert_allclose(expit(out[:2]), [0.3, 0.9], atol=1e-6)


def test_offline_csv_teacher_names_the_missing_image(tmp_path):
    t = Teacher(_write_scores(tmp_path / "scores.csv", [("img_0_0", 0.5)]))
    with pytest.raises(DataError, match="img_0_1.png"):
        t(batch(2))


def test_ensemble_averages_in_score_space(tmp_path):
    csv_path = _write_scores(tmp_path / "s.csv", [(f"img_0_{i}", s) for i, s in enumerate([0.1, 0.5, 0.8])])
    inner = Teacher(ConstantLogit(-1.0), input_size=8)
    t = Teacher([ConstantLogit(2.0), inner, csv_path])
    assert len(t.members) == 3 and t.members[1].input_size == (3, 8, 8)
    out = t(batch(3)).numpy()[:, 0].astype(np.float64)
    expected = logit((expit(2.0) + expit(-1.0) + np.array([0.1, 0.5, 0.8])) / 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="one teacher network"):
        t.network
