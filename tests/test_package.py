"""The installed package: clean and lazy import, public API, console entry point metadata."""

from __future__ import annotations

import subprocess
import sys
import warnings
from importlib import metadata

import pytest

import kdfiqa
from benchmarks.cli_startup import HEAVY_MODULES, heavy_imports


@pytest.mark.slow
def test_import_prints_no_warnings_and_leaves_filters_alone():
    # The dependencies add filters of their own when imported; kdfiqa must add none, also when its
    # lazily imported names are resolved.
    code = ("import warnings, sys, torch, torchvision, timm, numpy, scipy.stats, scipy.optimize, rich; "
            "before = list(warnings.filters); import kdfiqa; [getattr(kdfiqa, n) for n in kdfiqa.__all__]; "
            "sys.exit(0 if warnings.filters == before else 3)")
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


def test_public_api_is_reexported():
    missing = [name for name in kdfiqa.__all__ if not hasattr(kdfiqa, name)]
    assert missing == []
    for name in ("create_model", "Budget", "VQUALA2025", "measure", "check", "BudgetExceeded", "CostReport",
                 "Teacher", "Student", "Distiller", "Trainer", "create_loss", "WeightedSum", "evaluate"):
        assert name in kdfiqa.__all__
    assert set(kdfiqa.__all__) <= set(dir(kdfiqa))


def test_lazy_names_are_the_defining_modules_objects():
    from kdfiqa import Budget, Trainer, create_model
    from kdfiqa.budget import Budget as budget_budget
    from kdfiqa.engine import Trainer as engine_trainer
    from kdfiqa.models import create_model as models_create_model

    assert (Budget, Trainer, create_model) == (budget_budget, engine_trainer, models_create_model)
    namespace: dict = {}
    exec("from kdfiqa import *", namespace)
    assert set(kdfiqa.__all__) <= set(namespace)


@pytest.mark.slow
def test_submodules_and_unknown_names_after_a_plain_import():
    code = ("import kdfiqa, sys; assert 'kdfiqa.metrics' not in sys.modules; "
            "assert kdfiqa.metrics.__name__ == 'kdfiqa.metrics'; "
            "assert not hasattr(kdfiqa, 'no_such_name') and not hasattr(kdfiqa, '_private')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [["-c", "import kdfiqa"],
                                  ["-c", "from kdfiqa import __version__, Budget, VQUALA2025"]])
def test_package_and_budgets_import_no_heavy_module(args):
    assert heavy_imports(args) == [], f"python {' '.join(args)} imports heavy modules"


def test_cli_entry_import_no_heavy_module_in_sys_modules():
    code = ("import kdfiqa.cli.main; import sys; "
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["budget", "--help"]])
def test_help_exits_0_without_heavy_modules(argv):
    result = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: kdfiqa" in result.stdout
    heavy = heavy_imports(["-m", "kdfiqa.cli.main", *argv])
    assert heavy == [], f"kdfiqa {' '.join(argv)} imports {heavy}: a kdfiqa.cli module imports them at module level"


def test_typical_refusals_answer_without_heavy_modules(tmp_path):
    from benchmarks.cli_startup import refusals

    for label, args in refusals(tmp_path).items():
        assert heavy_imports(args, status=2) == [], f"{label} imports heavy modules before refusing"


def test_metadata_version_and_console_script():
    assert metadata.version("kdfiqa") == kdfiqa.__version__
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts["kdfiqa"] == "kdfiqa.cli.main:main"
    requires = " ".join(metadata.requires("kdfiqa") or [])
    for dep in ("torch", "torchvision", "timm", "fvcore", "numpy", "scipy", "rich"):
        assert dep in requires


def test_fvcore_warning_silenced_only_inside_kdfiqa():
    # The user's own warnings still show after importing kdfiqa.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("a user warning", FutureWarning)
    assert any("a user warning" in str(w.message) for w in caught)
