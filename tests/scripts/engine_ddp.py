"""Under torchrun: train the toy model one epoch with DDP (gloo), then evaluate its checkpoint.

usage: python -m torch.distributed.run --nproc_per_node 2 engine_ddp.py OUT_DIR
Rank 0 writes OUT_DIR/ddp_metrics.json (the evaluation of OUT_DIR/last.pt on all ranks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from engine_toys import ToyFaces, ToyNet, ToyObjective
from kdfiqa.checkpoint import load_weights
from kdfiqa.engine import TrainConfig, Trainer, evaluate_model, init_distributed, shutdown_distributed


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TrainConfig(output_dir=str(out), epochs=1, batch_size=4, lr=0.02, device="cpu",
                      val_batch_size=2, quiet=True)
    Trainer(ToyObjective(ToyNet()), ToyFaces(16), ToyFaces(9, seed=1, noise=0.0), cfg).fit()
    ctx = init_distributed("cpu")
    model = ToyNet()
    load_weights(model, out / "last.pt")
    metrics, preds = evaluate_model(model, ToyFaces(9, seed=1, noise=0.0), ctx, batch_size=2)
    if ctx.is_main:
        (out / "ddp_metrics.json").write_text(json.dumps({"metrics": metrics, "index": preds.index,
                                                          "world_size": ctx.world_size}))
    shutdown_distributed()


if __name__ == "__main__":
    main()
