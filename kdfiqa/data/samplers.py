"""Training samplers: the Score-Stratified Uniform Sampler (SSUS) of the RankCORE method in the seed
(ISeeCV team), fixed-length epochs (:class:`FixedLengthSampler`), and batches of a fixed labeled
share (:class:`TwoStreamSampler`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from ..errors import DataError

__all__ = ["SSUSSampler", "FixedLengthSampler", "TwoStreamSampler", "score_strata"]


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


class TwoStreamSampler(Sampler[int]):
    """Batches of ``batch_size`` indices, exactly ``labeled_per_batch`` from ``labeled`` and the rest
    from ``unlabeled``, yielded batch after batch (a loader with the same ``batch_size`` cuts them
    back into those batches; :attr:`block_size` tells a rank split to keep them whole).

    The epoch's length is fixed by the labeled stream: ``ceil(len(labeled) / labeled_per_batch)``
    batches, each labeled sample once per epoch in a fresh order (the last batch topped up from
    another order of the same epoch), or ``batches`` when given (the labeled stream then draws as many
    fresh orders as it needs: ``data.samples_per_epoch`` sets it, so a run takes the same steps as
    any other run of that many samples per epoch). It does not depend on the unlabeled share, so runs that mix in
    more or fewer unlabeled samples per batch take the same optimiser steps. The unlabeled stream
    runs on across epochs without replacement: fresh random orders of ``unlabeled`` concatenated,
    epoch ``e`` taking the next ``batches × (batch_size - labeled_per_batch)`` of them. Both are
    drawn from generators seeded by ``seed`` and the epoch (:meth:`set_epoch`) or the order's number,
    so an epoch is reproducible on its own and a resumed run replays it. Inside a batch the labeled
    samples come first.
    """

    def __init__(self, labeled: Sequence[int], unlabeled: Sequence[int], batch_size: int,
                 labeled_per_batch: int, seed: int = 0, batches: int | None = None) -> None:
        if not 1 <= labeled_per_batch <= batch_size:
            raise DataError(f"TwoStreamSampler: labeled_per_batch={labeled_per_batch} must be from 1 to the "
                            f"batch size {batch_size}")
        if not labeled:
            raise DataError("TwoStreamSampler: no labeled samples to draw from")
        if labeled_per_batch < batch_size and not unlabeled:
            raise DataError(f"TwoStreamSampler: no unlabeled samples for the {batch_size - labeled_per_batch} "
                            "unlabeled places of each batch")
        self.labeled = torch.as_tensor(list(labeled), dtype=torch.long)
        self.unlabeled = torch.as_tensor(list(unlabeled), dtype=torch.long)
        self.batch_size = batch_size
        self.labeled_per_batch = labeled_per_batch
        self.seed = seed
        self.epoch = 0
        if batches is not None and batches < 1:
            raise DataError(f"TwoStreamSampler: batches={batches} must be at least 1")
        self.batches = batches if batches is not None else -(-len(self.labeled) // labeled_per_batch)

    @property
    def block_size(self) -> int:
        """Indices come in whole batches of this many, which a split between ranks keeps together."""
        return self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def _labeled_order(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        need = self.batches * self.labeled_per_batch
        rounds = -(-need // len(self.labeled))
        picks = torch.cat([torch.randperm(len(self.labeled), generator=generator) for _ in range(rounds)])
        return self.labeled[picks[:need]].reshape(self.batches, self.labeled_per_batch)

    def _unlabeled_order(self) -> Tensor:
        per_batch = self.batch_size - self.labeled_per_batch
        need = self.batches * per_batch
        if need == 0:
            return self.unlabeled.new_empty((self.batches, 0))
        size = len(self.unlabeled)
        start = self.epoch * need  # the stream's position: orders 0, 1, ... of the unlabeled set in turn
        first, last = start // size, (start + need - 1) // size
        orders = [torch.randperm(size, generator=torch.Generator().manual_seed(_order_seed(self.seed, k)))
                  for k in range(first, last + 1)]
        picks = torch.cat(orders)[start - first * size:][:need]
        return self.unlabeled[picks].reshape(self.batches, per_batch)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.cat([self._labeled_order(), self._unlabeled_order()], dim=1).reshape(-1).tolist())


def _order_seed(seed: int, order: int) -> int:
    """The seed of the unlabeled stream's ``order``-th random order: apart from the labeled stream's
    ``seed + epoch`` seeds (a large odd offset, kept within a signed 64-bit seed)."""
    return (seed + 0x9E3779B97F4A7C15 * (order + 1)) % (2**63 - 1)
