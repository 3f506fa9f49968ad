"""The budget-fill benchmark in quick mode (emo2_1m alone, a fifth of vquala2025's GFLOPs), end to end into a
temporary folder."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as harness
from benchmarks.budget_fill import QUICK_BUDGET
from kdfiqa.budget import measure
from kdfiqa.models import create_model


@pytest.mark.slow
def test_budget_fill_runs_quick_records_the_boundary_and_renders(tmp_path):
    assert "budget_fill" in harness.BENCHMARKS
    assert harness.main(["budget_fill", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "budget_fill.json").read_text())
    assert result["benchmark"] == "budget_fill" and result["quick"] is True
    assert result["budget"] == QUICK_BUDGET.name
    [row] = result["rows"]
    assert row["model"] == "emo2_1m" and row["aspect"] == "1:1"
    assert result["met"] is (row["traces"] < 15)
    fits, over = (int(row[key].split("x")[0]) for key in ("fits", "over"))
    assert over == fits + 32
    assert row["fits GFLOPs"] <= QUICK_BUDGET.max_gflops < row["over GFLOPs"]
    assert measure(create_model("emo2_1m"), fits).gflops == row["fits GFLOPs"]  # fvcore's own count
    assert row["FlopCounterMode MMACs"] <= row["fvcore MMACs"] and row["disagreeing modules"] > 0
    assert "### Budget fill" in (tmp_path / "README.md").read_text()
