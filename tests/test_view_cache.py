"""Crop-level teacher cache: stored views reproduce the teacher's scores, training reads them without
running the teacher, and a cache of another teacher or transform is refused."""

from __future__ import annotations

import json

import pytest
import torch

from kdfiqa.checkpoint import load_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.data import FIQADataset, build_transform
from kdfiqa.distill import CachedTeacher, CachedViews, Distiller, Teacher, ViewCache, build_view_cache
from kdfiqa.distill.view_cache import draw_seed, teacher_fingerprint
from kdfiqa.errors import CheckpointError, ConfigError, DataError
from kdfiqa.metrics import Logistic4
from kdfiqa.models import create_model
from tiny_fiqa import TINY, synthetic

SPEC = {"mode": "randcrop_or_resize", "size": 24, "crop": 32, "teacher_size": 32, "flip": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("views"), 12, 0, "labeled")


def _teacher(seed: int = 0) -> Teacher:
    torch.manual_seed(seed)
    return Teacher(create_model(TINY))


def test_stored_views_reproduce_the_teachers_scores(data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    cache = build_view_cache(teacher, dataset, views=3, batch_size=4, seed=1)
    assert cache.views == 3 and cache.logits.shape == (12, 3) and cache.names == dataset.names
    views = dataset.transform
    for row in (0, 7):
        img = dataset.load(row)
        for k in range(3):
            box = tuple(cache.boxes[row, k].tolist())
            view = views.render(img, [box], bool(cache.flips[row, k]), views=["teacher_image"])["teacher_image"]
            expected = teacher({"image": view[None], "teacher_image": view[None]}).reshape(())
            assert torch.allclose(expected, cache.logits[row, k], atol=1e-6)
    assert len({tuple(b) for b in cache.boxes[:, :, 0].tolist()}) > 1  # the views differ
    again = build_view_cache(teacher, dataset, views=3, batch_size=4, seed=1)
    assert torch.equal(again.logits, cache.logits) and torch.equal(again.boxes, cache.boxes)


def test_a_cached_item_is_the_student_view_of_a_stored_box(data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    cache = build_view_cache(_teacher(), dataset, views=2, seed=0)
    cached = CachedViews(dataset, cache)
    torch.manual_seed(5)
    item = cached[3]
    assert set(item) >= {"image", "score", "name", "teacher_logit"} and "teacher_image" not in item
    assert item["image"].shape == (3, 24, 24)
    img = dataset.load(3)
    candidates = [dataset.transform.render(img, [tuple(cache.boxes[3, k].tolist())], bool(cache.flips[3, k]),
                                           views=["image"])["image"] for k in range(2)]
    k = next(k for k, view in enumerate(candidates) if torch.equal(view, item["image"]))
    assert item["teacher_logit"].item() == cache.logits[3, k].item()
    assert CachedTeacher()({"teacher_logit": item["teacher_logit"][None], "image": item["image"][None]}).shape == (1, 1)


def test_a_cache_of_another_teacher_or_transform_is_refused(tmp_path, data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    path = build_view_cache(teacher, dataset, views=2).save(tmp_path / "views.pt")
    assert torch.load(path, weights_only=True)["format"] == "kdfiqa.view_cache.v2"
    loaded = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset))
    assert loaded.names == dataset.names
    with pytest.raises(CheckpointError, match="another teacher"):
        ViewCache.load(path, teacher=teacher_fingerprint(_teacher(seed=1)), transform=_spec(dataset))
    with pytest.raises(CheckpointError, match="transform"):
        ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform={**_spec(dataset), "flip": False})
    (tmp_path / "junk.pt").write_bytes(b"not a cache")
    with pytest.raises(CheckpointError, match="not a readable"):
        ViewCache.load(tmp_path / "junk.pt", teacher="x", transform={})


def _spec(dataset) -> dict:
    return dict(dataset.transform.spec)


def test_a_distiller_on_cached_views_needs_no_teacher_network(data, monkeypatch):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    cached = CachedViews(dataset, build_view_cache(teacher, dataset, views=2))
    monkeypatch.setattr(teacher.network, "forward_logits", lambda *a: pytest.fail("teacher ran"))
    torch.manual_seed(0)
    distiller = Distiller(Teacher(CachedTeacher()), create_model(TINY), task_loss="mse",
                          distill_loss="temperature_mse")
    batch = torch.utils.data.default_collate([cached[i] for i in range(4)])
    out = distiller(batch)
    assert out["distill"] > 0 and torch.isfinite(out["loss"])


def test_a_calibrated_distiller_maps_cached_views_as_it_maps_the_live_teacher(data):
    """The cache keeps the teacher's raw outputs and the run's one calibration (``--calibrate-online``:
    ``teacher_calibration.json`` and every checkpoint) maps cached and live outputs alike, so a cached
    epoch's targets are the calibrated targets the teacher would give on the same views."""
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    cache = build_view_cache(teacher, dataset, views=1, seed=2)
    calibration = Logistic4(b1=0.9, b2=0.1, b3=0.5, b4=0.05)
    rows = range(5)
    stored = torch.utils.data.default_collate([CachedViews(dataset, cache)[i] for i in rows])
    views = torch.stack([dataset.transform.render(dataset.load(r), [tuple(cache.boxes[r, 0].tolist())],
                                                  bool(cache.flips[r, 0]), views=["teacher_image"])["teacher_image"]
                         for r in rows])

    def targets(of: Teacher, batch) -> torch.Tensor:
        return Distiller(of, create_model(TINY), task_loss="mse", distill_loss="temperature_mse",
                         teacher_calibration=calibration).frozen_forward(batch).logits

    cached = targets(Teacher(CachedTeacher()), stored)
    live = targets(teacher, {"image": views, "teacher_image": views})
    assert torch.allclose(cached, live, atol=1e-5)
    # and they are the logistic of the teacher's scores, not its raw outputs
    expected = torch.logit(torch.as_tensor(calibration(cache.logits[:5, 0].double().sigmoid().numpy())))
    assert torch.allclose(cached.double(), expected, atol=1e-5)
    assert not torch.allclose(cached, cache.logits[:5, 0], atol=1e-2)


def test_distill_with_a_view_cache_from_the_command_line(tmp_path, data, capsys):
    images, labels = data
    torch.manual_seed(0)
    base = ["distill", "--model", TINY, "--root", images, "--csv", labels, "--val-fraction", "0.25",
            "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--quiet", "--teacher-input", "32",
            "--set", "data.train_transform={mode: randcrop_or_resize, crop: 32, flip: true}",
            "--view-cache", "2", "--out", tmp_path / "run"]
    assert main([str(a) for a in [*base, "--teacher", TINY]]) == 0
    cache = torch.load(tmp_path / "run" / "teacher_views.pt", weights_only=True)
    assert cache["logits"].shape == (9, 2)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["train"]["distill"] > 0
    assert set(load_checkpoint(tmp_path / "run" / "best.pt")["state_dict"]) == set(create_model(TINY).state_dict())
    checkpoint = tmp_path / "other.pt"
    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(9)
    save_checkpoint(checkpoint, build_checkpoint(create_model(TINY)))
    capsys.readouterr()
    assert main([str(a) for a in [*base, "--teacher", checkpoint, "--resume"]]) == 2
    err = capsys.readouterr().err
    assert "another teacher" in err and len(err.strip().splitlines()) == 1


def test_view_cache_needs_a_distillation_loss(tmp_path, monkeypatch):
    from kdfiqa.config import RunConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("a.png,0.5\n")  # files are checked first: the settings' errors need one
    from kdfiqa.pipeline import validate

    config = RunConfig.from_dict({"model": {"name": TINY}, "data": {"root": ".", "csv": "x.csv"},
                                  "distill": {"teachers": [TINY], "view_cache": 2, "loss": None}})
    with pytest.raises(ConfigError, match="distill.view_cache"):
        validate(config, "distill")


def _tampered(fields: dict, field: str, value) -> dict:
    return {**fields, field: value} if value is not ... else {k: v for k, v in fields.items() if k != field}


@pytest.mark.parametrize("field, value, message", [
    ("names", ..., "field 'names' is missing"),
    ("logits", [0.5], "field 'logits' is a list, not a Tensor"),
    ("names", ["a", 3] * 6, "field 'names' must be strings"),
    ("logits", torch.zeros(12, 0), r"not float32 \(12, K\) with K >= 1"),
    ("logits", torch.zeros(11, 2), r"not float32 \(12, K\)"),
    ("logits", torch.zeros(12, 2, dtype=torch.float64), "not float32"),
    ("boxes", torch.zeros(12, 1, 4, dtype=torch.float64), r"not float64 \(12, 2, 4\)"),
    ("flips", torch.zeros(12, 2), r"not bool \(12, 2\)"),
    ("logits", torch.full((12, 2), float("nan")), "non-finite teacher score"),
    ("boxes", torch.tensor([[[-1.0, 0.0, 4.0, 4.0]] * 2] * 12, dtype=torch.float64), "not .* inside an image"),
    ("boxes", torch.tensor([[[4.0, 0.0, 4.0, 4.0]] * 2] * 12, dtype=torch.float64), "not .* inside an image"),
    ("kinds", ..., "field 'kinds' is missing"),
    ("kind_names", ["blur", "sharpen"], "field 'kind_names' must be distinct degradation names"),
    ("kinds", torch.zeros(12, 2), r"field 'kinds' is torch.float32 \(12, 2\), not int64 \(12, 2\)"),
    ("kinds", torch.full((12, 2), 99, dtype=torch.int64), "field 'kinds' holds an index outside"),
    ("severities", torch.full((12, 2), 1.5, dtype=torch.float64), "field 'severities' holds a severity outside"),
    ("severities", torch.full((12, 2), float("nan"), dtype=torch.float64), "field 'severities' holds"),
    ("seeds", torch.full((12, 2), -3, dtype=torch.int64), "field 'seeds' holds a negative seed"),
    ("partners", torch.arange(12).reshape(-1, 1).repeat(1, 2), "field 'partners' holds .* the image itself"),
    ("partners", torch.full((12, 2), 12, dtype=torch.int64), "field 'partners' holds a row outside"),
    ("lams", torch.full((12, 2), 0.5, dtype=torch.float64), "field 'lams' holds a mixup share .* without a partner"),
    ("lams", torch.full((12, 2), float("inf"), dtype=torch.float64), "field 'lams' holds"),
])
def test_a_damaged_cache_file_is_refused_with_one_line_naming_the_field(tmp_path, data, field, value, message):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    path = build_view_cache(teacher, dataset, views=2).save(tmp_path / "views.pt")
    torch.save(_tampered(torch.load(path, weights_only=True), field, value), path)
    with pytest.raises(CheckpointError, match=message) as info:
        ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_cache_of_another_view_count_is_refused_and_a_box_outside_its_image_is_named(tmp_path, data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    path = build_view_cache(teacher, dataset, views=2).save(tmp_path / "views.pt")
    with pytest.raises(CheckpointError, match="holds 2 view.* asks for 5"):
        ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset), views=5)
    cache = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset), views=2)
    cache.boxes[:, :, 2:] = 10_000.0  # a box past the image's pixels, as if the image had shrunk
    with pytest.raises(DataError, match="lies outside its .* pixels"):
        CachedViews(dataset, cache)[0]


AUGMENTED = {**SPEC, "quality_augment": {"p": 0.5, "kinds": ["blur", "noise", "jpeg", "downup"], "max_severity": 0.7,
                                         "mixup": 0.4}}


class _Recording(torch.nn.Module):
    """A teacher that keeps every teacher view it scores (in order) and scores it by its mean."""

    input_size = None

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, batch):
        self.seen += list(batch["teacher_image"])
        return batch["teacher_image"].mean(dim=(1, 2, 3)).reshape(-1, 1)


@pytest.mark.parametrize("spec", [SPEC, AUGMENTED], ids=["plain", "augmented"])
def test_a_view_rebuilt_from_the_cache_is_the_view_drawn_at_build_time(tmp_path, data, spec):
    import math

    from kdfiqa.data.datasets import Sample

    images, labels = data
    labeled = FIQADataset(images, labels, transform=build_transform(spec))
    # unlabeled images (score NaN) join, as --unlabeled images train online; their names are the
    # labeled images' own (synthetic_00000.png ... in another folder), so rows are not keyed by name
    others, _ = synthetic(tmp_path, 4, 5, "unlabeled")
    dataset = labeled.subset(range(len(labeled)))
    dataset.samples += [Sample(f.name, f, math.nan) for f in sorted(others.glob("*.png"))]
    assert len(set(dataset.names)) < len(dataset.names)
    views, teacher = 3, _Recording()
    built = build_view_cache(teacher, dataset, views=views, batch_size=4, seed=7)
    path = built.save(tmp_path / "views.pt")
    cache = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset), views=views)
    for field in ("boxes", "flips", "logits", "kinds", "severities", "seeds", "partners", "lams"):
        assert torch.equal(getattr(cache, field), getattr(built, field)), field
    # the same draws through the data set's own items, as a training epoch draws them, each image's
    # views from its own stream (draw_seed), as the cache draws them
    drawn = []
    for index in range(len(dataset)):
        torch.manual_seed(draw_seed(7, index))
        drawn += [dataset[index] for _ in range(views)]
    cached = CachedViews(dataset, cache)
    assert cached.samples == dataset.samples  # what a two-stream sampler splits into its streams
    altered = 0
    for j, item in enumerate(drawn):
        index, k = divmod(j, views)
        assert torch.equal(teacher.seen[j], item["teacher_image"])  # the cache drew what the items draw
        rebuilt = cached.view(index, k, views=["image", "teacher_image"])
        assert torch.equal(rebuilt["image"], item["image"]) and torch.equal(rebuilt["teacher_image"],
                                                                            item["teacher_image"])
        assert rebuilt["teacher_logit"].item() == pytest.approx(item["teacher_image"].mean().item(), abs=1e-6)
        assert torch.equal(rebuilt["score"].isnan(), item["score"].isnan())
        if not item["score"].isnan():
            assert rebuilt["score"].item() == item["score"].item() == pytest.approx(dataset.samples[index].score)
        if spec is AUGMENTED:
            assert rebuilt["augment"] == item["augment"]
            altered += item["augment"]["kind"] != "" or item["augment"]["partner"] >= 0
        else:
            assert "augment" not in rebuilt and "augment" not in item
    if spec is AUGMENTED:
        assert (cache.kinds >= 0).any() and (cache.kinds < 0).any() and (cache.partners >= 0).any()
        assert 0 < altered < len(drawn)
    else:
        assert (cache.kinds == -1).all() and (cache.partners == -1).all() and (cache.lams == 1).all()


def test_a_cache_of_the_older_format_is_refused_by_name(tmp_path, data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    teacher = _teacher()
    path = build_view_cache(teacher, dataset, views=1).save(tmp_path / "views.pt")
    old = torch.load(path, weights_only=True)
    old = {key: value for key, value in old.items()
           if key not in ("kind_names", "kinds", "severities", "seeds", "partners", "lams")}
    torch.save({**old, "format": "kdfiqa.view_cache.v1"}, path)
    with pytest.raises(CheckpointError, match=r"older format \(kdfiqa.view_cache.v1, without the views' "
                                              r"augmentation parameters.*delete it to rebuild it") as info:
        ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=_spec(dataset))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_cache_of_another_training_set_is_refused_naming_the_first_difference(data):
    images, labels = data
    dataset = FIQADataset(images, labels, transform=build_transform(SPEC))
    cache = build_view_cache(_Recording(), dataset, views=1)
    names = dataset.names
    with pytest.raises(DataError, match=f"another training set \\(sample 0: '{names[0]}' in the cache, "
                                        f"'{names[1]}' here; 12 vs 11 samples\\)"):
        CachedViews(dataset.subset(range(1, 12)), cache)
    with pytest.raises(DataError, match="sample 11: .* in the cache, no image here"):
        CachedViews(dataset.subset(range(11)), cache)
