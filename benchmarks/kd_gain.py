"""KD gain: the same student trained with and without a teacher, three seeds, on synthetic faces.

A teacher (MobileNetV3-Large with the quality head) is first trained on the labels; then for each seed
the student (MobileNetV3-Small) is trained on the same labels either alone (:class:`Supervised`, MSE)
or under the frozen teacher (:class:`Distiller`, MSE + temperature MSE on the teacher's logits), with
the same data, epochs, optimiser and initial weights. The table gives the last epoch's validation
SRCC, PLCC and challenge score as mean ± standard deviation over the seeds. The data are the synthetic
faces of :func:`kdfiqa.data.make_synthetic_fiqa` at low resolution, so that the whole study fits in a
few CPU minutes; it shows whether distillation helps on this data, not on the challenge's.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdfiqa.data import FIQADataset, build_transform, make_synthetic_fiqa
from kdfiqa.distill import Distiller, Supervised, Teacher
from kdfiqa.engine import TrainConfig, Trainer
from kdfiqa.models import create_model

from .common import scratch_dir

TITLE = "KD gain on synthetic faces"
TEACHER, STUDENT = "mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa"
SEEDS = (0, 1, 2)
METRICS = ("srcc", "plcc", "score")


def _fit(objective: nn.Module, train: FIQADataset, val: FIQADataset, epochs: int, seed: int, out: Path) -> dict:
    config = TrainConfig(output_dir=str(out), epochs=epochs, batch_size=16, lr=2e-3, seed=seed,
                         device="cpu", quiet=True)
    return Trainer(objective, train, val, config).fit()[-1]["val"]


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def run(quick: bool) -> dict:
    n_train, n_val, size, epochs = (48, 24, 48, 3) if quick else (384, 128, 96, 10)
    transform = {"mode": "resize", "size": size, "flip": True}
    results: dict[str, list[dict[str, Any]]] = {"without KD": [], "with KD": []}
    with scratch_dir("kd-gain") as folder:
        paths = {"train": make_synthetic_fiqa(folder / "train", n_train, size=size, seed=0),
                 "val": make_synthetic_fiqa(folder / "val", n_val, size=size, seed=1)}
        train, val = (FIQADataset(p.image_dir, p.labels, transform=build_transform(
            transform if split == "train" else {"mode": "resize", "size": size})) for split, p in paths.items())
        print("  teacher", flush=True)
        torch.manual_seed(0)
        network = create_model(TEACHER, pretrained=False)
        teacher_val = _fit(Supervised(network, "mse"), train, val, 2 * epochs, 0, folder / "teacher")
        teacher = Teacher(network, input_size=size)
        for seed in SEEDS:
            print(f"  seed {seed}", flush=True)
            torch.manual_seed(seed)
            initial = create_model(STUDENT, pretrained=False)
            plain = create_model(STUDENT, pretrained=False)
            plain.load_state_dict(initial.state_dict())
            results["without KD"].append(_fit(Supervised(plain, "mse"), train, val, epochs, seed,
                                              folder / f"plain{seed}"))
            results["with KD"].append(_fit(Distiller(teacher, initial, task_loss="mse",
                                                     distill_loss="temperature_mse"),
                                           train, val, epochs, seed, folder / f"kd{seed}"))
    rows = [{"run": f"teacher {TEACHER} (seed 0)", **{m: f"{teacher_val[m]:.4f}" for m in METRICS}}]
    rows += [{"run": f"student {STUDENT} {name}", **{m: _mean_std([r[m] for r in runs]) for m in METRICS}}
             for name, runs in results.items()]
    gain = {m: statistics.mean(r[m] for r in results["with KD"]) - statistics.mean(r[m] for r in results["without KD"])
            for m in METRICS}
    return {
        "title": TITLE,
        "goal": "",
        "met": None,
        "columns": ["run", *METRICS],
        "rows": rows,
        "notes": [
            f"{n_train} train / {n_val} validation synthetic faces at {size}x{size}, batch 16, AdamW lr 2e-3, "
            f"cosine; students {epochs} epochs, teacher {2 * epochs}; seeds {', '.join(map(str, SEEDS))}; "
            "metrics of the last epoch on the validation faces",
            "mean gain with KD: " + ", ".join(f"{m} {gain[m]:+.4f}" for m in METRICS),
            "the teacher is trained here from scratch on the same few images; it bounds what the student "
            "can learn from it (kdfiqa/demo.py, the project's demo, was not available when this was written: "
            "the data are built directly with make_synthetic_fiqa)",
        ],
    }
