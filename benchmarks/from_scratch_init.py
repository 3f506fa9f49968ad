"""From-scratch initialisation: how many short EMOv2 runs collapse with the official layer scale and with kdfiqa's.

The tour's kind of run: a few dozen labelled faces (:func:`kdfiqa.data.make_synthetic_fiqa`: 40 images
whose scores are derived from known degradation severities), ``kdfiqa train --model emo2_5m`` from
scratch for a few epochs at a small input size, five seeds. Each seed runs twice as fresh
``python -m kdfiqa.cli.main train`` processes, identical but for the initial layer scale: the
official ImageNet value 1e-6 (``--set model.kwargs.layer_scale=1e-6``, what every from-scratch run
used before) and the preset's from-scratch default
(:data:`kdfiqa.models.emo.FROM_SCRATCH_LAYER_SCALE`). A run counts as collapsed when its last
epoch's validation predictions are near-constant (the trainer's ``collapsed`` flag in
``log.jsonl``: spread below :data:`kdfiqa.metrics.COLLAPSE_SPREAD`). Goal: no run with the
from-scratch default collapses. The data are synthetic: this shows whether a short run learns at
all, not how well it rates real faces.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .common import REPO, scratch_dir

TITLE = "From-scratch initialisation (EMOv2 layer scale, short runs)"
SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0,)
IMAGES, IMAGE_SIZE, INPUT, EPOCHS, BATCH, VAL_FRACTION = 40, 64, 64, 4, 8, 0.25
MODEL = "emo2_5m"
VARIANTS = {"official 1e-6": ["--set", "model.kwargs.layer_scale=1e-6"], "from-scratch default": []}
"""Each arm's extra command-line arguments."""


def _train(data: Path, out: Path, seed: int, extra: list[str], epochs: int) -> list[dict]:
    """One ``kdfiqa train`` process; its ``log.jsonl`` records."""
    command = [sys.executable, "-m", "kdfiqa.cli.main", "train", "--model", MODEL, "--root", str(data / "images"),
               "--csv", str(data / "synthetic_labels.csv"), "--epochs", str(epochs), "--input", str(INPUT),
               "--batch-size", str(BATCH), "--val-fraction", str(VAL_FRACTION), "--seed", str(seed),
               "--device", "cpu", "--quiet", "--out", str(out), *extra]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


def run(quick: bool) -> dict:
    from kdfiqa.data import make_synthetic_fiqa
    from kdfiqa.models.emo import FROM_SCRATCH_LAYER_SCALE

    seeds = QUICK_SEEDS if quick else SEEDS
    epochs = 2 if quick else EPOCHS
    rows = []
    with scratch_dir("from-scratch-init") as tmp:
        data = make_synthetic_fiqa(tmp / "data", IMAGES, size=IMAGE_SIZE, seed=0).image_dir.parent
        for label, extra in VARIANTS.items():
            finals = []
            for seed in seeds:
                records = _train(data, tmp / f"{len(rows)}_{seed}", seed, extra, epochs)
                finals.append(records[-1])
            rows.append({
                "layer scale": label if extra else f"{label} ({FROM_SCRATCH_LAYER_SCALE:g})",
                "collapsed runs": f"{sum(bool(r['collapsed']) for r in finals)} of {len(finals)}",
                "median last spread": statistics.median(r["val"]["spread"] for r in finals),
                "median last srcc": statistics.median(r["val"]["srcc"] for r in finals),
                "best last srcc": max(r["val"]["srcc"] for r in finals),
            })
    met = rows[-1]["collapsed runs"].startswith("0 ")
    return {
        "title": TITLE,
        "goal": f"no short from-scratch `kdfiqa train --model {MODEL}` run with the default initialisation "
                "collapses (near-constant validation predictions at the last epoch)",
        "met": met,
        "columns": ["layer scale", "collapsed runs", "median last spread", "median last srcc", "best last srcc"],
        "rows": rows,
        "notes": [
            f"{IMAGES} synthetic faces at {IMAGE_SIZE} px (make_synthetic_fiqa, seed 0), {VAL_FRACTION:g} held out "
            f"for validation; `kdfiqa train --model {MODEL} --input {INPUT} --epochs {epochs} --batch-size {BATCH}`, "
            f"seeds {', '.join(map(str, seeds))}; defaults otherwise (AdamW, lr 5e-4, cosine)",
            "collapsed: the last epoch's validation spread (standard deviation of the predictions) below "
            "kdfiqa.metrics.COLLAPSE_SPREAD; srcc on the held-out images of the last epoch",
            "SRCC on 10 validation images after a few dozen steps says whether the model learns at all, "
            "not how good it is",
        ],
    }
