"""``kdfiqa.testing.assert_fits`` and the pre-commit hook definition."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdfiqa.budget import Budget
from kdfiqa.models import create_model
from kdfiqa.testing import assert_fits

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_assert_fits_passes_and_fails_with_the_costliest_modules(tmp_path):
    reports = assert_fits("mobilenetv3_small_fiqa", sizes=[96, "96x128"])
    assert [r.input_size for r in reports] == [(3, 96, 96), (3, 96, 128)]
    with pytest.raises(AssertionError, match="exceeds budget tight"):
        assert_fits(create_model("mobilenetv3_small_fiqa"), Budget(max_gflops=1e-4, max_params=10**9, name="tight"),
                    sizes=[96])
    factory = tmp_path / "factories.py"
    factory.write_text("import kdfiqa\n\ndef student():\n    return kdfiqa.create_model('mobilenetv3_small_fiqa')\n")
    assert assert_fits(f"{factory}:student", sizes=[64])[0].params > 0


@pytest.mark.slow
def test_the_pre_commit_hook_runs_kdfiqa_budget():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "kdfiqa-budget" and hook["language"] == "python" and hook["pass_filenames"] is False
    entry = shlex.split(hook["entry"])
    assert entry[0] == "kdfiqa"
    ok = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", *entry[1:], "mobilenetv3_small_fiqa",
                         "--input", "96"], capture_output=True, text=True, timeout=300)
    over = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", *entry[1:], "mobilenetv3_small_fiqa",
                           "--input", "96", "--max-gflops", "0.0001"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and over.returncode == 1, (ok.stderr, over.stderr)
