"""The installed package: clean import, public API, console entry point metadata."""

from __future__ import annotations

import subprocess
import sys
import warnings
from importlib import metadata

import kdfiqa


def test_import_prints_no_warnings_and_leaves_filters_alone():
    # The dependencies add filters of their own when imported; kdfiqa must add none.
    code = ("import warnings, sys, torch, torchvision, timm, numpy, scipy.stats, scipy.optimize, rich; "
            "before = list(warnings.filters); import kdfiqa; "
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
