"""Train the toy model in a subprocess; optionally kill or interrupt itself at a given step.

usage: engine_train.py OUT_DIR [--resume CKPT] [--kill-at STEP] [--sigint-at STEP] [--workers N]
Exit status 130 after an interrupt that saved last.pt.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

from engine_toys import ToyFaces, ToyNet, ToyObjective
from kdfiqa.engine import Callback, TrainConfig, Trainer, TrainingInterrupted


class SignalAt(Callback):
    def __init__(self, step: int | None, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--sigint-at", type=int)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = TrainConfig(
        output_dir=args.out, epochs=3, batch_size=4, lr=0.05, optimizer="adamw",
        scheduler="cosine", warmup_epochs=0.5, ema_decay=0.9, grad_clip=1.0, save_every_steps=2,
        num_workers=args.workers, deterministic=True, device="cpu", seed=7, quiet=True,
    )
    callbacks = [SignalAt(args.kill_at, signal.SIGKILL), SignalAt(args.sigint_at, signal.SIGINT)]
    trainer = Trainer(ToyObjective(ToyNet()), ToyFaces(22), ToyFaces(8, seed=1), config,
                      callbacks=callbacks)
    try:
        trainer.fit(resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
