"""Every inference pass over a data set, split across the ``torchrun`` ranks: :func:`map_sharded`.

Pseudo-labelling, the teacher view cache, ``predict`` and ``evaluate`` score each image once with a
frozen network. Under ``torchrun`` the images are cut into *chunks* of whole batches of the batch
grid one process would use (batch ``b`` holds items ``b*B .. b*B+B-1``); each rank takes a
contiguous run of the chunks still to score, scores them under :func:`torch.inference_mode`, and
the results are gathered to every rank in data-set order. Unlike
:class:`~torch.utils.data.DistributedSampler` nothing is padded: each item is scored exactly once.

Because every batch is the batch one process would form, a network whose output on an image
depends on what else is in its batch (none of kdfiqa's in eval mode; such numerics would still be
repeated exactly) gives the same bytes under any number of ranks.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ConfigError
from .distributed import DistContext, all_gather_objects

__all__ = ["chunk_ranges", "rank_chunks", "map_sharded", "flatten"]


def chunk_ranges(n_items: int, batch_size: int, chunk_size: int | None = None,
                 world_size: int = 1) -> list[range]:
    """The item ranges of the chunks of ``n_items``: ``chunk_size`` items each (a multiple of
    ``batch_size``; the last one shorter), or, with ``chunk_size`` None, one chunk per rank of
    ``world_size``, each a contiguous run of whole batches, as even as whole batches allow."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    if chunk_size is None:
        batches = -(-n_items // batch_size)
        cuts = [batches * r // world_size * batch_size for r in range(world_size + 1)]
        return [range(min(a, n_items), min(b, n_items)) for a, b in zip(cuts, cuts[1:])]
    if chunk_size < 1 or chunk_size % batch_size:
        raise ConfigError(f"shard size {chunk_size} must be a positive multiple of the batch size {batch_size}, "
                          "so that every batch is the one a single process would score")
    return [range(a, min(a + chunk_size, n_items)) for a in range(0, n_items, chunk_size)]


def rank_chunks(pending: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's contiguous share of the ``pending`` chunk numbers (ranks in order, as even as
    whole chunks allow)."""
    cuts = [len(pending) * r // ctx.world_size for r in range(ctx.world_size + 1)]
    return list(pending[cuts[ctx.rank]:cuts[ctx.rank + 1]])


def map_sharded(dataset: Dataset, fn: Callable[[Any], list[Any]], ctx: DistContext, *, batch_size: int,
                num_workers: int = 0, chunk_size: int | None = None, skip: Collection[int] = (),
                on_chunk: Callable[[int, list[Any]], None] | None = None,
                collate_fn: Callable | None = None) -> dict[int, list[Any]]:
    """``fn(batch)`` (one result per item of the batch) over every item of ``dataset``, shared by the
    ranks of ``ctx``; returns ``{chunk number: its results in item order}`` on every rank.

    The chunks are :func:`chunk_ranges` (``chunk_size`` items, or one per rank); those in ``skip``
    (scored before, e.g. kept in part files) are left out, the rest are split across the ranks
    (:func:`rank_chunks`). ``on_chunk(number, results)`` runs on the rank that scored a chunk as
    soon as it is done (a part file written then survives a kill of any rank). ``fn`` runs under
    :func:`torch.inference_mode`.
    """
    chunks = chunk_ranges(len(dataset), batch_size, chunk_size, ctx.world_size)
    pending = [i for i, items in enumerate(chunks) if i not in skip and len(items)]
    mine: dict[int, list[Any]] = {}
    for number in rank_chunks(pending, ctx):
        loader = DataLoader(Subset(dataset, list(chunks[number])), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=collate_fn)
        results: list[Any] = []
        with torch.inference_mode():
            for batch in loader:
                out = fn(batch)
                if len(out) != _batch_len(batch):
                    raise ValueError(f"a sharded map gave {len(out)} results for a batch of {_batch_len(batch)}")
                results.extend(out)
        if on_chunk is not None:
            on_chunk(number, results)
        mine[number] = results
    gathered: dict[int, list[Any]] = {}
    for part in all_gather_objects(mine, ctx):
        gathered.update(part)
    return dict(sorted(gathered.items()))


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Mapping):
        first = next(iter(batch.values()))
        return 1 if isinstance(first, str) else len(first)
    return len(batch)


def flatten(chunks: Mapping[int, list[Any]]) -> list[Any]:
    """The results of :func:`map_sharded` as one list in data-set order."""
    return [item for number in sorted(chunks) for item in chunks[number]]

