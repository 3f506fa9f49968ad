"""Scale: one process against two under torchrun (gloo on CPU), same global batch and threads.

Both runs train MobileNetV3-Small with the quality head (MSE, quick to learn from scratch) on the same synthetic faces with the same global
batch, the machine's threads split between the processes (:mod:`benchmarks.scale_worker`), and once
more as one process with one thread, the baseline both are compared with. Then the one-process
run's checkpoint is evaluated by one process and by two (each scoring half of the
validation set, predictions gathered on rank 0): the metrics must be identical.

Goal (issue 7): throughput from one process to two, and identical metrics. There is no GPU here, so
NCCL is not measured; on this CPU two processes share the same cores that one process uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from kdfiqa.data import make_synthetic_fiqa

from .common import REPO, scratch_dir

TITLE = "Scale: 1 vs 2 processes (torchrun, gloo, CPU)"
METRICS = ("srcc", "plcc", "krcc", "rmse", "score")


def _torchrun(processes: int, data: Path, out: Path, eval_ckpt: str, epochs: int, batch: int, size: int,
              threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, threads // processes))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "benchmarks.scale_worker", str(data), str(out), eval_ckpt, str(epochs), str(batch), str(size),
           str(threads)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "result.json").read_text())


def run(quick: bool) -> dict:
    n_train, n_val, epochs, batch, size = (32, 16, 2, 8, 96) if quick else (96, 32, 3, 16, 224)
    threads = os.cpu_count() or 1
    with scratch_dir("scale") as folder:
        make_synthetic_fiqa(folder / "data" / "train", n_train, size=size, seed=0)
        make_synthetic_fiqa(folder / "data" / "val", n_val, size=size, seed=1)
        print("  1 process", flush=True)
        one = _torchrun(1, folder / "data", folder / "one", "-", epochs, batch, size, threads)
        checkpoint = str(folder / "one" / "last.pt")
        print("  1 process, 1 thread", flush=True)
        single = _torchrun(1, folder / "data", folder / "single", checkpoint, epochs, batch, size, 1)
        print("  2 processes", flush=True)
        two = _torchrun(2, folder / "data", folder / "two", checkpoint, epochs, batch, size, threads)
    rows = []
    for result in (single, one, two):
        last = result["history"][-1]
        rows.append({"processes": result["world_size"], "threads each": result["threads_per_process"],
                     "train img/s (last epoch)": last["images_per_s"],
                     "val SRCC of its own training": last["val"]["srcc"],
                     **{f"{m} of 1-process checkpoint": result["eval"][m] for m in ("srcc", "plcc", "score")}})
    others = (single, two)
    identical = all(other["eval"][m] == one["eval"][m] for other in others for m in (*METRICS, "n"))
    rate = {name: r["train img/s (last epoch)"] for name, r in zip(("single", "one", "two"), rows)}
    notes = [
        f"mobilenetv3_small_fiqa, MSE, {n_train} train / {n_val} val synthetic faces at {size}x{size}, global batch {batch}, "
        f"{epochs} epochs, images decoded in each training process (no loader workers); {threads} threads "
        "in all, split between the processes, and a one-thread run as the baseline",
        f"throughput, last epoch: one process with {threads} threads {rate['one'] / rate['single']:.2f}x its "
        f"one-thread rate; two processes of one thread each {rate['two'] / rate['single']:.2f}x it "
        f"({rate['two'] / rate['one']:.2f}x the one process with {threads} threads). All runs share the "
        f"same {threads} CPU cores: the ratios compare splitting every layer between threads with "
        "splitting the batch between processes (which also decode their images in parallel); there is "
        "no GPU here and NCCL is not measured",
        "the one-process checkpoint evaluated by every run (1 process, and 2 processes each scoring "
        "half) gives " + ("identical metrics (srcc, plcc, krcc, rmse, score, n compared exactly)" if identical
                          else "metrics that differ by at most "
                          f"{max(abs(o['eval'][m] - one['eval'][m]) for o in others for m in METRICS):.1e}: "
                          "not bit-identical"),
        "every evaluation runs one thread per process, so each image meets the same float32 kernels",
        "the training runs are not the same computation: with two processes each normalises its own "
        "half-batch in batch norm (SyncBatchNorm needs GPUs), and one or two threads sum in a different "
        "order, so the runs drift apart and their own validation metrics differ (here on "
        f"{n_val} barely trained validation images)",
        "the three runs follow one another (not interleaved), so other jobs' load moves the ratios as "
        "well as the absolute figures (load_average_1min in the JSON, taken when the result was written)",
    ]
    return {
        "title": TITLE,
        "goal": "identical metrics from 1 and 2 processes; throughput reported (no GPU here)",
        "met": identical,
        "columns": list(rows[0]),
        "rows": rows,
        "notes": notes,
    }
