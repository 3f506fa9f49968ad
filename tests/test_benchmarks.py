"""Benchmark harness: one cheap benchmark run end to end into a temporary folder and rendered."""

from __future__ import annotations

import importlib
import json
import sys
import types

import pytest

from benchmarks import __main__ as harness
from benchmarks.common import gemm_gmacs, interleaved_medians, render


class GemmBenchmark(types.ModuleType):
    """A benchmark cheap enough for the test suite: the fp32 GEMM rate at two matrix sizes.

    The project's own benchmarks train and time real networks for minutes; the harness is exercised
    here with this stand-in of the same shape (``TITLE``, ``run(quick)``)."""

    TITLE = "GEMM rate"

    def __init__(self) -> None:
        super().__init__("benchmarks.gemm_rate")

    def run(self, quick: bool) -> dict:
        sizes = (64, 128) if quick else (512, 1024)
        rows = [{"n": n, "GMAC/s": gemm_gmacs(n=n, repeats=3)} for n in sizes]
        return {"title": self.TITLE, "goal": "any positive rate", "met": all(r["GMAC/s"] > 0 for r in rows),
                "columns": ["n", "GMAC/s"], "rows": rows, "notes": ["stand-in"]}


def test_harness_runs_one_benchmark_quick_and_renders_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "benchmarks.gemm_rate", GemmBenchmark())
    monkeypatch.setattr(harness, "BENCHMARKS", ("gemm_rate",))
    assert harness.main(["gemm_rate", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gemm_rate.json").read_text())
    assert result["benchmark"] == "gemm_rate" and result["quick"] is True and result["met"] is True
    assert {"cpu", "cores", "torch", "device", "load_average_1min"} <= set(result["machine"])
    assert [row["n"] for row in result["rows"]] == [64, 128]
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Benchmark results")
    assert "### GEMM rate" in readme and "in quick mode" in readme and "**met**" in readme
    assert "| n | GMAC/s |" in readme and "| 64 |" in readme and "- stand-in" in readme


@pytest.mark.slow
def test_cli_startup_runs_quick_into_a_folder_and_renders(tmp_path):
    assert harness.main(["cli_startup", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cli_startup.json").read_text())
    assert result["benchmark"] == "cli_startup" and result["quick"] is True and isinstance(result["met"], bool)
    rows = {row["command"]: row for row in result["rows"]}
    assert set(rows) == {"kdfiqa --help", "kdfiqa budget --help", 'python -c "import torch"',
                         "kdfiqa distill into a folder holding a run", "kdfiqa train --lr abc",
                         "kdfiqa train --csv missing.csv"}
    assert rows['python -c "import torch"']["x import torch"] == 1.0
    assert rows['python -c "import torch"']["heavy modules"] == "torch"
    assert all(row["seconds"] > 0 for row in rows.values())
    assert all(rows[label]["heavy modules"] == "none" for label in rows if label.startswith("kdfiqa"))
    assert "### Command-line start-up and refusal time" in (tmp_path / "README.md").read_text()


def test_every_listed_benchmark_module_has_the_harness_shape():
    for name in harness.BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        assert isinstance(module.TITLE, str) and callable(module.run), name


def test_render_writes_goal_verdict_table_and_notes():
    text = render({"benchmark": "x", "title": "T", "goal": "be fast", "met": False, "quick": False,
                   "machine": {"cpu": "C", "cores": 2, "torch": "2", "device": "cpu"}, "date": "2025-01-01",
                   "columns": ["a", "b"], "rows": [{"a": 1.234567, "b": True}, {"a": "s", "b": False}],
                   "notes": ["gap: slow"]})
    lines = text.splitlines()
    assert lines[0] == "### T"
    assert "Goal: be fast — **not met**." in lines
    assert "| a | b |" in lines and "|---|---|" in lines
    assert "| 1.235 | yes |" in lines and "| s | no |" in lines
    assert lines[-1] == "- gap: slow"


def test_update_readme_replaces_only_the_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# P\n\nbefore\n{harness.START}\nold\n{harness.END}\nafter\n")
    harness.update_readme("new table", readme)
    assert readme.read_text() == f"# P\n\nbefore\n{harness.START}\nnew table\n{harness.END}\nafter\n"


def test_interleaved_medians_runs_each_contender_alternately():
    calls: list[str] = []
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                  repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_unknown_benchmark_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        harness.main(["no_such_benchmark"])
    assert exc.value.code == 2
