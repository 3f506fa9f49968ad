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


@pytest.mark.slow  # eight fresh interpreters (each imports torch)
def test_memory_scale_measures_each_size_in_fresh_processes(tmp_path, monkeypatch):
    from benchmarks import memory_scale

    monkeypatch.setattr(memory_scale, "QUICK_SIZES", (40, 100))
    assert harness.main(["memory_scale", "--quick", "--no-readme", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "memory_scale.json").read_text())
    assert [(row["images"], row["batch"]) for row in result["rows"]] == [(40, 20), (100, 50)]
    for row in result["rows"]:
        assert row["pseudo-label peak RSS MiB"] > 50 and row["train peak RSS MiB"] > 50  # torch alone is more
        assert 0 < row["check s (cached)"] and 0 < row["check s (cold, 2 workers)"]
    growth = result["rss_growth"]["train"]
    assert result["met"] is (max(result["rss_growth"].values()) < memory_scale.RSS_GROWTH_GOAL)
    first, last = (row["train peak RSS MiB"] for row in result["rows"])
    assert growth == pytest.approx(last / first - 1)


def test_the_kd_study_summarises_paired_gains_and_picks_the_best_online_variant():
    import json

    from benchmarks import kd_gain

    def records(shift: float, cache: float = 0.705) -> dict:
        scores = {"control": 0.60, "offline_kd": 0.70, "online_kd": 0.62, "combined_kd": 0.71,
                  "online_unlabeled": 0.66, "combined_crop_cache": cache}
        demo = {name: {"score": value + shift, "srcc": 0.0, "plcc": 0.0, "collapsed": False, "steps": 120,
                       "distill_share": 0.1 if "online" in name else None} for name, value in scores.items()}
        patient = {name: {**demo[name]} for name in ("control", "offline_kd", "online_kd", "combined_kd")}
        return {"demo": demo, "patient": patient}

    per_seed = [records(shift) for shift in (0.0, 0.01, -0.02)]
    result = kd_gain.summarise(per_seed, (0, 1, 2), quick=False)
    json.dumps(result)  # every figure is a plain JSON value
    best = result["best_online"]  # combined KD gains +0.01 over offline KD in every seed: interval [0.01, 0.01]
    assert (best["variant"], best["schedule"]) == ("combined_kd", "demo")
    assert best["gain_over_offline"] == pytest.approx(0.01) and best["interval"][0] == pytest.approx(0.01)
    # combined KD's crop-cache twin: its mean gain over the control (0.105) lies outside combined KD's
    # interval ([0.11, 0.11]); at 0.11 it lies within, and the goal is met
    assert result["met"] is False
    assert kd_gain.summarise([records(shift, cache=0.71) for shift in (0.0, 0.01, -0.02)], (0, 1, 2), False)["met"]
    # a variant missing in a seed is compared on the seeds that hold it, and cannot be picked as the best
    partial = [records(shift) for shift in (0.0, 0.01, -0.02)]
    partial[2]["demo"]["online_unlabeled"]["score"] = 0.9
    del partial[0]["demo"]["online_unlabeled"]
    result = kd_gain.summarise(partial, (0, 1, 2), quick=False)
    row = next(r for r in result["rows"] if r["student"].startswith("online on labeled + unlabeled, calibrated"))
    assert row["seeds"] == 2 and row["seeds gained"] == "2 of 2"
    assert result["best_online"]["variant"] == "combined_kd"
    assert any(note.startswith("not finished: online_unlabeled at the demo schedule in 2 of 3") for note in result["notes"])
    offline = next(r for r in result["rows"] if r["schedule"] == "demo" and r["student"].startswith("offline KD"))
    assert offline["score gain"].startswith("+0.1000") and offline["seeds gained"] == "3 of 3"


def test_the_kd_study_reuses_a_demo_student_only_when_it_is_the_variant(tmp_path):
    """Variants set their online settings outright, so whichever online student the demo trains, only
    the variant it is gets its figures."""
    import dataclasses

    from benchmarks import kd_gain
    from kdfiqa.config import load_recipe, resolve_config

    unlabeled = tmp_path / "unlabeled"
    recipe = resolve_config("distill", load_recipe("demo", "distill"))
    labels_only = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, output_dir=str(tmp_path / "a")),
                                      distill=dataclasses.replace(recipe.distill, teachers=["teacher.pt"]))
    variants = kd_gain.VARIANTS
    assert kd_gain.reuses_demo(labels_only, variants["online_kd"], unlabeled)
    assert not kd_gain.reuses_demo(labels_only, variants["online_unlabeled_weight2"], unlabeled)
    # a demo whose online student is the weight-2 variant: that variant is reused, labels-only online is not
    weight2 = kd_gain.variant_config(labels_only, variants["online_unlabeled_weight2"], tmp_path / "b", unlabeled,
                                     labels_only.train.epochs)
    assert weight2.distill.labeled_per_batch == 16 and weight2.data.unlabeled == str(unlabeled)
    assert kd_gain.reuses_demo(weight2, variants["online_unlabeled_weight2"], unlabeled)
    assert not kd_gain.reuses_demo(weight2, variants["online_kd"], unlabeled)
    assert not kd_gain.reuses_demo(weight2, variants["online_unlabeled_share16"], unlabeled)
    # a patient run changes only the epochs and the folder
    patient = kd_gain.variant_config(weight2, variants["online_unlabeled_weight2"], tmp_path / "c", unlabeled,
                                     4 * weight2.train.epochs)
    assert patient == dataclasses.replace(weight2, train=dataclasses.replace(
        weight2.train, output_dir=str(tmp_path / "c"), epochs=4 * weight2.train.epochs))
