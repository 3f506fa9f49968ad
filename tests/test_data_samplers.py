from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from kdfiqa.data import SSUSSampler
from kdfiqa.errors import DataError


def reference_stratum(score: float, lo: float, hi: float, k: int) -> int:
    """Equal-width bin of ``score`` over [lo, hi], the top edge in the last bin, by a direct loop."""
    width = (hi - lo) / k
    for b in range(k):
        if score < lo + (b + 1) * width:
            return b
    return k - 1


@pytest.fixture
def skewed_scores():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0.6, 0.8, 900)  # most samples in two bins
    sparse = np.array([0.0, 0.05, 0.31, 1.0])  # bins 0, 3 and 9; bins 1, 2, 4, 5, 8 are empty
    return np.concatenate([dense, sparse])


def test_strata_are_drawn_uniformly_and_samples_uniformly_within(skewed_scores):
    sampler = SSUSSampler(skewed_scores, num_strata=10, num_samples=20_000, seed=3)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 20_000
    lo, hi = skewed_scores.min(), skewed_scores.max()
    strata = [reference_stratum(skewed_scores[i], lo, hi, 10) for i in drawn]
    counts = Counter(strata)
    nonempty = {reference_stratum(s, lo, hi, 10) for s in skewed_scores}
    assert set(counts) == nonempty  # empty strata are never drawn
    assert stats.chisquare([counts[b] for b in sorted(nonempty)]).pvalue > 1e-3
    members = [i for i in range(len(skewed_scores)) if reference_stratum(skewed_scores[i], lo, hi, 10) == 6]
    within = Counter(i for i, b in zip(drawn, strata) if b == 6)
    assert set(within) <= set(members)
    assert stats.chisquare([within[i] for i in members]).pvalue > 1e-3
    assert sum(d == len(skewed_scores) - 1 for d in drawn) > 20_000 / len(nonempty) * 0.4  # the lone 1.0 sample


def test_set_epoch_reproducible_and_different(skewed_scores):
    a, b = SSUSSampler(skewed_scores, seed=5), SSUSSampler(skewed_scores, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) == list(a)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert len(list(a)) == len(skewed_scores)


def test_constant_scores_and_errors():
    assert sorted(set(SSUSSampler([0.5] * 4, num_samples=200))) == [0, 1, 2, 3]
    with pytest.raises(DataError):
        SSUSSampler([])
    with pytest.raises(DataError):
        SSUSSampler([0.1, float("nan")])
    with pytest.raises(DataError):
        SSUSSampler([0.1], num_strata=0)


def test_fixed_length_epochs_cycle_fresh_orders_reproducibly():
    from kdfiqa.data.samplers import FixedLengthSampler

    sampler = FixedLengthSampler(5, 12, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 12
    for start in (0, 5):
        assert sorted(first[start:start + 5]) == list(range(5))  # each full round is a permutation
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
