"""Offline distillation: pseudo-labels written as challenge CSVs, optionally logistic-calibrated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit
from scipy.special import expit
from torch import nn

from distill_tiny_models import DictDataset
from kdfiqa.data.labels import read_labels
from kdfiqa.distill import Teacher, pseudo_label, write_scores_csv
from kdfiqa.errors import DataError


class PixelLogit(nn.Module):
    """A teacher whose logit is the image's first pixel, so its scores are known in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, 0, 0]


def _images(logits, *, labels=None, prefix="face"):
    items = []
    for i, z in enumerate(logits):
        item = {"image": torch.full((3, 4, 4), float(z)), "name": f"{prefix}_{i:03d}.png", "index": i}
        if labels is not None:
            item["score"] = torch.tensor(labels[i], dtype=torch.float32)
        items.append(item)
    return DictDataset(items)


def _logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def test_pseudo_labels_are_teacher_scores_in_challenge_format(tmp_path):
    logits = np.linspace(-3, 3, 11)
    out = tmp_path / "sub" / "pseudo.csv"
    result = pseudo_label(PixelLogit(), _images(logits), out, batch_size=4)
    lines = out.read_text().splitlines()
    assert len(lines) == 11 and lines[0].split(",")[0] == "face_000.png"  # no header
    labels = read_labels(out)
    assert [label.name for label in labels] == [f"face_{i:03d}.png" for i in range(11)]
    np.testing.assert_allclose([label.score for label in labels], expit(logits), atol=1e-6)
    assert list(result) == [label.name for label in labels]
    # the written CSV serves as an offline teacher giving back the same scores
    offline = Teacher(out)({"name": ["face_004.png", "face_007"], "image": torch.zeros(2, 3, 4, 4)})
    np.testing.assert_allclose(offline.sigmoid().numpy()[:, 0], expit(logits[[4, 7]]), atol=1e-6)


def test_calibration_matches_a_direct_scipy_logistic_fit(tmp_path):
    rng = np.random.default_rng(0)
    labelled_logits = rng.uniform(-3, 3, 60)
    raw = expit(labelled_logits)
    mos = _logistic4(raw, 0.9, 0.15, 0.45, 0.08) + rng.normal(0, 0.01, raw.size)
    unlabelled_logits = rng.uniform(-4, 4, 25)
    result = pseudo_label(
        PixelLogit(), _images(unlabelled_logits), tmp_path / "p.csv",
        calibrate_on=_images(labelled_logits, labels=mos.astype(np.float32), prefix="lab"),
    )
    params, _ = curve_fit(_logistic4, raw, mos.astype(np.float32), p0=[1.0, 0.0, 0.5, 0.1], maxfev=20000)
    expected = np.clip(_logistic4(expit(unlabelled_logits), *params), 0.0, 1.0)
    np.testing.assert_allclose(list(result.values()), expected, atol=1e-4)
    np.testing.assert_allclose([label.score for label in read_labels(tmp_path / "p.csv")], expected, atol=1e-4)
    assert not np.allclose(expected, expit(unlabelled_logits), atol=0.05)  # the mapping did something


def test_calibration_on_unlabelled_data_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no 'score'"):
        pseudo_label(PixelLogit(), _images([0.0] * 5), tmp_path / "p.csv", calibrate_on=_images([0.0] * 5))
    assert not (tmp_path / "p.csv").exists()


def test_write_scores_csv_writes_eight_significant_digits_atomically(tmp_path):
    out = write_scores_csv(tmp_path / "deep" / "p.csv", ["a.png", "b,c.png"], np.array([1 / 3, 0.5]))
    assert out.read_bytes() == b'a.png,0.33333333\n"b,c.png",0.5\n'
    assert [p.name for p in out.parent.iterdir()] == ["p.csv"]


def test_degenerate_calibrations_are_named():
    import numpy as np

    from kdfiqa.distill.pseudo_label import calibration_fault

    raw = np.linspace(0.2, 0.8, 50)
    assert calibration_fault(raw, 0.3 + 0.5 * raw) is None
    assert "flat" in calibration_fault(raw, np.full(50, 0.4873) + 1e-6 * raw)
    assert "distinct" in calibration_fault(raw, np.where(raw > 0.5, 0.9, 0.1))
    assert "rank agreement" in calibration_fault(raw, np.abs(raw - 0.5) + 0.05 * raw)


def test_a_degenerate_calibration_is_refused_unless_raw_scores_are_asked_for(tmp_path):
    import pytest
    import torch

    from kdfiqa.data import FIQADataset, UnlabeledImageFolder, build_transform
    from kdfiqa.distill import pseudo_label
    from kdfiqa.errors import DataError
    from kdfiqa.models import create_model
    from tiny_fiqa import TINY, synthetic

    images, labels = synthetic(tmp_path, 12, 0, "labeled")
    transform = build_transform({"mode": "resize", "size": 32})
    teacher = create_model(TINY)
    with torch.no_grad():
        teacher.head.weight.zero_()  # a constant teacher: every image gets sigmoid(bias)
    args = (teacher, UnlabeledImageFolder(images, transform=transform), tmp_path / "p.csv")
    calibrate = FIQADataset(images, labels, transform=transform)
    with pytest.raises(DataError, match="degenerate"):
        pseudo_label(*args, calibrate_on=calibrate)
    assert not (tmp_path / "p.csv").exists()
    scores = pseudo_label(*args, calibrate_on=calibrate, raw_if_degenerate=True)
    assert len(set(scores.values())) == 1


def test_a_collapsed_teachers_pseudo_labels_are_warned_about(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="kdfiqa"):
        pseudo_label(PixelLogit(), _images(np.full(6, 0.25)), tmp_path / "flat.csv", batch_size=4)
    assert "near-constant" in caplog.text and "collapsed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdfiqa"):
        pseudo_label(PixelLogit(), _images(np.linspace(-1, 1, 6)), tmp_path / "fine.csv", batch_size=4)
    assert "near-constant" not in caplog.text
