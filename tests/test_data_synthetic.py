from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from kdfiqa.data import FIQADataset, make_synthetic_fiqa, read_labels, validate_images
from kdfiqa.errors import DataError

WEIGHTS = {"blur": 1.0, "noise": 0.8, "jpeg": 0.6, "downup": 0.9, "overexpose": 0.7, "underexpose": 0.7}


def expected_score(degradations: str) -> float:
    """The documented formula without its noise term, written out independently."""
    keep = 1.0
    for item in filter(None, degradations.split(";")):
        kind, severity = item.split(":")
        keep *= 1.0 - WEIGHTS[kind] * float(severity)
    return 0.05 + 0.9 * keep


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_fiqa(tmp_path_factory.mktemp("syn"), 60, size=48, seed=3)


def test_files_are_a_valid_challenge_data_set(synthetic):
    assert synthetic.n == 60
    assert sorted(p.name for p in synthetic.image_dir.iterdir()) == [f"synthetic_{i:05d}.png" for i in range(60)]
    ds = FIQADataset(synthetic.image_dir, synthetic.labels)
    assert validate_images(ds) == 0 and len(ds) == 60
    assert ds[0]["image"].shape == (3, 48, 48)
    assert "synthetic" in (synthetic.image_dir.parent / "SYNTHETIC_DATA.txt").read_text()
    assert not synthetic.labels.read_text().startswith("image")  # header-less, as the challenge's


def test_scores_follow_the_documented_formula(synthetic):
    with open(synthetic.details, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = {l.name: l.score for l in read_labels(synthetic.labels)}
    scores = np.array([labels[r["image"]] for r in rows])
    formula = np.array([expected_score(r["degradations"]) for r in rows])
    assert np.all(np.abs(scores - np.clip(formula, 0, 1)) < 0.1)  # noise std 0.02
    assert stats.spearmanr(scores, formula).statistic > 0.95
    counts = {len(list(filter(None, r["degradations"].split(";")))) for r in rows}
    assert counts == {0, 1, 2}
    assert scores.min() < 0.4 and scores.max() > 0.9  # spread over the scale


def test_same_seed_same_bytes(synthetic, tmp_path):
    again = make_synthetic_fiqa(tmp_path, 60, size=48, seed=3)

    def digest(d):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())]

    assert digest(again.image_dir) == digest(synthetic.image_dir)
    assert again.labels.read_text() == synthetic.labels.read_text()
    other = make_synthetic_fiqa(tmp_path / "other", 5, size=48, seed=4)
    assert digest(other.image_dir) != digest(again.image_dir)[:5]


def test_faces_have_fine_texture(synthetic):
    from scipy import ndimage

    img = np.asarray(Image.open(synthetic.image_dir / "synthetic_00000.png").convert("L"), np.float64)
    assert ndimage.laplace(img).std() > 5  # blur and noise must be visible


def test_user_photos_as_sources(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    out = make_synthetic_fiqa(tmp_path / "out", 6, size=32, seed=0, sources=photos)
    assert len(read_labels(out.labels)) == 6
    assert "photos" in (tmp_path / "out" / "SYNTHETIC_DATA.txt").read_text()
    with pytest.raises(DataError):
        make_synthetic_fiqa(tmp_path / "bad", 3, sources=tmp_path / "nowhere")
