"""Training samplers: the Score-Stratified Uniform Sampler (SSUS) of the RankCORE method in the seed
(ISeeCV team), and fixed-length epochs (:class:`FixedLengthSampler`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import DataError

__all__ = ["SSUSSampler", "FixedLengthSampler", "score_strata"]


def score_strata(scores: Sequence[float] | np.ndarray, num_strata: int) -> list[np.ndarray]:
    """Indices of ``scores`` grouped into ``num_strata`` equal-width bins over [min, max] (the top
    bin includes the maximum); empty bins are left out."""
    values = np.asarray(scores, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return [np.arange(len(values))]
    bins = np.minimum(((values - lo) / (hi - lo) * num_strata).astype(np.int64), num_strata - 1)
    return [np.flatnonzero(bins == b) for b in range(num_strata) if np.any(bins == b)]


class _EpochSampler(Sampler[int]):
    """An epoch of ``num_samples`` indices drawn by :meth:`_draw` from a generator seeded by
    ``seed + epoch``: :meth:`set_epoch` (which the Trainer calls) makes each epoch's draw different
    and reproducible, so a resumed run replays it."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples < 1:
            raise DataError(f"{type(self).__name__}: num_samples={num_samples} must be at least 1")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(self._draw(torch.Generator().manual_seed(self.seed + self.epoch)))

    def _draw(self, generator: torch.Generator) -> list[int]:
        raise NotImplementedError


class SSUSSampler(_EpochSampler):
    """Draw indices by choosing a score stratum uniformly, then a sample uniformly inside it (seed,
    RankCORE, "Score-Stratified Uniform Sampler"), so sparse score ranges are seen as often as dense ones.

    Scores are split into ``num_strata`` equal-width bins (:func:`score_strata`); empty bins are
    skipped. An epoch yields ``num_samples`` indices (default: ``len(scores)``) drawn with replacement
    from a generator seeded by ``seed + epoch``: call :meth:`set_epoch` at the start of each epoch for
    a different, reproducible draw.
    """

    def __init__(
        self, scores: Sequence[float] | np.ndarray, num_strata: int = 10, num_samples: int | None = None, seed: int = 0
    ) -> None:
        if len(scores) == 0:
            raise DataError("SSUSSampler: no scores to sample from")
        if not np.all(np.isfinite(np.asarray(scores, dtype=np.float64))):
            raise DataError("SSUSSampler: scores must be finite")
        if num_strata < 1:
            raise DataError(f"SSUSSampler: num_strata={num_strata} must be at least 1")
        super().__init__(len(scores) if num_samples is None else num_samples, seed)
        self.strata = score_strata(scores, num_strata)

    def _draw(self, generator: torch.Generator) -> list[int]:
        sizes = torch.tensor([len(s) for s in self.strata], dtype=torch.float64)
        which = torch.randint(len(self.strata), (self.num_samples,), generator=generator)
        offsets = (torch.rand(self.num_samples, generator=generator, dtype=torch.float64) * sizes[which]).long()
        return [int(self.strata[stratum][offset]) for stratum, offset in zip(which.tolist(), offsets.tolist())]


class FixedLengthSampler(_EpochSampler):
    """Epochs of exactly ``num_samples`` indices of a data set of ``size``: fresh random orders of the
    whole set, concatenated and cut (every sample seen as evenly as the length allows).

    Two runs on data sets of different sizes then take the same number of optimiser steps, as the
    demo's students do (the control's labels alone and the distilled student's labels ∪
    pseudo-labels). The order of epoch ``e`` comes from a generator seeded by ``seed + e``
    (:meth:`set_epoch`), so it is reproducible and a resumed run replays it.
    """

    def __init__(self, size: int, num_samples: int, seed: int = 0) -> None:
        if size < 1:
            raise DataError("FixedLengthSampler: no samples to draw from")
        super().__init__(num_samples, seed)
        self.size = size

    def _draw(self, generator: torch.Generator) -> list[int]:
        rounds = -(-self.num_samples // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
        return order[: self.num_samples].tolist()
