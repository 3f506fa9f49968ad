"""The ``predict`` benchmark: quick mode end to end into a temporary folder, and its image writer."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks import __main__ as harness
from benchmarks.predict import write_images

STAGES = {"predict_images (end to end)", "decode + transform", "model (inference form)", "model (training form)"}


def test_write_images_alternates_jpeg_and_png_of_the_asked_size(tmp_path):
    paths = write_images(tmp_path, 3, side=40)
    assert [p.suffix for p in paths] == [".jpg", ".png", ".jpg"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (40, 40) and image.mode == "RGB"


@pytest.mark.slow
def test_predict_benchmark_runs_quick_and_splits_decoding_from_the_model(tmp_path):
    assert harness.main(["predict", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "predict.json").read_text())
    assert result["benchmark"] == "predict" and result["quick"] is True and isinstance(result["met"], bool)
    rows = {row["stage"]: row for row in result["rows"]}
    assert set(rows) == STAGES
    assert all(row["seconds"] > 0 and row["images/s"] > 0 for row in rows.values())
    assert rows["predict_images (end to end)"]["% of predict"] == 100.0
    assert "inference form (verified: True)" in result["notes"][0]
    assert "### kdfiqa predict: decoding vs model" in (tmp_path / "README.md").read_text()
