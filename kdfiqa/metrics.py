"""The challenge's evaluation metrics: SRCC, PLCC (optionally after a logistic fit), KRCC, RMSE.

Inputs are array-likes or tensors of predictions and MOS of the same length, shape (N,) or (N, 1);
values are computed in float64 and agree with ``scipy.stats`` (spearmanr, pearsonr, kendalltau).

Defined behaviour at the edges:

* **NaN or infinite values** raise :class:`~kdfiqa.errors.DataError` naming the input and the first
  bad index; nothing is dropped silently.
* **Fewer than 3 samples**: correlations raise :class:`DataError` (with 1 or 2 points a
  correlation is undefined or trivially ±1); ``rmse`` needs one sample.
* **Constant input** (every prediction, or every MOS, equal): a correlation is undefined; kdfiqa
  returns 0.0 ("no agreement") and emits :class:`ConstantInputWarning`, so that training and model
  selection can go on while the problem stays visible.
* **Ties** use average ranks for SRCC and Kendall's tau-b for KRCC, as scipy does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import optimize, special, stats

from .errors import ConfigError, DataError

__all__ = [
    "ConstantInputWarning",
    "LogisticFitError",
    "Logistic4",
    "srcc",
    "plcc",
    "krcc",
    "rmse",
    "challenge_score",
    "evaluate",
    "fit_logistic4",
]

FITS = ("logistic4",)
MIN_SAMPLES = 3

COLLAPSE_SPREAD = 1e-4
"""Predictions whose standard deviation (on the score scale) is below this have collapsed to a
near-constant output: a validated epoch is flagged and never chosen as ``best.pt``, and
pseudo-labels are warned about."""


class ConstantInputWarning(RuntimeWarning):
    """A correlation was asked of a constant input; the metric is reported as 0.0."""


class LogisticFitError(DataError):
    """The 4-parameter logistic could not be fitted to the predictions and MOS."""


def _as_vector(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()  # numpy has no bfloat16
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be a vector of shape (N,) or (N, 1), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(
            f"{name} has {bad.size} NaN or infinite value(s), the first at index {bad[0]}; "
            "remove or fix those samples"
        )
    return arr


def _as_pair(pred: Any, mos: Any, min_samples: int = MIN_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    p, m = _as_vector(pred, "pred"), _as_vector(mos, "mos")
    if p.shape != m.shape:
        raise DataError(f"pred has {p.size} values but mos has {m.size}; they must pair up")
    if p.size < min_samples:
        raise DataError(f"need at least {min_samples} samples to compute this metric, got {p.size}")
    return p, m


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def _constant_guard(p: np.ndarray, m: np.ndarray, metric: str) -> bool:
    """True (after warning) when either side is constant and the correlation is undefined."""
    sides = [name for name, x in (("pred", p), ("mos", m)) if _is_constant(x)]
    if sides:
        warnings.warn(
            f"{metric}: {' and '.join(sides)} constant, correlation undefined; reporting 0.0",
            ConstantInputWarning,
            stacklevel=3,
        )
    return bool(sides)


def _pearson(p: np.ndarray, m: np.ndarray) -> float:
    """Pearson's r of two non-constant float64 vectors, clipped to [-1, 1]. Each vector is scaled
    by its largest magnitude first (r is scale-free), so values near float64's range neither
    overflow nor underflow in the norms."""
    p, m = p / np.abs(p).max(), m / np.abs(m).max()
    a, b = p - p.mean(), m - m.mean()
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


MAX_FIT_EVALUATIONS = 100_000
"""Function evaluations ``curve_fit`` may spend on one logistic fit."""


@dataclass(frozen=True)
class Logistic4:
    """The VQEG 4-parameter logistic ``f(x) = (b1 − b2)/(1 + exp(−(x − b3)/|b4|)) + b2``."""

    b1: float
    b2: float
    b3: float
    b4: float

    def __call__(self, x: Any) -> np.ndarray:
        return _logistic4(np.asarray(x, dtype=np.float64), self.b1, self.b2, self.b3, self.b4)


def _logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    # 1/(1 + exp(−u)) evaluated as expit(u), which cannot overflow.
    scale = max(abs(b4), np.finfo(np.float64).tiny)
    return (b1 - b2) * special.expit((x - b3) / scale) + b2


def _curve_fit(p: np.ndarray, m: np.ndarray, p0: list[float]) -> tuple[np.ndarray, float] | str:
    """Least-squares :func:`_logistic4` parameters from ``p0`` and their sum of squared residuals,
    or why the fit failed."""
    try:
        # "Covariance of the parameters could not be estimated": the least-squares fit itself is
        # still returned, and only the parameters (never their covariance) are used; a start far
        # from the data may overflow on the way, which the residual comparison then rules out.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(_logistic4, p, m, p0=p0, maxfev=MAX_FIT_EVALUATIONS)
            residual = float(np.sum((_logistic4(p, *params) - m) ** 2))
    except (RuntimeError, ValueError) as err:
        return str(err)
    if not np.all(np.isfinite(params)):
        return "non-finite parameters"
    return (params, residual) if np.isfinite(residual) else "non-finite residuals"


def fit_logistic4(pred: Any, mos: Any) -> Callable[[Any], np.ndarray]:
    """Fit :class:`Logistic4` mapping ``pred`` onto ``mos`` by least squares (VQEG practice).

    ``scipy.optimize.curve_fit`` runs from ``b1 = max(mos)``, ``b2 = min(mos)``, ``b3 = mean(pred)``,
    ``b4 = 0.5``, the starting point of the ECNU-SJTU winner's evaluation (``utils.py`` of their
    code), so that fitted PLCC and calibrations agree with theirs; and again on the standardised
    predictions ``(pred - mean) / std`` from ``b3 = 0``, ``b4 = 1`` (mapped back: ``b3 = mean +
    std·b3'``, ``b4 = std·b4'``; the moments taken after dividing by ``max |pred|``, so that they
    neither overflow nor underflow), a start that does not depend on the predictions' scale (``b4 =
    0.5`` suits scores on [0, 1], not logits or a 0-1000 range). The fit with the smaller sum of
    squared residuals is kept, the winner's on a tie. Raises :class:`LogisticFitError` (a
    :class:`DataError`) with fewer than 4 samples, or when neither fit converges to finite
    parameters. A fit whose parameter covariance cannot be estimated (few samples, a flat stretch of
    the curve) is still the least-squares fit and is returned.
    """
    p, m = _as_pair(pred, mos, min_samples=1)
    if p.size < 4:
        raise LogisticFitError(f"a 4-parameter logistic needs at least 4 samples, got {p.size}")
    fits = [_curve_fit(p, m, [m.max(), m.min(), p.mean(), 0.5])]
    magnitude = float(np.abs(p).max())  # divided out first, so the moments neither over- nor underflow
    centre, spread = (p / magnitude).mean(), (p / magnitude).std()
    if magnitude > 0 and spread > 0:
        scaled = _curve_fit((p / magnitude - centre) / spread, m, [m.max(), m.min(), 0.0, 1.0])
        if not isinstance(scaled, str):
            (b1, b2, b3, b4), residual = scaled
            fits.append((np.array([b1, b2, magnitude * (centre + spread * b3), magnitude * spread * b4]), residual))
    found = [f for f in fits if not isinstance(f, str) and np.all(np.isfinite(f[0]))]
    if not found:
        raise LogisticFitError(f"4-parameter logistic fit of pred to mos failed: {fits[0]}")
    params, _ = min(found, key=lambda f: f[1])  # min keeps the first (the winner's start) on a tie
    return Logistic4(*(float(b) for b in params))


def _mapped(p: np.ndarray, m: np.ndarray, fit: str | None) -> np.ndarray:
    """``p`` through the fitted logistic when ``fit`` asks for it; ``p`` (with a warning) if it fails."""
    if fit is None:
        return p
    if fit not in FITS:
        raise ConfigError(f"fit={fit!r} is unknown; use None or one of {', '.join(FITS)}")
    if _is_constant(p) or _is_constant(m):
        return p
    try:
        return fit_logistic4(p, m)(p)
    except LogisticFitError as err:
        warnings.warn(f"{err}; using raw predictions", RuntimeWarning, stacklevel=3)
        return p


def srcc(pred: Any, mos: Any) -> float:
    """Spearman's rank correlation (average ranks for ties), as ``scipy.stats.spearmanr``."""
    p, m = _as_pair(pred, mos)
    if _constant_guard(p, m, "srcc"):
        return 0.0
    return _pearson(stats.rankdata(p), stats.rankdata(m))


def plcc(pred: Any, mos: Any, fit: str | None = None) -> float:
    """Pearson's linear correlation, as ``scipy.stats.pearsonr``.

    ``fit="logistic4"`` first maps ``pred`` by the 4-parameter logistic fitted to ``mos``
    (:func:`fit_logistic4`, VQEG practice and the ECNU-SJTU evaluation); if the fit fails the raw
    value is returned with a ``RuntimeWarning``.
    """
    p, m = _as_pair(pred, mos)
    if _constant_guard(p, m, "plcc"):
        return 0.0
    mapped = _mapped(p, m, fit)
    if _constant_guard(mapped, m, "plcc"):
        return 0.0
    return _pearson(mapped, m)


def krcc(pred: Any, mos: Any) -> float:
    """Kendall's rank correlation tau-b (ties accounted for), as ``scipy.stats.kendalltau``."""
    p, m = _as_pair(pred, mos)
    if _constant_guard(p, m, "krcc"):
        return 0.0
    return float(stats.kendalltau(p, m, variant="b").statistic)


def rmse(pred: Any, mos: Any) -> float:
    """Root mean squared error ``√(mean((pred − mos)²))`` on the raw scores."""
    p, m = _as_pair(pred, mos, min_samples=1)
    return math.sqrt(float(np.mean((p - m) ** 2)))


def challenge_score(pred: Any, mos: Any, fit: str | None = None) -> float:
    """The VQualA 2025 FIQA ranking score ``(SRCC + PLCC) / 2``."""
    return (srcc(pred, mos) + plcc(pred, mos, fit=fit)) / 2.0


def evaluate(pred: Any, mos: Any, fit: str | None = None) -> dict[str, float | int]:
    """All metrics at once: ``{"srcc", "plcc", "krcc", "rmse", "score", "n"}``.

    With ``fit="logistic4"`` the logistic is fitted once and PLCC and RMSE are computed on the
    mapped predictions (SRCC and KRCC do not change under a monotone map).
    """
    p, m = _as_pair(pred, mos)
    mapped = _mapped(p, m, fit)
    s, r = srcc(p, m), plcc(mapped, m)
    return {
        "srcc": s,
        "plcc": r,
        "krcc": krcc(p, m),
        "rmse": rmse(mapped, m),
        "score": (s + r) / 2.0,
        "n": int(p.size),
    }
