"""Under torchrun: each rank tries the writer lock of a held folder (argv[1]) and of a free one
(argv[2]), meets a barrier, and writes what happened to argv[3]/rank<R>.txt."""

import os
import sys
from pathlib import Path

from kdfiqa.engine.distributed import init_distributed, rank_zero_writer_lock, shutdown_distributed
from kdfiqa.writer_lock import WriterLockedError, lock_file_of

held, free, report = sys.argv[1:4]
ctx = init_distributed("cpu")
lines = []
try:
    with rank_zero_writer_lock(os.path.join(held, ""), ctx):
        lines.append("held: taken")
except WriterLockedError as refused:
    lines.append(f"held: refused by {refused.holder}")
with rank_zero_writer_lock(os.path.join(free, ""), ctx):
    lines.append(f"free: taken, lock file by {lock_file_of(os.path.join(free, '')).read_text().strip()}")
    ctx.barrier()
ctx.barrier()  # no rank was left behind by the refusal
Path(report, f"rank{ctx.rank}.txt").write_text("\n".join([*lines, f"pid {os.getpid()}"]) + "\n")
shutdown_distributed()
