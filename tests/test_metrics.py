"""The metrics against scipy.stats and direct definitions, on random and adversarial inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kdfiqa import metrics
from kdfiqa.errors import ConfigError
from kdfiqa.errors import DataError
from kdfiqa.metrics import (
    ConstantInputWarning,
    Logistic4,
    challenge_score,
    evaluate,
    fit_logistic4,
    krcc,
    plcc,
    rmse,
    srcc,
)


def scipy_all(p, m):
    return (
        stats.spearmanr(p, m).statistic,
        stats.pearsonr(p, m).statistic,
        stats.kendalltau(p, m).statistic,
    )


def adversarial_cases():
    rng = np.random.default_rng(7)
    n = 40
    base = rng.random(n)
    yield "heavy ties", rng.integers(0, 3, n).astype(float), rng.integers(0, 4, n).astype(float)
    yield "two values", np.repeat([0.0, 1.0], n // 2), base
    yield "reversed", base, -base
    yield "identical", base, base
    yield "three samples", np.array([0.1, 0.5, 0.2]), np.array([0.3, 0.2, 0.9])
    yield "large offset", 1e6 + base, base
    yield "tiny spread", 0.5 + 1e-7 * base, rng.random(n)
    yield "outlier", np.append(base[:-1], 1e9), rng.random(n)
    yield "one differs", np.append(np.zeros(n - 1), 1.0), base


@pytest.mark.parametrize("n", [3, 10, 257])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_inputs_match_scipy(n, seed):
    rng = np.random.default_rng(seed)
    p, m = rng.random(n), rng.normal(size=n)
    expected = scipy_all(p, m)
    got = (srcc(p, m), plcc(p, m), krcc(p, m))
    assert got == pytest.approx(expected, abs=1e-10)
    assert rmse(p, m) == pytest.approx(math.sqrt(np.mean((p - m) ** 2)), abs=1e-12)


@pytest.mark.parametrize("case", list(adversarial_cases()), ids=lambda c: c[0])
def test_adversarial_inputs_match_scipy(case):
    _, p, m = case
    got = (srcc(p, m), plcc(p, m), krcc(p, m))
    assert got == pytest.approx(scipy_all(p, m), abs=1e-10)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=30))
def test_tied_integer_scores_match_scipy(pairs):
    p = np.array([a for a, _ in pairs], dtype=float)
    m = np.array([b for _, b in pairs], dtype=float)
    if np.all(p == p[0]) or np.all(m == m[0]):
        return  # the constant case has its own test
    assert (srcc(p, m), plcc(p, m), krcc(p, m)) == pytest.approx(scipy_all(p, m), abs=1e-10)


def tau_b_by_loop(p, m):
    concordant = discordant = ties_p = ties_m = 0
    for i in range(len(p)):
        for j in range(i + 1, len(p)):
            dp, dm = np.sign(p[i] - p[j]), np.sign(m[i] - m[j])
            if dp == 0 and dm == 0:
                continue
            if dp == 0:
                ties_p += 1
            elif dm == 0:
                ties_m += 1
            elif dp == dm:
                concordant += 1
            else:
                discordant += 1
    untied = concordant + discordant
    return (concordant - discordant) / math.sqrt((untied + ties_p) * (untied + ties_m))


def test_krcc_is_tau_b_and_srcc_uses_average_ranks():
    p = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.0])
    m = np.array([0.3, 0.1, 0.4, 0.4, 0.9, 0.2, 0.8, 0.0])
    assert krcc(p, m) == pytest.approx(tau_b_by_loop(p, m), abs=1e-12)
    ranks_p = [1 + sum(v < x for v in p) + (sum(v == x for v in p) - 1) / 2 for x in p]
    ranks_m = [1 + sum(v < x for v in m) + (sum(v == x for v in m) - 1) / 2 for x in m]
    assert srcc(p, m) == pytest.approx(np.corrcoef(ranks_p, ranks_m)[0, 1], abs=1e-12)


def test_accepts_tensors_and_column_vectors():
    g = torch.Generator().manual_seed(0)
    p, m = torch.rand(20, 1, generator=g, requires_grad=True), torch.rand(20, generator=g)
    pn, mn = p.detach().numpy()[:, 0].astype(float), m.numpy().astype(float)
    assert srcc(p, m) == pytest.approx(stats.spearmanr(pn, mn).statistic, abs=1e-10)
    assert plcc(p, m) == pytest.approx(stats.pearsonr(pn, mn).statistic, abs=1e-10)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_data_errors_naming_input_and_index(bad):
    p = np.linspace(0, 1, 6)
    m = p.copy()
    m[4] = bad
    for fn in (srcc, plcc, krcc, rmse, evaluate):
        with pytest.raises(DataError, match="mos.*index 4"):
            fn(p, m)
    with pytest.raises(DataError, match="pred"):
        srcc(m, p)


def test_too_few_samples_and_length_mismatch_are_data_errors():
    with pytest.raises(DataError, match="at least 3"):
        srcc([0.1, 0.2], [0.3, 0.1])
    with pytest.raises(DataError, match="at least 3"):
        evaluate([0.1], [0.2])
    with pytest.raises(DataError, match="pair up"):
        plcc([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4])
    assert rmse([0.1], [0.4]) == pytest.approx(0.3)


def test_constant_input_gives_zero_with_a_warning():
    p, m = np.full(5, 0.4), np.linspace(0, 1, 5)
    for fn in (srcc, plcc, krcc):
        with pytest.warns(ConstantInputWarning, match="pred constant"):
            assert fn(p, m) == 0.0
        with pytest.warns(ConstantInputWarning, match="mos constant"):
            assert fn(m, p) == 0.0
    with pytest.warns(ConstantInputWarning):
        result = evaluate(p, m, fit="logistic4")
    assert result["srcc"] == result["plcc"] == result["krcc"] == result["score"] == 0.0
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean((p - m) ** 2)))


def test_logistic4_is_the_vqeg_formula():
    f = Logistic4(0.9, 0.1, 0.5, -0.2)  # |b4| in the formula
    x = np.array([-1.0, 0.2, 0.5, 3.0])
    direct = [(0.9 - 0.1) / (1 + math.exp(-(v - 0.5) / 0.2)) + 0.1 for v in x]
    assert f(x) == pytest.approx(direct, rel=1e-12)
    assert f(np.array([-1e6]))[0] == pytest.approx(0.1)  # no overflow far out


def test_logistic_fit_recovers_a_logistic_and_improves_plcc_on_a_monotone_mapping():
    rng = np.random.default_rng(3)
    pred = rng.uniform(-3, 3, 300)
    mos = Logistic4(0.95, 0.05, 0.4, 0.5)(pred) + rng.normal(0, 0.01, 300)
    fitted = fit_logistic4(pred, mos)
    assert fitted(pred) == pytest.approx(Logistic4(0.95, 0.05, 0.4, 0.5)(pred), abs=0.01)
    raw, with_fit = plcc(pred, mos), plcc(pred, mos, fit="logistic4")
    assert with_fit > raw + 0.02
    assert with_fit == pytest.approx(stats.pearsonr(fitted(pred), mos).statistic, abs=1e-10)
    assert srcc(pred, mos) == pytest.approx(stats.spearmanr(fitted(pred), mos).statistic, abs=1e-10)


def test_failed_fit_falls_back_to_raw_plcc_with_a_warning(monkeypatch):
    rng = np.random.default_rng(0)
    p, m = rng.random(30), rng.random(30)

    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", no_convergence)
    with pytest.warns(RuntimeWarning, match="fit of pred to mos failed.*using raw"):
        assert plcc(p, m, fit="logistic4") == pytest.approx(stats.pearsonr(p, m).statistic, abs=1e-10)
    with pytest.raises(metrics.LogisticFitError):
        fit_logistic4(p, m)
    with pytest.raises(ConfigError, match="fit=.cubic."):
        plcc(p, m, fit="cubic")


def test_fit_whose_covariance_cannot_be_estimated_is_still_returned(monkeypatch):
    rng = np.random.default_rng(1)
    p, m = rng.random(12), rng.random(12)
    real_curve_fit = metrics.optimize.curve_fit
    calls = []

    def fit_then_warn(*args, **kwargs):
        params, cov = real_curve_fit(*args, **kwargs)
        calls.append(params)
        warnings.warn("Covariance of the parameters could not be estimated", metrics.optimize.OptimizeWarning)
        return params, np.full_like(cov, np.inf)

    monkeypatch.setattr(metrics.optimize, "curve_fit", fit_then_warn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = fit_logistic4(p, m)
    assert len(calls) == 2  # from the winner's start, then from the scale-free one

    def squared_error(curve):
        return float(np.sum((curve(p) - m) ** 2))

    assert squared_error(fitted) <= squared_error(Logistic4(*calls[0])) + 1e-12


def test_evaluate_and_challenge_score():
    rng = np.random.default_rng(5)
    p = rng.random(50)
    m = np.tanh(4 * p) + rng.normal(0, 0.05, 50)
    s, r, k = scipy_all(p, m)
    result = evaluate(p, m)
    assert set(result) == {"srcc", "plcc", "krcc", "rmse", "score", "n"}
    assert result["n"] == 50 and isinstance(result["n"], int)
    assert (result["srcc"], result["plcc"], result["krcc"]) == pytest.approx((s, r, k), abs=1e-10)
    assert result["score"] == pytest.approx((s + r) / 2, abs=1e-10)
    assert challenge_score(p, m) == pytest.approx((s + r) / 2, abs=1e-10)
    fitted = fit_logistic4(p, m)(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_fit = evaluate(p, m, fit="logistic4")
    assert with_fit["plcc"] == pytest.approx(stats.pearsonr(fitted, m).statistic, abs=1e-10)
    assert with_fit["rmse"] == pytest.approx(math.sqrt(np.mean((fitted - m) ** 2)), abs=1e-10)
    assert with_fit["srcc"] == result["srcc"] and with_fit["plcc"] > result["plcc"]


def _reference_fitted_plcc_srcc(mos: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """The ECNU-SJTU winner's model-selection metrics restated with scipy alone: a 4-parameter
    logistic fitted by curve_fit from (max mos, min mos, mean pred, 0.5), Pearson on the mapped
    predictions, Spearman on the raw ones."""
    from scipy.optimize import curve_fit

    def logistic(x, b1, b2, b3, b4):
        return b2 + (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4)))

    params, _ = curve_fit(logistic, pred, mos, p0=[mos.max(), mos.min(), pred.mean(), 0.5], maxfev=1_000_000)
    return stats.pearsonr(logistic(pred, *params), mos)[0], stats.spearmanr(pred, mos)[0]


@pytest.mark.parametrize("seed", range(6))
def test_fitted_plcc_agrees_with_the_winners_evaluation(seed):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(0.1, 0.9, 200)
    # raw regression outputs on another scale, monotone-ish with noise (a linear-output student)
    pred = 3.0 * np.tanh(2 * (mos - 0.5)) + rng.normal(0, 0.3, mos.size) + 1.7
    ref_plcc, ref_srcc = _reference_fitted_plcc_srcc(mos, pred)
    result = evaluate(pred, mos, fit="logistic4")
    assert result["plcc"] == pytest.approx(ref_plcc, abs=1e-6)
    assert result["srcc"] == pytest.approx(ref_srcc, abs=1e-12)
    assert result["score"] == pytest.approx((ref_plcc + ref_srcc) / 2, abs=1e-6)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e155, 1e300])
def test_plcc_agrees_with_scipy_at_the_ends_of_float64s_range(scale):
    from scipy.stats import pearsonr

    rng = np.random.default_rng(7)
    mos = rng.uniform(size=40)
    pred = (mos + rng.normal(0, 0.1, 40)) * scale
    assert plcc(pred, mos) == pytest.approx(pearsonr(pred, mos)[0], abs=1e-12)


def test_bfloat16_tensors_are_scored_like_their_float_values():
    import torch
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    mos = rng.uniform(size=30)
    pred = torch.tensor(mos + rng.normal(0, 0.2, 30)).bfloat16()
    assert srcc(pred, mos) == pytest.approx(spearmanr(pred.double().numpy(), mos)[0], abs=1e-12)


@pytest.mark.parametrize("scale", [1e-200, 1e-10, 300.0, 1e4, 1e200])
def test_the_fitted_plcc_does_not_depend_on_the_scale_of_the_predictions(scale):
    """A fit started at b4 = 0.5 suits scores on [0, 1]; logits or a 0-1000 range must fit as well."""
    rng = np.random.default_rng(0)
    mos = rng.uniform(size=60)
    pred = 1 / (1 + np.exp(-(mos - 0.5) * 8)) + rng.normal(0, 0.05, 60)
    unit = metrics.plcc(pred, mos, fit="logistic4")
    assert metrics.plcc(pred * scale, mos, fit="logistic4") == pytest.approx(unit, abs=1e-6)
