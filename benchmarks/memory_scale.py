"""Memory flat in the data size: the pre-flight decode check, ``kdfiqa pseudo-label`` and a first
training epoch over 1k, 10k and 50k small images.

50,000 32x32 PNGs (noise, in folders of 1,000) are generated once into a scratch folder; each size
uses the first N of them, named by an image list file (``--images list.txt``) and a labels CSV. For
each size, each step runs in a fresh interpreter (``OMP_NUM_THREADS=1``), whose peak resident set
(``ru_maxrss`` of that process, from ``os.wait4``) and wall time are read:

* the pre-flight check (:func:`kdfiqa.data.validate_images` over the labels CSV's images): first
  with an empty decode-check cache and 2 worker processes, then again (every image cached); the
  seconds are those of the check alone, inside the process;
* ``kdfiqa pseudo-label`` with a registered ``mobilenetv3_small_fiqa`` teacher at 32 px, batch 256,
  no loader workers (so every byte is in the measured process);
* ``kdfiqa train`` of the same network at 32 px for one epoch, batch 256, no loader workers, 10%
  validation split (its own decode check finds the images cached by the pre-flight step).

Goal (issue 23): peak RSS grows by less than 10% from 1k to 50k images; time grows linearly (the
marginal seconds per 1,000 more images, size to size, about constant).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .common import REPO, SHARED_MACHINE_NOTE, scratch_dir

TITLE = "Memory flat in the data size: pre-flight check, pseudo-label, first epoch"
SIZES = (1_000, 10_000, 50_000)
QUICK_SIZES = (200, 1_000)
MODEL = "mobilenetv3_small_fiqa"
INPUT = 32
BATCH = 256
"""Batch of pseudo-labelling and training (half the images where that is fewer, in quick mode)."""
RSS_GROWTH_GOAL = 0.10

CHECK = """
import sys, time
from kdfiqa.data import FIQADataset, validate_images
dataset = FIQADataset(sys.argv[1], sys.argv[2])
start = time.perf_counter()
validate_images(dataset, num_workers=2)
print(time.perf_counter() - start)
"""
CLI = "import sys; from kdfiqa.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _generate(root: Path, count: int) -> list[str]:
    """``count`` 32x32 noise PNGs under ``root``, 1,000 per folder; their names relative to ``root``."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"{i // 1000:03d}/{i:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (INPUT, INPUT, 3), dtype=np.uint8)).save(root / name, compress_level=1)
        names.append(name)
    return names


def _measure(code: str, args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of ``python -c code args`` in a fresh interpreter; the
    peak is that process's own (``os.wait4``), not its children's."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO, stdout=out, stderr=err,
                                   text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{args[:2]} failed ({process.returncode}): {err.read().strip().splitlines()[-1:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def _run_one(root: Path, names: list[str], count: int, scratch: Path, env: dict[str, str]) -> dict:
    listing, labels = scratch / f"list_{count}.txt", scratch / f"labels_{count}.csv"
    listing.write_text("".join(f"{root.name}/{n}\n" for n in names[:count]))
    scores = np.random.default_rng(count).uniform(0, 1, count)
    labels.write_text("".join(f"{n},{s:.4f}\n" for n, s in zip(names[:count], scores)))
    env = {**env, "KDFIQA_CACHE_DIR": str(scratch / f"cache_{count}")}
    batch = str(min(BATCH, count // 2))  # quick sizes: a full training batch still
    cold = float(_measure(CHECK, [str(root), str(labels)], env)[2])
    warm = float(_measure(CHECK, [str(root), str(labels)], env)[2])
    label_s, label_rss, _ = _measure(CLI, ["pseudo-label", "--teacher", MODEL, "--teacher-input", str(INPUT),
                                           "--images", str(listing), "--out", str(scratch / f"pseudo_{count}.csv"),
                                           "--batch-size", batch, "--workers", "0", "--device", "cpu"], env)
    train_s, train_rss, _ = _measure(CLI, ["train", "--model", MODEL, "--input", str(INPUT), "--root", str(root),
                                           "--csv", str(labels), "--epochs", "1", "--batch-size", batch,
                                           "--workers", "0", "--val-fraction", "0.1", "--device", "cpu",
                                           "--quiet", "--out", str(scratch / f"run_{count}")], env)
    return {"images": count, "batch": int(batch), "check s (cold, 2 workers)": cold, "check s (cached)": warm,
            "pseudo-label s": label_s, "pseudo-label peak RSS MiB": label_rss,
            "train epoch s": train_s, "train peak RSS MiB": train_rss}


def run(quick: bool) -> dict:
    sizes = QUICK_SIZES if quick else SIZES
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with scratch_dir("memory") as scratch:
        root = scratch / "faces"
        names = _generate(root, max(sizes))
        rows = [_run_one(root, names, count, scratch, env) for count in sizes]
    first, last = rows[0], rows[-1]
    growth = {kind: last[f"{kind} peak RSS MiB"] / first[f"{kind} peak RSS MiB"] - 1
              for kind in ("pseudo-label", "train")}
    per_k = {kind: [(b[column] - a[column]) / (b["images"] - a["images"]) * 1000 for a, b in zip(rows, rows[1:])]
             for kind, column in (("check", "check s (cold, 2 workers)"), ("pseudo-label", "pseudo-label s"),
                                  ("train epoch", "train epoch s"))}
    notes = [
        f"peak RSS growth from {first['images']} to {last['images']} images: pseudo-label "
        f"{growth['pseudo-label']:+.1%}, first training epoch {growth['train']:+.1%} (goal < {RSS_GROWTH_GOAL:.0%})",
        "marginal seconds per 1,000 more images, from each size to the next (equal when time is linear; "
        "the fixed start-up of each fresh interpreter cancels out): " + "; ".join(
            f"{kind} " + ", ".join(f"{v:.2f}" for v in values) for kind, values in per_k.items()),
        "wall times (pseudo-label, train) include each fresh interpreter's start (importing torch); the check's "
        "seconds are measured inside the process",
        SHARED_MACHINE_NOTE,
    ]
    return {"title": TITLE, "goal": f"peak RSS grows < {RSS_GROWTH_GOAL:.0%} from {first['images']} to "
                                    f"{last['images']} images, time linear",
            "met": all(g < RSS_GROWTH_GOAL for g in growth.values()),
            "columns": list(rows[0]), "rows": rows, "notes": notes, "rss_growth": growth,
            "seconds_per_1000": per_k}
