"""Multi-process training through ``torchrun``: process group, samplers and gathering.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, gloo on CPU); without them everything runs in one process. Only rank 0
writes files and prints (:attr:`DistContext.is_main`), so only rank 0 holds the writer lock of what
a command writes (:func:`rank_zero_writer_lock`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import ConfigError, spelled
from ..writer_lock import WriterLockedError, lock_file_of, writer_lock

__all__ = [
    "is_main_process",
    "DistContext",
    "init_distributed",
    "shutdown_distributed",
    "RankSplitSampler",
    "all_gather_objects",
    "any_rank",
    "broadcast_state",
    "rank_zero_writer_lock",
    "collective_timeout",
    "local_context",
]

_HELD: set[Path] = set()
"""The lock files this process holds through :func:`rank_zero_writer_lock`."""



def is_main_process() -> bool:
    """True outside ``torchrun`` and on its rank 0: the process that prints and writes files."""
    return int(os.environ.get("RANK", "0")) == 0

@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


TIMEOUT_ENV = "KDFIQA_DIST_TIMEOUT"
"""Environment variable: the seconds any collective (and a failed rank's wait for the others) may take."""
DEFAULT_TIMEOUT_S = 300.0


def collective_timeout() -> float:
    """Seconds a collective may wait for the other ranks before it fails: ``KDFIQA_DIST_TIMEOUT``
    (a positive number), 300 by default. No rank waits forever for one that stopped."""
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"environment variable {TIMEOUT_ENV}={value!r} must be a positive number of seconds")
    return seconds


def init_distributed(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if the environment names one, and pick the device.

    ``device`` is ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``. Under ``torchrun`` each
    process uses ``cuda:LOCAL_RANK``; the backend is NCCL on CUDA and gloo on CPU. Calling it again
    in an initialised process reuses the existing group. Every collective of the group fails after
    :func:`collective_timeout` seconds instead of waiting forever.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available; use 'cpu'")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=collective_timeout()))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


class RankSplitSampler(Sampler[int]):
    """This rank's share of another sampler: indices ``rank, rank + W, ...`` of its epoch order.

    The base sampler's order is padded by wrapping around to a multiple of the world size, so every
    rank runs the same number of steps. A base sampler whose order comes in whole batches (a
    ``block_size`` attribute, e.g. :class:`~kdfiqa.data.samplers.TwoStreamSampler`) is split by
    blocks instead: blocks ``rank, rank + W, ...``, each kept whole, so every rank's batch is one of
    the base sampler's. ``set_epoch`` is passed on to the base sampler.
    """

    def __init__(self, sampler: Sampler[int], num_replicas: int, rank: int) -> None:
        self.sampler = sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.block = int(getattr(sampler, "block_size", 1))

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        blocks = -(-len(self.sampler) // self.block)
        return -(-blocks // self.num_replicas) * self.block

    def __iter__(self) -> Iterator[int]:
        order = list(self.sampler)
        blocks = [order[i:i + self.block] for i in range(0, len(order), self.block)]
        padded = len(self) // self.block * self.num_replicas
        blocks += blocks[: padded - len(blocks)]
        return iter([index for block in blocks[self.rank::self.num_replicas] for index in block])


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj from rank 0, obj from rank 1, ...]`` (just ``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flags: Sequence[bool], ctx: DistContext) -> list[bool]:
    """For each flag, whether it is true on any rank (one small all-reduce per call)."""
    if not ctx.distributed:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_state(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank.

    DDP keeps parameters in step, but each rank updates its own BatchNorm running statistics after
    the last broadcast of a step; validating or averaging them would then differ between ranks.
    """
    if ctx.distributed:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


@contextlib.contextmanager
def rank_zero_writer_lock(target: Union[str, "os.PathLike[str]"], ctx: DistContext | None) -> Iterator[None]:
    """Hold the writer lock of ``target`` (:func:`kdfiqa.writer_lock.writer_lock`: a folder given
    with a trailing separator, or a file) for the ``with`` block, on rank 0 alone (``ctx`` None: a
    single process).

    Another process holding it refuses the block on every rank alike: rank 0 tries the lock and
    hands the outcome to the others in one collective, so none is left waiting at a later barrier;
    that collective is bounded by the process group's timeout, and the other ranks meet it as soon
    as rank 0 has tried. Reentrant within a process: a block nested in one holding the same lock
    file (a command's own stage writing the same path) holds it already. A lock file that cannot be
    made (the path is a file, its folder is not writable) locks nothing: the output checks that
    follow refuse such a path, each with its own message.
    """
    lock = lock_file_of(target).resolve()
    with contextlib.ExitStack() as held:
        holder = None
        if (ctx is None or ctx.is_main) and lock not in _HELD:
            try:
                held.enter_context(writer_lock(target))
            except WriterLockedError as refused:
                holder = refused.holder
            except OSError:
                pass
            else:
                _HELD.add(lock)
                held.callback(_HELD.discard, lock)
        if ctx is not None and ctx.distributed:
            holder = all_gather_objects(holder, ctx)[0]
        if holder is not None:
            raise WriterLockedError(Path(target), lock_file_of(target), holder)
        yield


def local_context(device: str = "cpu") -> DistContext:
    """This process alone on ``device`` (``auto``: CUDA when available, ``cpu`` or ``cuda``),
    whatever the environment says: for work that is not shared with other ranks."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{spelled('--device')} {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{spelled('--device cuda')} was asked for but no CUDA device is available; use cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
