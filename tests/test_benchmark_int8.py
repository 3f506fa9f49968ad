"""The ``int8`` benchmark: quick mode end to end into a temporary folder."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as harness


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
def test_int8_benchmark_runs_quick_and_compares_both_students(tmp_path):
    assert "int8" in harness.BENCHMARKS and "int8" in harness.OWN_SECTIONS
    assert harness.main(["int8", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "int8.json").read_text())
    assert result["quick"] is True and isinstance(result["met"], bool)
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"emo2_1m", "ecnu_sjtu_student"}
    for row in rows.values():
        assert row["MB int8"] < row["MB fp32"]
        assert row["img/s fp32 b1"] > 0 and row["img/s int8 b1"] > 0 and "score drop" in row
    assert "### INT8 ONNX vs float32" in (tmp_path / "README.md").read_text()


def test_own_sections_stay_out_of_the_performance_section(tmp_path):
    (tmp_path / "int8.json").write_text(json.dumps({"benchmark": "int8", "title": "INT8 table", "rows": []}))
    assert "INT8 table" in harness.render_all(tmp_path)
    assert "INT8 table" not in harness.render_all(tmp_path, skip=harness.OWN_SECTIONS)
    readme = tmp_path / "README.md"
    start, end = harness.OWN_SECTIONS["int8"]
    readme.write_text(f"a\n{start}\nold\n{end}\nb\n")
    harness.update_readme("new", readme, markers=(start, end))
    assert readme.read_text() == f"a\n{start}\nnew\n{end}\nb\n"
