"""Teacher-scored quality-altering augmentation (issue 22): a training transform's ``quality_augment``
degrades (and mixes) the decoded image before both views are cut, and an altered sample's label is
marked missing for that view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from kdfiqa.config import RunConfig
from kdfiqa.data import FIQADataset, build_transform, degrade
from kdfiqa.data.datasets import ImageSamples, Sample
from kdfiqa.data.quality_augment import QualityAugment
from kdfiqa.data.transform_spec import TransformSpec
from kdfiqa.errors import ConfigError, DataError
from tiny_fiqa import TINY, synthetic

PLAIN = {"mode": "resize", "size": 24, "teacher_size": 32, "normalize": "none"}
"""A deterministic geometry (the whole image), so a view depends on the image alone."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("augment"), 6, 3, "labeled")


def _dataset(data, **augment) -> FIQADataset:
    images, labels = data
    spec = {**PLAIN, "quality_augment": augment} if augment else PLAIN
    return FIQADataset(images, labels, transform=build_transform(spec))


@pytest.mark.parametrize("augment, message", [
    ({"p": 1.5}, r"'quality_augment.p': 1.5 is not a probability in \[0, 1\]"),
    ({"mixup": -0.1}, r"'quality_augment.mixup': -0.1 is not a probability"),
    ({"p": True}, r"'quality_augment.p': True is not a probability"),
    ({"max_severity": 0}, r"'quality_augment.max_severity': 0 is not a severity in \(0, 1\]"),
    ({"max_severity": 1.2}, r"'quality_augment.max_severity': 1.2 is not a severity"),
    ({"max_severity": float("nan")}, r"'quality_augment.max_severity': nan is not a severity"),
    ({"kinds": ["blur", "sharpen"]}, r"'quality_augment.kinds': 'sharpen' is not a degradation; choose from blur"),
    ({"kinds": []}, r"'quality_augment.kinds': \[\] is not a non-empty list"),
    ({"kinds": "blur"}, r"'quality_augment.kinds': 'blur' is not a non-empty list"),
    ({"probability": 0.5}, r"'quality_augment.probability' is unknown; valid keys: p, kinds, max_severity, mixup"),
    ("blur", r"'quality_augment': 'blur' is not a mapping"),
])
def test_a_bad_quality_augment_is_one_line_naming_its_key(augment, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_transform({**PLAIN, "quality_augment": augment})
    assert "\n" not in str(info.value)


def test_the_spec_keeps_it_for_training_and_drops_it_for_evaluation():
    spec = TransformSpec.parse({**PLAIN, "quality_augment": {"p": 0.5, "kinds": ["jpeg"], "max_severity": 0.6}})
    assert spec.quality_augment == QualityAugment(p=0.5, kinds=("jpeg",), max_severity=0.6, mixup=0.0)
    assert spec.alters_quality and spec.to_dict()["quality_augment"] == {"p": 0.5, "kinds": ["jpeg"],
                                                                         "max_severity": 0.6, "mixup": 0.0}
    assert TransformSpec.parse(spec.to_dict()) == spec and hash(TransformSpec.parse(spec.to_dict())) == hash(spec)
    assert spec != TransformSpec.parse({**PLAIN, "quality_augment": {"p": 0.4, "kinds": ["jpeg"]}})
    assert "quality_augment" not in spec.for_evaluation() and not spec.for_evaluation().alters_quality
    assert spec.rescaled(spec.size, TransformSpec.parse({"mode": "resize", "size": 12}).size).quality_augment \
        == spec.quality_augment
    assert not TransformSpec.parse({**PLAIN, "quality_augment": {"p": 0, "mixup": 0}}).alters_quality
    assert not TransformSpec.parse(PLAIN).alters_quality


def test_p_zero_is_the_identity_and_keeps_the_labels(data):
    plain, augmented = _dataset(data), _dataset(data, p=0.0, mixup=0.0)
    for index in range(len(plain)):
        torch.manual_seed(index)
        expected = plain[index]
        torch.manual_seed(index)
        item = augmented[index]
        assert torch.equal(item["image"], expected["image"]) and torch.equal(item["teacher_image"],
                                                                            expected["teacher_image"])
        assert item["score"].item() == expected["score"].item() and not math.isnan(item["score"].item())
        assert item["augment"] == {"kind": "", "severity": 0.0, "seed": 0, "partner": -1, "lam": 1.0}


def test_p_one_degrades_both_views_as_degrade_does_and_drops_the_label(data):
    dataset, reference = _dataset(data, p=1.0, max_severity=0.8), build_transform(PLAIN)
    torch.manual_seed(0)
    items = [dataset[i] for i in range(len(dataset))]
    for index, item in enumerate(items):
        applied = item["augment"]
        assert applied["kind"] in ("blur", "noise", "jpeg", "downup") and 0.0 <= applied["severity"] < 0.8
        assert math.isnan(item["score"].item()) and applied["partner"] == -1
        img = dataset.load(index)
        expected = reference(degrade(img, applied["kind"], applied["severity"], seed=applied["seed"]))
        clean = reference(img)
        for view in ("image", "teacher_image"):
            assert torch.equal(item[view], expected[view])
            assert not torch.equal(item[view], clean[view])  # the degradation actually changed the view
    assert len({item["augment"]["kind"] for item in items}) > 1


def test_the_draws_repeat_for_a_seed_and_differ_for_another(data):
    dataset = _dataset(data, p=0.5, mixup=0.5)

    def epoch(seed):
        torch.manual_seed(seed)
        return [dataset[i] for i in range(len(dataset))]

    first, again, other = epoch(1), epoch(1), epoch(2)
    for a, b in zip(first, again):
        assert a["augment"] == b["augment"] and torch.equal(a["image"], b["image"])
        assert torch.equal(a["score"], b["score"]) or (a["score"].isnan() and b["score"].isnan())
    assert [a["augment"] for a in first] != [a["augment"] for a in other]


def test_mixup_blends_another_image_with_the_same_lambda_in_both_views(data):
    dataset, reference = _dataset(data, p=0.0, mixup=1.0), build_transform(PLAIN)
    torch.manual_seed(3)
    for index in range(len(dataset)):
        item = dataset[index]
        partner, lam = item["augment"]["partner"], item["augment"]["lam"]
        assert partner != index and 0 <= partner < len(dataset) and 0.5 <= lam < 1.0
        assert math.isnan(item["score"].item()) and item["augment"]["kind"] == ""
        own = np.asarray(dataset.load(index), np.float64)
        other = np.asarray(dataset.load(partner).resize((own.shape[1], own.shape[0]), Image.Resampling.BILINEAR),
                           np.float64)
        mixed = Image.fromarray(np.round(lam * own + (1 - lam) * other).astype(np.uint8))
        expected = reference(mixed)
        for view in ("image", "teacher_image"):  # 8-bit blending may round a level differently
            assert (item[view] - expected[view]).abs().max() <= 1.0 / 255 + 1e-6


def test_unlabeled_samples_are_augmented_and_mixup_needs_two_images(data):
    images, _ = data
    files = sorted(images.glob("*.png"))
    spec = {**PLAIN, "quality_augment": {"p": 1.0}}
    samples = ImageSamples([Sample(f.name, f, math.nan) for f in files[:3]] + [Sample(files[3].name, files[3])],
                           transform=build_transform(spec))
    torch.manual_seed(0)
    items = [samples[i] for i in range(len(samples))]
    assert all(math.isnan(item["score"].item()) for item in items[:3]) and "score" not in items[3]
    assert all(item["augment"]["kind"] for item in items)
    lonely = ImageSamples([Sample(files[0].name, files[0])], transform=build_transform(
        {**PLAIN, "quality_augment": {"p": 0.0, "mixup": 1.0}}))
    with pytest.raises(DataError, match="at least two images"):
        lonely[0]


def _config(**distill) -> RunConfig:
    return RunConfig.from_dict({"model": {"name": TINY}, "data": {"root": ".", "csv": "x.csv", "train_transform": {
        "mode": "resize", "quality_augment": {"p": 0.5}}}, "distill": {"teachers": [TINY], **distill}})


def test_it_is_refused_unless_a_teacher_scores_the_views_online(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("a.png,0.5\n")  # files are checked first: the settings' errors need one
    with pytest.raises(ConfigError, match="quality_augment alters the training images.*distill.loss") as info:
        _config(loss=None).validate()
    assert "\n" not in str(info.value)
    _config(loss="temperature_mse").validate()
    _config(loss=None, feature=["features:features"]).validate()
    from kdfiqa.pipeline import validate

    with pytest.raises(ConfigError, match="train has no teacher to score them"):
        validate(_config(loss="temperature_mse"), "train")
    quiet = RunConfig.from_dict({"model": {"name": TINY}, "data": {"root": ".", "csv": "x.csv", "train_transform": {
        "mode": "resize", "quality_augment": {"p": 0.0}}}, "distill": {"loss": None}})
    quiet.validate()  # a quality_augment that never alters an image trains on labels as they are


@pytest.mark.slow
def test_distill_trains_on_augmented_labeled_and_unlabeled_views_through_a_view_cache(tmp_path, data):
    import json

    from kdfiqa.cli.main import main

    images, labels = data
    unlabeled, _ = synthetic(tmp_path, 6, 4, "unlabeled")  # names shared with the labeled images
    torch.manual_seed(0)
    args = ["distill", "--model", TINY, "--root", images, "--csv", labels, "--val-fraction", "0.5",
            "--batch-size", "4", "--epochs", "2", "--device", "cpu", "--quiet", "--teacher-input", "32",
            "--set", "data.train_transform={mode: randcrop_or_resize, crop: 32, flip: true, "
                     "quality_augment: {p: 0.5, mixup: 0.3, max_severity: 0.6}}",
            "--unlabeled", unlabeled, "--unlabeled-use", "online", "--labeled-per-batch", "2", "--teacher", TINY,
            "--view-cache", "3", "--out", tmp_path / "run"]
    assert main([str(a) for a in args]) == 0
    cache = torch.load(tmp_path / "run" / "teacher_views.pt", weights_only=True)
    assert cache["logits"].shape == (3 + 6, 3) and (cache["kinds"] >= 0).any() and (cache["partners"] >= 0).any()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) and r["train"]["distill"] > 0 for r in records if "train" in r)
