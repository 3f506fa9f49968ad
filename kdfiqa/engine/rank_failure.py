"""One failure under ``torchrun``, one message: which rank says it, and every rank's exit status.

Under ``torchrun`` every rank runs the same command. When one of them fails, the others meet the
failure as a broken collective (gloo's "Connection closed by peer", NCCL's abort, a timeout) at their
next collective, and a failure that every rank sees (the same bad file read by all) is raised on
every rank. :func:`settle` turns both into one line in total, from a single process:

* a rank whose own error it is publishes the message in the process group's key-value store, then
  leaves the group, so that ranks blocked in a collective with it fail at once instead of waiting;
* a rank whose collective broke (:func:`is_peer_failure`) publishes nothing: the failure is another's;
* every rank then waits, bounded by the process group's timeout (:func:`collective_timeout`), for
  all ranks to have settled, and the lowest rank that failed on its own says its message: rank 0
  when it failed too (the same input seen by all), otherwise the rank that alone saw the bad input.
  When no rank published a message (one was killed, or stopped answering) rank 0 says so.

A command that fails before the group is joined fails alike on every rank (the same arguments and
files), so rank 0 alone says it. Every rank's exit status is the command line's usual 2; ``torchrun``
itself then exits 1 and prints its own report of the ranks' statuses.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from .distributed import collective_timeout

__all__ = ["is_peer_failure", "settle", "all_ranks_succeeded"]

_PREFIX = "kdfiqa/failure"
_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo", "NCCL")
"""Text of the exceptions a collective raises when a peer left the group or stopped answering."""


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that broke because another rank left or stopped answering
    (rather than this rank's own failure)."""
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in _PEER_SIGNS)


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _wait_count(store: Any, key: str, count: int, deadline: float) -> None:
    """Poll the counter ``key`` until it reaches ``count`` or ``deadline`` (a ``time.monotonic``) passes."""
    while store.add(key, 0) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def settle(exc: BaseException, message: str) -> str | None:
    """What this process prints for ``exc`` (whose one-line text is ``message``): ``message`` itself,
    another line, or None for a rank that stays quiet (see the module's description). Outside
    ``torchrun`` it is ``message``."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world <= 1:
        return message
    if not _in_group():  # failed before joining: the same failure on every rank
        return message if rank == 0 else None
    store = dist.distributed_c10d._get_default_store()
    world, rank = dist.get_world_size(), dist.get_rank()
    timeout = collective_timeout()
    own = not is_peer_failure(exc)
    try:
        store.set_timeout(timedelta(seconds=timeout))
        if own:
            store.set(f"{_PREFIX}/failed/{rank}", message)
        dist.destroy_process_group()  # ranks waiting on this one in a collective fail now
        deadline = time.monotonic() + timeout
        store.add(f"{_PREFIX}/settled", 1)
        _wait_count(store, f"{_PREFIX}/settled", world, deadline)
        failed = [r for r in range(world) if store.check([f"{_PREFIX}/failed/{r}"])]
        store.add(f"{_PREFIX}/read", 1)
        if rank == 0:  # rank 0 may host the store: it stays until every rank has read it
            _wait_count(store, f"{_PREFIX}/read", world, time.monotonic() + timeout)
    except Exception:  # noqa: BLE001 - the store went away with its host: say what this rank knows
        return message if own or rank == 0 else None
    if failed:
        return message if own and rank == min(failed) else None
    if rank == 0:
        return (f"another rank stopped without reporting an error (killed, or no answer within {timeout:g} s; "
                f"KDFIQA_DIST_TIMEOUT sets that bound): torchrun's report gives each rank's exit status")
    return None


def all_ranks_succeeded() -> None:
    """After this rank's command succeeded under ``torchrun``, meet every other rank once more: a rank
    that failed has left the group, so the barrier raises here and this rank exits as it does (the
    failure of a rank's last step, such as rank 0's write of the output, is then every rank's). The
    wait is bounded by the group's timeout. Nothing outside ``torchrun``."""
    if _in_group():
        dist.barrier()
