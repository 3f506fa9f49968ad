"""``kdfiqa distill`` with the unlabeled images used online: the options' refusals, equal steps for
any unlabeled share, the loss terms' shares in the log, and the teacher's calibration fitted once."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import optimize
from torch import nn

from kdfiqa import pipeline
from kdfiqa.checkpoint import load_checkpoint
from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset, build_transform, split_dataset
from kdfiqa.distill import Teacher
from kdfiqa.errors import DataError
from kdfiqa.pipeline.data import training_streams
from tiny_fiqa import TINY, run_cli, synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    images, labels = synthetic(root, 16, 0, "labeled")
    unlabeled, _ = synthetic(root, 10, 1, "unlabeled")
    return images, labels, unlabeled



def _argv(data, out, *extra):
    images, labels, unlabeled = data
    return ["distill", "--model", TINY, "--teacher", TINY, "--root", images, "--csv", labels, "--device", "cpu",
            "--quiet", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--seed", "3",
            "--out", out, "--unlabeled", unlabeled, *extra]


@pytest.mark.parametrize("extra, needle", [
    (["--unlabeled-use", "online", "--distill-loss", "none"], "--unlabeled-use is only used with --distill-loss or"),
    (["--labeled-per-batch", "2"], "add --unlabeled-use online"),
    (["--unlabeled-use", "online", "--labeled-per-batch", "5"], "exceeds --batch-size 4"),
    (["--unlabeled-use", "online", "--sampler", "ssus"], "--sampler ssus"),
    (["--calibrate-online", "--distill-loss", "none"], "--calibrate-online is only used with --distill-loss"),
    (["--unlabeled-use", "online", "--calibrate"], "use --calibrate-online"),
])
def test_settings_of_online_use_are_refused_in_one_line(tmp_path, data, capsys, extra, needle):
    code, out, err = run_cli(capsys, _argv(data, tmp_path / "run", *extra))
    text = out + err
    assert code == 2 and needle in text
    assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_online_use_needs_the_unlabeled_folder(tmp_path, data, capsys):
    argv = _argv(data, tmp_path / "run", "--unlabeled-use", "online")
    argv = argv[:argv.index("--unlabeled")] + argv[argv.index("--unlabeled") + 2:]
    code, out, err = run_cli(capsys, argv)
    text = out + err
    assert code == 2 and "add --unlabeled" in text


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_online_runs_take_the_same_steps_whatever_the_unlabeled_share_and_log_the_shares(tmp_path, data, capsys):
    steps = []
    for batch_size in (4, 6):
        run = tmp_path / f"b{batch_size}"
        code, out, err = run_cli(capsys, _argv(data, run, "--unlabeled-use", "online", "--labeled-per-batch", "2",
                                               "--batch-size", str(batch_size)))
        assert code == 0, out + err
        assert not (run / "pseudo_labels.csv").exists()  # online: the teacher labels nothing offline
        record, = _log(run)
        steps.append(record["step"])
        shares = {k: v for k, v in record["train"].items() if k.startswith("share/")}
        assert set(shares) == {"share/task", "share/distill"} and sum(shares.values()) == pytest.approx(1.0)
        assert all(math.isfinite(v) for v in record["train"].values())
    assert steps == [math.ceil(12 / 2)] * 2  # 12 labeled training images, 2 a batch


def test_both_pseudo_labels_the_unlabeled_images_and_keeps_them_in_the_unlabeled_stream(tmp_path, data, capsys):
    run = tmp_path / "both"
    code, out, err = run_cli(capsys, _argv(data, run, "--unlabeled-use", "both", "--labeled-per-batch", "2"))
    text = out + err
    assert code == 0, text
    assert len((run / "pseudo_labels.csv").read_text().splitlines()) == 10
    assert _log(run)[0]["step"] == 6  # the labels fix the epoch: 12 training labels, 2 a batch
    config = RunConfig.from_dict(load_checkpoint(run / "last.pt")["config"])
    train, _ = pipeline.labeled_data(config, pipeline.Labels(run / "pseudo_labels.csv", data[2], score_range=None))
    labeled, unlabeled = training_streams(train)
    assert len(labeled) == 12 and len(unlabeled) == 10
    assert np.isfinite(train.scores).all()  # pseudo-labeled: every sample has a score


def _logistic(x, b1, b2, b3, b4):
    return (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4))) + b2


class Brightness(nn.Module):
    """A teacher whose logit is the image's mean value: its scores follow the labels of `_graded`."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(dim=(1, 2, 3)).reshape(-1, 1)


IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))


def _graded(tmp_path, n=16):
    """n uniform grey images labelled by a known logistic of :class:`Brightness`'s score of them
    (b1, b2, b3, b4 = 0.9, 0.1, 0.5, 0.1), plus a little noise."""
    folder = tmp_path / "graded"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, grey in enumerate(rng.permutation(np.linspace(40, 220, n).round())):
        Image.fromarray(np.full((40, 40, 3), grey, dtype=np.uint8)).save(folder / f"g{i:02d}.png")
        score = 1 / (1 + np.exp(-1.5 * np.mean((grey / 255 - IMAGENET[0]) / IMAGENET[1])))
        label = _logistic(score, 0.9, 0.1, 0.5, 0.1) + rng.normal(0, 0.01)
        rows.append(f"g{i:02d}.png,{label:.6f}")
    (tmp_path / "graded.csv").write_text("\n".join(rows) + "\n")
    return folder, tmp_path / "graded.csv"


def _config(tmp_path, root, csv, epochs=1):
    return RunConfig.from_dict({
        "model": {"name": TINY},
        "data": {"root": str(root), "csv": str(csv), "val_fraction": 0.25},
        "distill": {"calibrate_online": True},
        "train": {"device": "cpu", "epochs": epochs, "batch_size": 4, "quiet": True,
                  "output_dir": str(tmp_path / "run")},
    })


def test_calibration_matches_a_direct_fit_is_stored_and_is_never_refitted_on_resume(tmp_path, monkeypatch):
    root, csv = _graded(tmp_path)
    teacher = Teacher(Brightness(), input_size=32)
    pipeline.distill(_config(tmp_path, root, csv), teacher=teacher)
    stored = json.loads((tmp_path / "run" / "teacher_calibration.json").read_text())
    # the direct fit: the teacher's scores of the training share (rendered as it is deployed) to the labels
    share = split_dataset(FIQADataset(root, csv, transform=build_transform(teacher.eval_transform)), 0.25, 0)[0]
    scores = np.array([float(teacher.scores({"image": share[i]["image"][None]})) for i in range(len(share))])
    labels = share.scores.astype(np.float64)
    direct, _ = optimize.curve_fit(_logistic, scores, labels, p0=[labels.max(), labels.min(), scores.mean(), 0.5],
                                   maxfev=100_000)
    ours = [stored[k] for k in ("b1", "b2", "b3", "b4")]
    assert stored["images"] == len(share) == 12
    assert np.allclose(_logistic(scores, *ours), _logistic(scores, *direct), atol=1e-4)
    assert np.allclose(ours[:3], direct[:3], rtol=1e-3) and abs(ours[3]) == pytest.approx(abs(direct[3]), rel=1e-3)
    assert np.allclose(ours[:3], [0.9, 0.1, 0.5], atol=0.05)  # and the fit finds the curve the labels follow
    assert load_checkpoint(tmp_path / "run" / "last.pt")["callbacks"]["TeacherCalibration"] == {
        k: stored[k] for k in ("b1", "b2", "b3", "b4")}

    def refit(*args, **kwargs):
        raise AssertionError("a resumed run refitted the teacher calibration")

    monkeypatch.setattr(importlib.import_module("kdfiqa.distill.pseudo_label"), "fit_calibration", refit)
    result = pipeline.distill(_config(tmp_path, root, csv, epochs=2), teacher=Teacher(Brightness(), input_size=32),
                              resume=True, allow_changes=True)
    assert result.history[-1]["epoch"] == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["callbacks"]["TeacherCalibration"] == {
        k: stored[k] for k in ("b1", "b2", "b3", "b4")}


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(0.3))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], 1)


def test_a_degenerate_teacher_calibration_is_refused(tmp_path):
    root, csv = _graded(tmp_path)
    with pytest.raises(DataError, match="teacher calibration on 12 labelled images is degenerate.*distill.calibrate_online"):
        pipeline.distill(_config(tmp_path, root, csv), teacher=Teacher(Constant(), input_size=32))
    assert not (tmp_path / "run" / "teacher_calibration.json").exists()


def test_a_degenerate_teacher_calibration_keeps_the_raw_outputs_when_asked_and_on_resume(tmp_path, caplog):
    import dataclasses

    from kdfiqa.checkpoint import load_checkpoint

    root, csv = _graded(tmp_path)
    base = _config(tmp_path, root, csv, epochs=2)
    config = dataclasses.replace(base, distill=dataclasses.replace(base.distill, raw_if_degenerate=True),
                                 train=dataclasses.replace(base.train, epochs=1))
    with caplog.at_level("WARNING", logger="kdfiqa.pipeline"):
        pipeline.distill(config, teacher=Teacher(Constant(), input_size=32))
    stored = json.loads((tmp_path / "run" / "teacher_calibration.json").read_text())
    assert stored["raw"] is True and "degenerate" in caplog.text and "raw outputs" in caplog.text
    assert load_checkpoint(tmp_path / "run" / "last.pt")["callbacks"]["TeacherCalibration"] == {"raw": True}
    resumed = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    result = pipeline.distill(resumed, teacher=Teacher(Constant(), input_size=32), resume=True, allow_changes=True)
    assert [r["epoch"] for r in result.history] == [1, 2]  # resumed with the stored (raw) calibration
