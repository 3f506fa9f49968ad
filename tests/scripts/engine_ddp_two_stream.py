"""Under torchrun: distil on a mixed set (labeled and label-less samples) through a TwoStreamSampler.

usage: python -m torch.distributed.run --nproc_per_node 2 engine_ddp_two_stream.py OUT_DIR
Rank 0 writes OUT_DIR/two_stream.json: every rank's batches of epoch 1 as its loader gives them, the
sampler's own batches of that epoch, and the per-epoch training records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from engine_toys import ToyFaces, toy_distiller
from kdfiqa.data.samplers import TwoStreamSampler
from kdfiqa.engine import TrainConfig, Trainer, init_distributed, shutdown_distributed
from kdfiqa.engine.distributed import all_gather_objects

LABELED = 10


class Mixed(Dataset):
    """ToyFaces whose samples from index LABELED on have no label (score NaN)."""

    def __init__(self, n: int) -> None:
        self.faces = ToyFaces(n)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict:
        item = self.faces[i]
        return {**item, "score": torch.tensor(float("nan")) if i >= LABELED else torch.as_tensor(item["score"])}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ctx = init_distributed("cpu")
    sampler = TwoStreamSampler(range(LABELED), range(LABELED, 24), batch_size=4, labeled_per_batch=2, seed=5)
    cfg = TrainConfig(output_dir=str(out), epochs=2, batch_size=4, lr=0.05, optimizer="sgd", scheduler="none",
                      device="cpu", quiet=True)
    trainer = Trainer(toy_distiller(), Mixed(24), None, cfg, sampler=sampler, ctx=ctx)
    history = trainer.fit()
    trainer.loader.sampler.set_epoch(1)
    mine = [batch["index"].tolist() for batch in trainer.loader]
    ranks = all_gather_objects(mine, ctx)
    if ctx.is_main:
        order = list(sampler)  # epoch 1's, as set above
        whole = [order[i:i + 4] for i in range(0, len(order), 4)]
        (out / "two_stream.json").write_text(json.dumps({"ranks": ranks, "batches": whole, "history": history}))
    shutdown_distributed()


if __name__ == "__main__":
    main()
