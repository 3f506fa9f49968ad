from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kdfiqa.data import FIQADataset, ImageSamples, UnlabeledImageFolder, build_transform, split_dataset
from kdfiqa.errors import DataError


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(10):
        size = (40 + 3 * i, 30 + 2 * i)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
        lines.append(f"f{i},{i / 10}\n")
    (tmp_path / "labels.csv").write_text("".join(lines))
    return FIQADataset(tmp_path, tmp_path / "labels.csv")


def test_sample_dict_contract_and_default_collate(labelled):
    ds = labelled.with_transform(build_transform({"mode": "resize", "size": 16, "teacher_size": 24}))
    item = ds[3]
    assert set(item) == {"image", "teacher_image", "score", "name", "index"}
    assert item["image"].shape == (3, 16, 16) and item["teacher_image"].shape == (3, 24, 24)
    assert item["score"].dtype == torch.float32 and item["score"].dim() == 0 and float(item["score"]) == pytest.approx(0.3)
    assert item["name"] == "f3" and item["index"] == 3
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["score"].shape == (4,)
    assert batch["name"] == ["f0", "f1", "f2", "f3"] and batch["index"].tolist() == [0, 1, 2, 3]


def test_default_transform_is_native_imagenet(labelled):
    img = np.asarray(Image.open(labelled.image_paths()[2]), np.float32) / 255
    expected = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(labelled[2]["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_plain_tensor_transform_becomes_image(labelled):
    ds = labelled.with_transform(lambda img: torch.zeros(3, 2, 2))
    assert ds[0]["image"].shape == (3, 2, 2)


def test_split_is_deterministic_disjoint_and_complete(labelled):
    train, val = split_dataset(labelled, 0.3, seed=1)
    again_train, again_val = split_dataset(labelled, 0.3, seed=1)
    assert train.names == again_train.names and val.names == again_val.names
    assert len(val) == 3 and sorted(train.names + val.names) == sorted(labelled.names)
    other = {tuple(split_dataset(labelled, 0.3, seed=s)[1].names) for s in range(6)}
    assert len(other) > 1
    assert np.allclose(sorted(np.concatenate([train.scores, val.scores])), labelled.scores)
    assert len(labelled) == 10  # the source is untouched
    with pytest.raises(DataError):
        split_dataset(labelled, 1.0, seed=0)


def test_merge_labels_and_pseudo_labels(labelled, tmp_path):
    pseudo_dir = tmp_path / "unlabeled"
    pseudo_dir.mkdir()
    Image.new("RGB", (8, 8)).save(pseudo_dir / "u.png")
    (tmp_path / "pseudo.csv").write_text("image,score\nu.png,0.42\n")
    merged = FIQADataset.merge([labelled, FIQADataset(pseudo_dir, tmp_path / "pseudo.csv")])
    assert len(merged) == 11 and merged.names[-1] == "u.png" and merged.scores[-1] == pytest.approx(0.42)
    with pytest.raises(DataError, match="twice"):
        FIQADataset.merge([labelled, labelled])


def test_unlabeled_folder_and_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "a" / "b" / "x.JPG")
    Image.new("L", (5, 5)).save(tmp_path / "a" / "y.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    folder = UnlabeledImageFolder(tmp_path / "a")
    assert folder.names == ["b/x.JPG", "y.png"]
    item = folder[0]
    assert "score" not in item and item["image"].shape == (3, 6, 8) and item["name"] == "b/x.JPG"
    assert UnlabeledImageFolder(tmp_path / "a", recursive=False).names == ["y.png"]
    files = ImageSamples.from_paths([tmp_path / "a" / "y.png", tmp_path / "a" / "b"])
    assert files.names == [str(tmp_path / "a" / "y.png"), (tmp_path / "a" / "b" / "x.JPG").as_posix()]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        UnlabeledImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        ImageSamples.from_paths([tmp_path / "nope.png"])


def test_root_must_exist(tmp_path):
    (tmp_path / "l.csv").write_text("a,0.5\n")
    with pytest.raises(DataError, match="not a directory"):
        FIQADataset(tmp_path / "missing", tmp_path / "l.csv")


def test_sklearn_split_holds_out_what_train_test_split_does():
    """The reference (tests/fixtures/make_sklearn_split.py) is scikit-learn's own output."""
    import json
    from pathlib import Path

    from kdfiqa.data.datasets import validation_count

    cases = json.loads((Path(__file__).parent / "fixtures" / "sklearn_split.json").read_text())["cases"]
    assert len(cases) == 32
    for case in cases:
        samples = ImageSamples(list(range(case["n"])))  # the samples are their own indices
        train, val = split_dataset(samples, case["val_fraction"], case["seed"], method="sklearn")
        assert validation_count(case["n"], case["val_fraction"], "sklearn") == len(case["val"])
        assert val.samples == case["val"] and train.samples == case["train"], case


def test_an_image_given_twice_is_scored_once_under_its_first_name(tmp_path):
    from PIL import Image

    from kdfiqa.data.datasets import ImageSamples

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    samples = ImageSamples.from_paths([folder, folder / "a.png", folder / "a.png"])
    assert [s.name for s in samples.samples] == [f"{folder.as_posix()}/a.png", f"{folder.as_posix()}/b.png"]
