"""``kdfiqa budget --fill``: the largest size that fits, by bisection on fvcore's count."""

from __future__ import annotations

import json

import pytest

from kdfiqa.budget import Budget, CostReport, measure
from kdfiqa.budget.fill import fill_budget
from kdfiqa.cli.main import main
from kdfiqa.models import create_model
from tiny_fiqa import TINY


def _quadratic(model, size):
    """A stand-in counter: cost grows as H x W (fvcore's counts scale so with the maps)."""
    return CostReport(flops=size[1] * size[2] * 10, params=100, input_size=size)


@pytest.mark.parametrize("limit_px", [32 * 32, 100 * 100, 352 * 352, 1000 * 1000, 4096 * 4096])
def test_bisection_finds_the_boundary_in_few_traces(limit_px):
    budget = Budget(max_gflops=limit_px * 10 / 1e9, max_params=1000)
    result = fill_budget(None, budget, stride=32, measure_fn=_quadratic)
    side = int(limit_px ** 0.5) // 32 * 32
    assert result.fits.input_size == (3, side, side)
    assert result.over is None if side == 4096 else result.over.input_size == (3, side + 32, side + 32)
    assert result.traces <= 15


def test_nothing_fits_an_over_parameter_model():
    result = fill_budget(None, Budget(max_gflops=1.0, max_params=10), measure_fn=_quadratic)
    assert result.fits is None and result.over.input_size == (3, 32, 32) and result.traces == 1


def test_aspect_ratio_keeps_the_grid():
    budget = Budget(max_gflops=300 * 400 * 10 / 1e9, max_params=1000)
    result = fill_budget(None, budget, stride=16, aspect=(3, 4), measure_fn=_quadratic)
    _, h, w = result.fits.input_size
    assert h % 16 == 0 and w % 16 == 0 and abs(w / h - 4 / 3) < 0.1 and h * w <= 300 * 400


def test_fill_on_a_real_model_agrees_with_measure(capsys):
    model = create_model(TINY)
    code = main(["budget", TINY, "--fill", "--stride", "8", "--max-gflops", "0.002", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["traces"] <= 15
    fits, over = tuple(out["fits"]["input_size"]), tuple(out["over"]["input_size"])
    assert over[1] == fits[1] + 8
    assert measure(model, fits).gflops <= 0.002 < measure(model, over).gflops
