"""The GPU benchmark's reduced mode, run end to end through the harness into a temporary folder."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from benchmarks import __main__ as harness
from benchmarks import gpu


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("gpu-bench")
    assert harness.main(["gpu", "--quick", "--no-readme", "--results", str(folder)]) == 0
    loaded = json.loads((folder / "gpu.json").read_text())
    loaded["rendered"] = (folder / "README.md").read_text()
    return loaded


@pytest.mark.slow
def test_reduced_mode_has_every_row_and_the_mode_it_ran_in(result):
    assert result["benchmark"] == "gpu" and result["quick"] is True and result["mode"] == "reduced"
    assert result["settings"] == dataclasses.asdict(gpu.REDUCED)
    rows = result["rows"]
    assert [(r["step"], r["variant"].replace("CPU autocast", "AMP")) for r in rows] == [
        (step, v.label) for step in gpu.KINDS.values() for v in gpu.VARIANTS]
    for row in rows:
        assert row["status"] in {"reference", "control", "measured", "skipped", "failed"}, row
        if row["status"] in {"skipped", "failed"}:
            assert row["reason"] and "images/s" not in row
            continue
        assert row["images/s"] > 0 and row["median step ms"] > 0
        assert len(row["loss_curve"]) == gpu.REDUCED.steps
        assert all(math.isfinite(x) for x in row["loss_curve"])
    assert [r["status"] for r in rows].count("reference") == len(gpu.KINDS)
    assert all(r["status"] == "skipped" for r in rows if r["compile"])  # no compilation in reduced mode


def test_deviations_are_finite_and_the_verdict_follows_them(result):
    references = {r["step"]: r["loss_curve"] for r in result["rows"] if r["status"] == "reference"}
    compared = [r for r in result["rows"] if r["status"] in {"measured", "control"}]
    assert compared
    for row in compared:
        reference = references[row["step"]]
        expected = max(abs(a - b) / abs(b) for a, b in zip(row["loss_curve"], reference))
        assert math.isfinite(row["max rel. loss deviation"])
        assert row["max rel. loss deviation"] == pytest.approx(expected, rel=1e-12)
        assert row["first-step rel. deviation"] == pytest.approx(abs(row["loss_curve"][0] - reference[0])
                                                                 / abs(reference[0]), rel=1e-12)
        if row["amp"] == "none":  # the float32 control: judged by no tolerance
            assert row["status"] == "control" and "within tolerance" not in row
            continue
        assert row["tolerance"] == gpu.TOLERANCES[row["amp"]]
        assert row["within tolerance"] is (row["max rel. loss deviation"] <= row["tolerance"])
        assert row["first-step rel. deviation"] > 0  # bf16 really ran: its first loss differs
    judged = [r["within tolerance"] for r in compared if "within tolerance" in r]
    assert judged and result["tolerance_met"] is all(judged)
    assert result["tolerance"] == {"measure": gpu.DEVIATION, **gpu.TOLERANCES}


def test_the_render_says_when_no_gpu_was_measured(result):
    rendered = result["rendered"]
    if torch.cuda.is_available():
        assert result["gpu_measured"] is True and gpu.NOT_MEASURED not in rendered
        assert all(isinstance(r["peak GPU MiB"], float) for r in result["rows"] if "images/s" in r)
        return
    assert result["gpu_measured"] is False and result["status"] == "not measured: no CUDA device"
    assert f"### {gpu.TITLE} — {gpu.NOT_MEASURED}" in rendered
    assert result["met"] is None and "Goal:" not in rendered
    measured = [r for r in result["rows"] if "images/s" in r]
    assert all(r["peak GPU MiB"] is None and r["device"] == "cpu" for r in measured)
    fp16 = [r for r in result["rows"] if r["amp"] == "fp16"]
    assert fp16 and all(r["status"] == "skipped" and "CUDA only" in r["reason"] for r in fp16)
    loader = result["loader"]
    assert loader["images/s"] > 0 and loader["short edge"] == gpu.REDUCED.loader_edge
    assert loader["keeps up"] is (loader["images/s"] >= loader["fastest step images/s"])


def test_max_relative_deviation_refuses_curves_of_different_lengths():
    assert gpu.max_relative_deviation([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cannot be compared"):
        gpu.max_relative_deviation([1.0], [1.0, 2.0])
