"""The architecture-search benchmark, run in quick mode into a temporary folder and rendered."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as harness


@pytest.mark.slow
def test_search_benchmark_runs_quick_and_reports_the_best_found(tmp_path):
    assert "search" in harness.BENCHMARKS
    assert harness.main(["search", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "search.json").read_text())
    assert result["benchmark"] == "search" and result["quick"] is True and isinstance(result["met"], bool)
    assert result["trials"] == 3 and result["seconds"] > 0
    preset, *front = result["rows"]
    assert preset["configuration"] == "emo2_1m (preset)" and preset["x emo2_1m params"] == 1.0
    assert preset["GFLOPs"] <= 0.5 and all(row["GFLOPs"] <= 0.5 and row["params"] <= 5_000_000 for row in front)
    best = result["best"]
    assert best is None or (best["params"] == max(row["params"] for row in front)
                            and result["met"] == (best["x_reference_params"] >= 1.5))
    assert "### Architecture search" in (tmp_path / "README.md").read_text()
