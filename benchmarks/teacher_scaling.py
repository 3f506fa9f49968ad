"""Teacher scaling: images/s of teacher scoring (pseudo-labelling) in 1 and 2 processes.

Each run is ``torchrun`` with one or two processes (gloo on CPU, one thread each) scoring the same
generated faces with the same teacher (EMO2-5M at 224, fixed weights) through
:func:`kdfiqa.distill.score_with_teacher`, the sharded scorer every teacher pass uses: each process
scores its contiguous share of whole batches, and the scores are gathered in order. The timed span
is the scoring alone (the teacher is built and one warm-up batch scored first), from a barrier
before to a barrier after, so the slowest rank sets it. With a CUDA GPU, one more run scores on one
GPU (NCCL) with bf16 autocast and channels-last; without one that row is left out and said so.

Goal (issue 23): the scores of 2 processes equal those of 1 to the bit; images/s reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import REPO, scratch_dir

TITLE = "Teacher scaling: pseudo-labelling images/s, 1 vs 2 processes"
MODEL, SIZE, BATCH = "emo2_5m", 224, 16


def _worker(images: str, out: str, device: str, amp: str, channels_last: bool) -> None:
    """One rank of a run: score ``images`` and (rank 0) write the timing and scores to ``out``."""
    import torch

    from kdfiqa.data import UnlabeledImageFolder, build_transform
    from kdfiqa.distill import Teacher, score_with_teacher
    from kdfiqa.engine.distributed import init_distributed, shutdown_distributed
    from kdfiqa.models import create_model

    torch.set_num_threads(1)
    ctx = init_distributed(device)
    torch.manual_seed(0)  # the same weights on every rank and in every run
    teacher = Teacher(create_model(MODEL).eval(), input_size=SIZE, device=ctx.device)
    if channels_last and ctx.device.type == "cuda":
        teacher.to(memory_format=torch.channels_last)
    folder = UnlabeledImageFolder(images, transform=build_transform(teacher.eval_transform))
    warm = torch.utils.data.Subset(folder, list(range(BATCH)))
    score_with_teacher(teacher, warm, batch_size=BATCH, ctx=ctx, amp=amp, channels_last=channels_last)
    ctx.barrier()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = score_with_teacher(teacher, folder, batch_size=BATCH, ctx=ctx, amp=amp, channels_last=channels_last)
    ctx.barrier()
    seconds = time.perf_counter() - start
    if ctx.is_main:
        Path(out).write_text(json.dumps({"world_size": ctx.world_size, "seconds": seconds, "images": len(folder),
                                         "names": scores.names, "scores": scores.scores.tolist()}))
    shutdown_distributed()


def _launch(processes: int, images: Path, out: Path, device: str = "cpu", amp: str = "none",
            channels_last: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "benchmarks.teacher_scaling", str(images), str(out), device, amp, str(int(channels_last))]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def run(quick: bool) -> dict:
    import torch

    from kdfiqa.data import make_synthetic_fiqa

    n = 64 if quick else 320
    with scratch_dir("teacher-scaling") as folder:
        images = make_synthetic_fiqa(folder / "faces", n, size=SIZE, seed=0).image_dir
        print("  1 process", flush=True)
        one = _launch(1, images, folder / "one.json")
        print("  2 processes", flush=True)
        two = _launch(2, images, folder / "two.json")
        gpu = None
        if torch.cuda.is_available():
            print("  1 GPU, bf16, channels-last", flush=True)
            gpu = _launch(1, images, folder / "gpu.json", device="cuda", amp="bf16", channels_last=True)
    rows = [{"run": f"{r['world_size']} process(es), gloo, CPU, 1 thread each", "images": r["images"],
             "seconds": r["seconds"], "images/s": r["images"] / r["seconds"]} for r in (one, two)]
    if gpu is not None:
        rows.append({"run": "1 GPU, NCCL, bf16 autocast, channels-last", "images": gpu["images"],
                     "seconds": gpu["seconds"], "images/s": gpu["images"] / gpu["seconds"]})
    identical = one["names"] == two["names"] and one["scores"] == two["scores"]
    ratio = rows[1]["images/s"] / rows[0]["images/s"]
    notes = [
        f"{MODEL} teacher at {SIZE}x{SIZE} (random weights, seed 0), {n} generated faces, batch {BATCH}, "
        "images decoded by the scoring processes (no loader workers); the timed span excludes start-up "
        "and one warm-up batch",
        f"2 processes score {ratio:.2f}x the images/s of 1 on this machine "
        f"({os.cpu_count()} cores, shared with other jobs: load_average_1min in the JSON)",
        "the 2-process scores equal the 1-process scores " + ("to the bit" if identical else
                                                              "NOT to the bit"),
        "1 GPU with NCCL, bf16 autocast and channels-last: " + ("measured above" if gpu is not None else
                                                                "not measured (no CUDA GPU on this machine)"),
    ]
    return {"title": TITLE, "goal": "2-process scores identical to 1-process scores; images/s reported",
            "met": identical, "columns": list(rows[0]), "rows": rows, "notes": notes, "ratio_2_to_1": ratio}


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
