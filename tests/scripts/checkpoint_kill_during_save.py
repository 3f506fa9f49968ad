"""Save a checkpoint, then start a second save that stalls half-way through writing its bytes.

usage: checkpoint_kill_during_save.py PATH. Prints "writing" once the second save has put half its
bytes on disk, then sleeps until the test kills it (SIGKILL).
"""

from __future__ import annotations

import io
import sys
import time

import torch
from torch import nn

from kdfiqa.checkpoint import build_checkpoint, save_checkpoint

real_save = torch.save


def stalling_save(obj, f) -> None:
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    print("writing", flush=True)
    time.sleep(120)


def main() -> None:
    path = sys.argv[1]
    model = nn.Linear(256, 256)
    save_checkpoint(path, build_checkpoint(model, step=1))
    torch.save = stalling_save
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(path, build_checkpoint(model, step=2))


if __name__ == "__main__":
    main()
