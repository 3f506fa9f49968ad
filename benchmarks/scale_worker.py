"""One run of the ``scale`` benchmark, started by torchrun: train, then evaluate a given checkpoint.

usage: python -m torch.distributed.run --standalone --nproc_per_node N -m benchmarks.scale_worker
       DATA_DIR OUT_DIR EVAL_CKPT|- EPOCHS GLOBAL_BATCH SIZE THREADS

The global batch and the machine's threads are split evenly between the N processes. Rank 0 writes
``OUT_DIR/result.json``: the training history and the metrics of ``EVAL_CKPT`` (``-``: this run's own
``last.pt``) evaluated by all N processes together, each process on one thread (float32 kernels may
round differently at different thread counts, which is not what is compared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from kdfiqa.checkpoint import load_weights
from kdfiqa.data import FIQADataset, build_transform
from kdfiqa.distill import Supervised
from kdfiqa.engine import TrainConfig, Trainer, evaluate_model, init_distributed, shutdown_distributed
from kdfiqa.models import create_model

MODEL = "mobilenetv3_small_fiqa"


def main(argv: list[str]) -> None:
    data_dir, out, eval_ckpt, epochs, global_batch, size, threads = argv
    data_dir, out = Path(data_dir), Path(out)
    ctx = init_distributed("cpu")
    torch.set_num_threads(max(1, int(threads) // ctx.world_size))
    train_threads = torch.get_num_threads()
    torch.manual_seed(0)
    transform = build_transform({"mode": "resize", "size": int(size)})
    train = FIQADataset(data_dir / "train" / "images", data_dir / "train" / "synthetic_labels.csv", transform=transform)
    val = FIQADataset(data_dir / "val" / "images", data_dir / "val" / "synthetic_labels.csv", transform=transform)
    config = TrainConfig(output_dir=str(out), epochs=int(epochs), batch_size=int(global_batch) // ctx.world_size,
                         val_batch_size=4, device="cpu", quiet=True)
    history = Trainer(Supervised(create_model(MODEL, pretrained=False), "mse"), train, val, config).fit()
    model = create_model(MODEL, pretrained=False)
    load_weights(model, out / "last.pt" if eval_ckpt == "-" else eval_ckpt)
    torch.set_num_threads(1)  # the same kernels in every process, whatever the world size
    metrics, _ = evaluate_model(model, val, ctx, batch_size=4)
    if ctx.is_main:
        result = {"world_size": ctx.world_size, "threads_per_process": train_threads,
                  "history": history, "eval": metrics}
        (out / "result.json").write_text(json.dumps(result, default=float))
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
