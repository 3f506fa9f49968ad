"""Data pipeline throughput: decode + resize + augment with kdfiqa.data against the training step.

JPEG faces (quality 95, portrait 4:5) with short edges from 224 to 1024 px, as in the challenge, are
read through :class:`kdfiqa.data.FIQADataset` and a :class:`torch.utils.data.DataLoader` (batch 16)
with 0 and 2 workers, for two of the seed's training transforms: ``resize`` to 224 + flip (BIT_ssvgg)
and ``random_crop`` 224 + flip (DERS, the challenge baseline). The loader's images/s (median over
epochs, workers kept alive between them) is compared with the images/s of the training step it feeds:
the seed's student (EMOv2-1M) at 224, MSE, AdamW, on batches already in memory. A last row shows a
pre-resized cache (the 1024 px images stored at short edge 256) for the resize transform.

Goal (issue 7): with 2 workers the loader keeps up with the step at every image size.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from kdfiqa.data import FIQADataset, build_transform, make_synthetic_fiqa
from kdfiqa.distill import Supervised
from kdfiqa.models import create_model

from .common import SHARED_MACHINE_NOTE, median_seconds, scratch_dir

TITLE = "Data pipeline throughput"
SHORT_EDGES = (224, 512, 768, 1024)
CACHE_SHORT_EDGE = 256
BATCH = 16
WORKERS = 2
TRANSFORMS = {
    "resize 224 + flip": {"mode": "resize", "size": 224, "flip": True},
    "random_crop 224 + flip": {"mode": "random_crop", "size": 224, "flip": True},
}


def _write_jpegs(sources: list[Path], scores: list[str], folder: Path, short_edge: int) -> Path:
    """Upscale ``sources`` to ``short_edge`` x 1.25 ``short_edge`` JPEGs in ``folder``; return the CSV."""
    folder.mkdir(parents=True)
    rows = []
    for source, score in zip(sources, scores):
        name = source.with_suffix(".jpg").name
        with Image.open(source) as img:
            img.convert("RGB").resize((short_edge, round(short_edge * 1.25)), Image.Resampling.BICUBIC).save(
                folder / name, quality=95)
        rows.append((name, score))
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return labels


def _loader_images_per_s(dataset: FIQADataset, workers: int, epochs: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    times = []
    for epoch in range(epochs + 1):  # the first epoch starts the workers: not timed
        start = time.perf_counter()
        for _ in loader:
            pass
        if epoch:
            times.append(time.perf_counter() - start)
    return len(dataset) / statistics.median(times)


def _step_images_per_s(repeats: int) -> float:
    torch.manual_seed(0)
    objective = Supervised(create_model("emo2_1m", pretrained=False), "mse").train()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, weight_decay=1e-5)
    batch = {"image": torch.randn(BATCH, 3, 224, 224), "score": torch.rand(BATCH)}

    def step() -> None:
        loss = objective(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return BATCH / median_seconds(step, repeats=repeats)


def run(quick: bool) -> dict:
    n, epochs, repeats = (16, 1, 3) if quick else (64, 3, 5)
    step = _step_images_per_s(repeats)
    rows = []
    with scratch_dir("data-pipeline") as folder:
        synthetic = make_synthetic_fiqa(folder / "faces", n, size=256, seed=0)
        with open(synthetic.labels, newline="") as f:
            labelled = list(csv.reader(f))
        sources = [synthetic.image_dir / name for name, _ in labelled]
        scores = [score for _, score in labelled]
        sets = {f"{edge} px": (folder / str(edge), _write_jpegs(sources, scores, folder / str(edge), edge))
                for edge in SHORT_EDGES}
        cached = folder / f"cache{CACHE_SHORT_EDGE}"
        sets[f"1024 px cached at {CACHE_SHORT_EDGE}"] = (
            cached, _write_jpegs(sources, scores, cached, CACHE_SHORT_EDGE))
        for label, (root, labels) in sets.items():
            for transform_name, spec in TRANSFORMS.items():
                if label.startswith("1024 px cached") and spec["mode"] != "resize":
                    continue  # a crop of a downscaled image is not the same augmentation
                print(f"  {label}, {transform_name}", flush=True)
                dataset = FIQADataset(root, labels, transform=build_transform(spec))
                single = _loader_images_per_s(dataset, 0, epochs)
                parallel = _loader_images_per_s(dataset, WORKERS, epochs)
                rows.append({"short edge": label, "transform": transform_name, "0 workers img/s": single,
                             f"{WORKERS} workers img/s": parallel, "step img/s": step,
                             "keeps up": parallel >= step})
    short = [r for r in rows if not r["keeps up"]]
    notes = [
        f"training step: emo2_1m at 224, batch {BATCH}, MSE + AdamW, in-memory batches: {step:.1f} images/s",
        f"{n} synthetic faces per size, upscaled from 256 px and saved as JPEG quality 95: smoother than "
        "photographs, so they decode somewhat faster than real faces of the same size",
        f"this machine has {os.cpu_count()} cores: {WORKERS} loader workers and the step share them, "
        "so the loader measured alone is an upper bound of what it delivers during training",
        SHARED_MACHINE_NOTE,
    ]
    if short:
        worst = min(short, key=lambda r: r[f"{WORKERS} workers img/s"])
        notes.insert(1, f"gap: {len(short)} setting(s) fall short, worst {worst['short edge']} with "
                        f"{worst['transform']}: {worst[f'{WORKERS} workers img/s']:.1f} vs {step:.1f} images/s; "
                        "decoding large JPEGs dominates: pre-resize them to a short edge of "
                        f"{CACHE_SHORT_EDGE} (see the cached row)")
    return {
        "title": TITLE,
        "goal": f"with {WORKERS} workers, decoding + resizing + augmenting keeps up with the training step "
                "for short edges 224-1024",
        "met": not short,
        "columns": ["short edge", "transform", "0 workers img/s", f"{WORKERS} workers img/s", "step img/s",
                    "keeps up"],
        "rows": rows,
        "notes": notes,
    }
