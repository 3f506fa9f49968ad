"""One rank of a two-rank group running ``kdfiqa evaluate`` whose work is replaced by a scripted one:
collectives in a loop, and a failure of the kind argv[1] names (argv[2:] is the command line).

``one``: rank 1 alone fails mid-loop (its own DataError) while rank 0 waits in a collective.
``all``: every rank fails with the same ConfigError before the loop.
``last``: rank 0 fails after the last collective (as its write of the output would); rank 1 succeeds.
``killed``: rank 1 dies mid-loop without a word (os._exit).
``silent``: rank 1 stops answering (sleeps past the group's timeout) and then succeeds.
"""

import os
import sys
import time

import torch
import torch.distributed as dist

import kdfiqa.cli.evaluate as command
from kdfiqa.cli.main import main
from kdfiqa.engine.distributed import init_distributed
from kdfiqa.errors import ConfigError, DataError

kind = sys.argv[1]


def scripted(args) -> int:
    ctx = init_distributed("cpu")
    if kind == "all":
        raise ConfigError("labels.csv line 3: score 'nan' is not a finite number")
    for step in range(6):
        if ctx.rank == 1 and step == 3:
            if kind == "one":
                raise DataError("rank1.png: cannot decode: truncated file")
            if kind == "killed":
                os._exit(9)
            if kind == "silent":
                time.sleep(3 * float(os.environ["KDFIQA_DIST_TIMEOUT"]))
                return 0
        dist.all_reduce(torch.ones(1))
    if kind == "last" and ctx.rank == 0:
        raise OSError(28, "No space left on device", "scores.csv")
    return 0


command.run = scripted
sys.exit(main(["evaluate", *sys.argv[2:]]))
