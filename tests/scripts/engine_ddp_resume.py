"""Under torchrun: train the toy model 2 epochs with DDP (gloo), optionally crashing or resuming.

usage: python -m torch.distributed.run --nproc_per_node 2 engine_ddp_resume.py OUT_DIR MODE
MODE is ``full`` (uninterrupted), ``crash`` (every rank fails at global step 7, mid-epoch 2,
with ``last.pt`` saved at step 6) or ``resume`` (continue OUT_DIR/last.pt). Each rank's data
"augmentation" noise comes from its own torch RNG, so a resume that gave every rank rank 0's RNG
would train on different noise than the uninterrupted run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from engine_toys import ToyFaces, ToyNet, ToyObjective
from kdfiqa.engine import Callback, TrainConfig, Trainer, shutdown_distributed


class CrashAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            raise RuntimeError("simulated crash")


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TrainConfig(output_dir=str(out), epochs=2, batch_size=2, lr=0.05, optimizer="sgd", scheduler="none",
                      save_every_steps=3, device="cpu", seed=5, quiet=True)
    callbacks = [CrashAfter(7)] if mode == "crash" else []
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(18), None, cfg, callbacks=callbacks)
    try:
        trainer.fit(out / "last.pt" if mode == "resume" else None)
    except RuntimeError as exc:
        if mode != "crash" or "simulated crash" not in str(exc):
            raise
    shutdown_distributed()


if __name__ == "__main__":
    main()
