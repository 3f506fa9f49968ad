"""``kdfiqa predict`` throughput: where the time of scoring a folder goes, decoding or the model.

500 images of 512x512 (half JPEG quality 90, half PNG; smooth random colour fields with grain, made
at run time in a scratch folder; 32 in quick mode) are scored by :func:`kdfiqa.inference.predict_images`
(the library behind ``kdfiqa predict``, default settings: batch 32, no workers, device ``auto``, the
default student EMOv2-1M at its deploy size 224 in its verified inference form). The same work is
then split:

* ``decode + transform``: the data loader alone (open, decode, resize to 224, normalise, batch);
* ``model (inference form)`` and ``model (training form)``: the model alone on the batches the
  loader produced, already decoded and in memory (on the GPU when there is one, as ``predict``
  would run; the clock waits for the device).

Each is the median of interleaved repeats (:func:`benchmarks.common.interleaved_medians`).

Goal (issue 16): predict is bounded by decoding, not by the model: decoding + transform takes at
least as long as the inference-form model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kdfiqa.data.datasets import ImageSamples
from kdfiqa.inference import load_inference_model, predict_images

from .common import SHARED_MACHINE_NOTE, interleaved_medians, scratch_dir

TITLE = "kdfiqa predict: decoding vs model"
MODEL = "emo2_1m"
IMAGE_SIDE = 512
BATCH = 32


def _settings(quick: bool) -> dict[str, Any]:
    return {"images": 32, "repeats": 1} if quick else {"images": 500, "repeats": 3}


def write_images(folder: Path, count: int, side: int = IMAGE_SIDE, seed: int = 0) -> list[Path]:
    """``count`` side x side images in ``folder``, alternately JPEG (quality 90) and PNG: an 8x8 random
    colour field upscaled bicubically, plus Gaussian grain (so that they compress like photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        field = Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).resize(
            (side, side), Image.Resampling.BICUBIC)
        pixels = np.asarray(field, dtype=np.float32) + rng.normal(0, 6, size=(side, side, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if i % 2 == 0:
            path = folder / f"img{i:04d}.jpg"
            image.save(path, quality=90)
        else:
            path = folder / f"img{i:04d}.png"
            image.save(path)
        paths.append(path)
    return paths


def run(quick: bool) -> dict:
    settings = _settings(quick)
    fused = load_inference_model(MODEL)
    plain = load_inference_model(MODEL, fuse=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fused.model.to(device)
    plain.model.to(device)
    with scratch_dir("predict") as folder:
        images = folder / "images"
        write_images(images, settings["images"])
        dataset = ImageSamples.from_paths([images], transform=fused.transform())
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=0)
        decoded = [batch["image"].to(device) for batch in loader]

        def decode() -> None:
            for _ in loader:
                pass

        def model_only(model: torch.nn.Module) -> Any:
            def run_model() -> None:
                with torch.inference_mode():
                    for x in decoded:
                        model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return run_model

        seconds = interleaved_medians({
            "predict_images (end to end)": lambda: predict_images(fused, [images], batch_size=BATCH),
            "decode + transform": decode,
            "model (inference form)": model_only(fused.model),
            "model (training form)": model_only(plain.model),
        }, repeats=settings["repeats"])
    n = settings["images"]
    total = seconds["predict_images (end to end)"]
    rows = [{"stage": stage, "seconds": s, "images/s": n / s, "% of predict": 100.0 * s / total}
            for stage, s in seconds.items()]
    decoding, model = seconds["decode + transform"], seconds["model (inference form)"]
    met = decoding >= model
    notes = [
        f"{n} images of {IMAGE_SIDE}x{IMAGE_SIDE} (half JPEG, half PNG), {MODEL} at 224 in its inference form "
        f"(verified: {fused.fused}), batch {BATCH}, no loader workers, {torch.get_num_threads()} torch threads, "
        f"model on {device.type}",
        f"decode + transform {decoding:.2f} s vs model {model:.2f} s: predict is bounded by "
        + ("decoding" if met else f"the model (decoding is {decoding / model:.2f}x the model time)"),
        f"decode + transform + model = {decoding + model:.2f} s of {total:.2f} s end to end; the inference form "
        f"runs the model {seconds['model (training form)'] / model:.2f}x as fast as the training form",
        SHARED_MACHINE_NOTE,
    ]
    return {
        "title": TITLE,
        "goal": "predict is bounded by decoding, not by the model (decode + transform >= model time)",
        "met": met,
        "columns": ["stage", "seconds", "images/s", "% of predict"],
        "rows": rows,
        "notes": notes,
    }
