"""Teacher cost: an online EMOv2-5M teacher at 512 against two caches of its scores, for the seed's pair.

Online, every training step runs the frozen teacher on the 512x512 teacher view of the student's crop
(the 2077Agent pipeline: RandCropOrResize 512 + flip, student view 224). The whole-image cache scores
every image once (:func:`kdfiqa.distill.pseudo_label`, whole image at 512) into a CSV, the student
training against :class:`kdfiqa.distill.Teacher` built from it: fast, but one score per image, not
per crop. The crop-level cache (:func:`kdfiqa.distill.build_view_cache`, FKD) stores K random views
of each image with the teacher's score on each, and a cached epoch trains on one stored view per
image. Epochs of the three runs alternate; the figures are ratios of their median epoch times
(``Trainer`` history ``time``). The KD gain of the crop cache against online KD is measured by
``benchmarks/kd_gain.py``.

Goal: epochs at least 3x faster with either cache.
"""

from __future__ import annotations

import statistics
import time

import torch

from kdfiqa.data import FIQADataset, UnlabeledImageFolder, build_transform, make_synthetic_fiqa
from kdfiqa.distill import CachedTeacher, CachedViews, Distiller, Teacher, build_view_cache, pseudo_label
from kdfiqa.engine import TrainConfig, Trainer
from kdfiqa.models import create_model

from .common import SHARED_MACHINE_NOTE, scratch_dir

TITLE = "Teacher cost: online vs cached scores"
TEACHER, STUDENT = "emo2_5m", "emo2_1m"
TEACHER_SIZE = 512
MIN_SPEEDUP = 3.0
STUDENT_VIEWS = {"mode": "randcrop_or_resize", "size": 224, "crop": 512, "flip": True}
VIEWS = 4
VIEW_ROW = f"crop-level cache ({VIEWS} views)"


def _epoch_seconds(teacher: Teacher, data: FIQADataset, batch: int, out: str) -> float:
    torch.manual_seed(0)
    student = create_model(STUDENT, pretrained=False)
    objective = Distiller(teacher, student, task_loss="mse", distill_loss="temperature_mse")
    config = TrainConfig(output_dir=out, epochs=1, batch_size=batch, scheduler="none", device="cpu",
                         quiet=True)
    return Trainer(objective, data, None, config).fit()[-1]["time"]


def run(quick: bool) -> dict:
    n, batch, repeats = (4, 2, 2) if quick else (24, 8, 3)
    torch.manual_seed(0)
    network = create_model(TEACHER, pretrained=False)
    online_teacher = Teacher(network, input_size=TEACHER_SIZE)
    with scratch_dir("teacher-cost") as folder:
        synthetic = make_synthetic_fiqa(folder / "data", n, size=TEACHER_SIZE, seed=0)
        start = time.perf_counter()
        pseudo_label(online_teacher,
                     UnlabeledImageFolder(synthetic.image_dir,
                                          transform=build_transform({"mode": "resize", "size": TEACHER_SIZE})),
                     folder / "teacher_scores.csv", batch_size=batch)
        cache_seconds = time.perf_counter() - start
        cached_teacher = Teacher(folder / "teacher_scores.csv")
        online_data = FIQADataset(synthetic.image_dir, synthetic.labels,
                                  transform=build_transform({**STUDENT_VIEWS, "teacher_size": TEACHER_SIZE}))
        cached_data = FIQADataset(synthetic.image_dir, synthetic.labels, transform=build_transform(STUDENT_VIEWS))
        start = time.perf_counter()
        view_cache = build_view_cache(online_teacher, online_data, views=VIEWS, batch_size=batch)
        view_seconds = time.perf_counter() - start
        view_data = CachedViews(online_data, view_cache)
        view_teacher = Teacher(CachedTeacher())
        times: dict[str, list[float]] = {"online teacher": [], "cached scores": [], VIEW_ROW: []}
        for r in range(repeats):
            print(f"  repeat {r + 1}/{repeats}", flush=True)
            times["online teacher"].append(_epoch_seconds(online_teacher, online_data, batch, str(folder / "on")))
            times["cached scores"].append(_epoch_seconds(cached_teacher, cached_data, batch, str(folder / "off")))
            times[VIEW_ROW].append(_epoch_seconds(view_teacher, view_data, batch, str(folder / "views")))
    medians = {k: statistics.median(v) for k, v in times.items()}
    speedup = medians["online teacher"] / medians["cached scores"]
    view_speedup = medians["online teacher"] / medians[VIEW_ROW]
    rows = [{"teacher": k, "median epoch s": v, "images/s": n / v,
             "speed-up": medians["online teacher"] / v} for k, v in medians.items()]
    rows.append({"teacher": "building the whole-image cache (once)", "median epoch s": cache_seconds,
                 "images/s": n / cache_seconds, "speed-up": "-"})
    rows.append({"teacher": f"building the {VIEWS}-view cache (once)", "median epoch s": view_seconds,
                 "images/s": n / view_seconds, "speed-up": "-"})
    saved = medians["online teacher"] - medians["cached scores"]
    notes = [
        f"{TEACHER} teacher at {TEACHER_SIZE} -> {STUDENT} student at 224, {n} synthetic {TEACHER_SIZE}x"
        f"{TEACHER_SIZE} images, batch {batch}, {repeats} alternating epochs each, CPU, "
        f"{torch.get_num_threads()} threads",
        f"measured speed-up {speedup:.2f}x (goal >= {MIN_SPEEDUP:g}x); the cache pays for itself after "
        f"{cache_seconds / saved:.1f} epochs" if saved > 0 else f"measured speed-up {speedup:.2f}x",
        f"crop-level cache: {view_speedup:.2f}x; it stores {VIEWS} random views (box and flip) of each image "
        "with the teacher's score on each, so the student keeps a crop-level teacher signal; building it costs "
        f"{VIEWS} teacher passes per image, repaid after {view_seconds / max(medians['online teacher'] - medians[VIEW_ROW], 1e-9):.1f} epochs",
        "the whole-image cache holds one score per image (whole image at 512), not one per random crop: it "
        "trades the crop-level teacher signal for speed",
        SHARED_MACHINE_NOTE,
    ]
    if speedup < MIN_SPEEDUP:
        notes.insert(2, "gap: the student's forward and backward and the decoding of 512x512 images "
                        "take a larger share of the epoch than the teacher's forward here")
    return {
        "title": TITLE,
        "goal": f"epochs with cached teacher scores (whole-image and crop-level caches) at least "
                f"{MIN_SPEEDUP:g}x faster than with the online {TEACHER} teacher at {TEACHER_SIZE}",
        "met": speedup >= MIN_SPEEDUP and view_speedup >= MIN_SPEEDUP,
        "columns": ["teacher", "median epoch s", "images/s", "speed-up"],
        "rows": rows,
        "notes": notes,
    }
