"""GPU training: step throughput, peak memory and AMP loss curves for the seed's pair, and the loader.

The seed's pair, an EMOv2-5M teacher at 512 and an EMOv2-1M student at 224 (batch 64), is trained
for a few steps in two kinds of step: ``train`` (the student alone, MSE on the labels: kdfiqa's
:class:`~kdfiqa.distill.Supervised`) and ``distill`` (kdfiqa's :class:`~kdfiqa.distill.Distiller`:
MSE on the labels + temperature MSE on the online teacher's logits, the teacher fed its own 512 view
of the student's crop). Each kind runs in these variants, every one from the same initial weights,
seed and batches:

* float32 (TF32 off, so that it is a true float32 reference), and float32 again on batches moved by
  about one float32 rounding step (relative 2^-23, some 30,000 times less than bf16's rounding): the
  control, which shows how much of a curve's deviation is the training's own sensitivity to any
  perturbation (and, on CUDA, to non-deterministic kernels) rather than the format's;
* AMP bf16 and AMP fp16 through kdfiqa's own switch (``TrainConfig.amp``: the autocast and, for
  fp16, the grad scaler of :mod:`kdfiqa.engine.amp`);
* AMP bf16 with channels_last (student and batches converted by the Trainer, the teacher here);
* AMP bf16 with channels_last and ``torch.compile`` of the student's and the teacher's
  ``forward_logits`` (inductor's ``fallback_random``, so that drop path draws eager's masks).

Every step is the Trainer's own (:meth:`Trainer._train_step`: autocast, channels_last, the
finiteness check, grad scaler, AdamW) on batches rendered once by kdfiqa's data set (the 2077Agent
views, :func:`~kdfiqa.data.build_transform` preset ``2077agent_student_train``) and held in host
memory (pinned on CUDA), so the step includes the batch's copy to the device but not the decoding,
which the loader figure measures. A row reports images/s (median step after the warm-up steps, which
include compilation and kernel autotuning), the peak GPU memory (``torch.cuda.max_memory_allocated``;
``null`` on CPU) and the largest relative deviation, over all the steps, of its loss curve from the
float32 curve of its kind, judged against a tolerance of about five units of roundoff of the format
(bf16 keeps 8 significand bits, 2^-8 ~ 3.9e-3; fp16 11 bits, 2^-11 ~ 4.9e-4):

    max_i |loss_i - loss_i(float32)| / |loss_i(float32)|  <=  2e-2 (bf16), 2.5e-3 (fp16)

The measured value is reported whether it passes or not; the fp16 row also counts the steps its
grad scaler skipped (an overflow skips the update, which moves the curve away from float32). The
loader figure (``"loader"`` in the JSON, a note in the table) is :class:`~kdfiqa.data.FIQADataset`
and a ``DataLoader`` with one worker per core on synthetic faces saved as 1024 px JPEGs (short
edge), with the same 2077Agent views, against the fastest distill step.

Running it on a GPU machine (the full mode needs CUDA)::

    python -m pip install -e . && python -m benchmarks gpu

It writes ``benchmarks/results/gpu.json`` and the README's Performance section (``--no-readme``
leaves README.md alone). Estimated, as the full mode has not been run on a GPU yet: 5 to 10 minutes
on one H200, most of it compiling the two ``torch.compile`` rows (inductor needs a C compiler).
``python -m benchmarks gpu --quick`` is the reduced mode (tiny sizes: teacher at 64, student at 32,
batch 4, 3 steps, loader at 128 px; no compilation), which is also what runs, automatically, where
no CUDA device is found: under a minute on 2 CPU cores. On CPU kdfiqa's AMP switch is off by design
(:mod:`kdfiqa.engine.amp` runs AMP on CUDA only), so there the bf16 rows run the same Trainer step
inside torch's CPU bf16 autocast, and the fp16 row, whose grad scaler is CUDA-only, is skipped.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import gc
import itertools
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, default_collate

from kdfiqa.data import FIQADataset, build_transform, make_synthetic_fiqa
from kdfiqa.distill import Distiller, Student, Supervised, Teacher
from kdfiqa.engine import NonFiniteLossError, TrainConfig, Trainer
from kdfiqa.models import create_model

from .common import scratch_dir, torch_threads
from .data_pipeline import _write_jpegs
from .distill_step import InMemory

TITLE = "GPU training: step throughput, memory and AMP loss curves"
NOT_MEASURED = "GPU figures not measured yet (no CUDA device on this machine); reduced CPU mode shown"
TEACHER, STUDENT = "emo2_5m", "emo2_1m"
LR, WEIGHT_DECAY = 5e-4, 1e-5
TOLERANCES = {"bf16": 2e-2, "fp16": 2.5e-3}
"""Largest relative deviation of an AMP loss curve from float32 (about 5 units of roundoff)."""
DEVIATION = "max over steps of |loss - loss(float32)| / |loss(float32)|"
KINDS = {"train": "train (student alone)", "distill": "distill (online teacher)"}


@dataclass(frozen=True)
class Settings:
    """The sizes of one mode of the benchmark."""

    student_size: int
    teacher_size: int
    batch: int
    steps: int
    warmup: int
    distinct_batches: int
    loader_edge: int
    loader_images: int
    loader_epochs: int
    compile: bool
    threads: int | None


FULL = Settings(student_size=224, teacher_size=512, batch=64, steps=30, warmup=5, distinct_batches=4,
                loader_edge=1024, loader_images=512, loader_epochs=2, compile=True, threads=None)
REDUCED = Settings(student_size=32, teacher_size=64, batch=4, steps=3, warmup=1, distinct_batches=3,
                   loader_edge=128, loader_images=8, loader_epochs=1, compile=False, threads=1)
"""Tiny sizes for CPUs and the tests, on one torch thread (on a small shared machine, threads waiting
for busy cores slow such tiny steps about tenfold)."""


@dataclass(frozen=True)
class Variant:
    """One way of running the same steps: precision, memory format, compilation."""

    label: str
    amp: str
    channels_last: bool = False
    compile: bool = False
    perturbed: bool = False
    reference: bool = False
    """The float32 run every other curve of its kind is compared with."""


VARIANTS = (
    Variant("float32", "none", reference=True),
    Variant("float32, perturbed inputs", "none", perturbed=True),
    Variant("AMP bf16", "bf16"),
    Variant("AMP fp16", "fp16"),
    Variant("AMP bf16 + channels_last", "bf16", channels_last=True),
    Variant("AMP bf16 + channels_last + compile", "bf16", channels_last=True, compile=True),
)


def max_relative_deviation(curve: Sequence[float], reference: Sequence[float]) -> float:
    """The largest ``|curve_i - reference_i| / |reference_i|`` over the steps of two loss curves."""
    if len(curve) != len(reference):
        raise ValueError(f"loss curves of {len(curve)} and {len(reference)} steps cannot be compared")
    return max(abs(a - b) / abs(b) for a, b in zip(curve, reference))


@contextlib.contextmanager
def _strict_float32() -> Iterator[None]:
    """TF32 off for matrix products and convolutions, so that float32 means float32; restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _cpu_autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch's CPU bf16 autocast where kdfiqa's switch is off (CPU), so the bf16 rows use bf16 there."""
    if device.type == "cpu" and amp == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _skip_reason(variant: Variant, settings: Settings, device: torch.device) -> str | None:
    """Why ``variant`` cannot be measured in this mode on ``device``, or None when it can."""
    if variant.amp == "fp16" and device.type != "cuda":
        return ("kdfiqa's fp16 path (autocast + grad scaler, kdfiqa/engine/amp.py) runs on CUDA only; "
                "a CPU fp16 run without its loss scaling would not measure it")
    if variant.compile and not settings.compile:
        return ("reduced mode: compiling the student's and the teacher's forward (and the student's "
                "backward) takes minutes, longer than the whole reduced run")
    return None


def _faces(folder: Path, settings: Settings) -> FIQADataset:
    """Synthetic faces saved as JPEGs of short edge ``loader_edge``, read with the 2077Agent views."""
    synthetic = make_synthetic_fiqa(folder / "faces", settings.loader_images,
                                    size=min(256, settings.loader_edge), seed=0)
    with open(synthetic.labels, newline="") as f:
        labelled = list(csv.reader(f))
    labels = _write_jpegs([synthetic.image_dir / name for name, _ in labelled],
                          [score for _, score in labelled], folder / "jpeg", settings.loader_edge)
    spec = {"preset": "2077agent_student_train", "size": settings.student_size, "crop": settings.teacher_size,
            "teacher_size": settings.teacher_size}
    return FIQADataset(folder / "jpeg", labels, transform=build_transform(spec))


def _loader(dataset: FIQADataset, settings: Settings, device: torch.device) -> dict[str, Any]:
    """Images/s of a DataLoader with one worker per core (median epoch after a warm-up epoch), or
    the error that stopped it (workers pass batches through /dev/shm, small in some containers)."""
    workers = os.cpu_count() or 1
    result: dict[str, Any] = {"workers": workers, "short edge": settings.loader_edge, "images": len(dataset),
                              "batch": settings.batch, "epochs timed": settings.loader_epochs}
    loader = DataLoader(dataset, batch_size=settings.batch, shuffle=True, num_workers=workers,
                        persistent_workers=True, pin_memory=device.type == "cuda")
    times = []
    try:
        for epoch in range(settings.loader_epochs + 1):  # the first epoch starts the workers: not timed
            start = time.perf_counter()
            for _ in loader:
                pass
            if epoch:
                times.append(time.perf_counter() - start)
    except RuntimeError as exc:
        return {**result, "error": str(exc).splitlines()[0]}
    return {**result, "images/s": len(dataset) / statistics.median(times)}


def _batches(items: InMemory, settings: Settings, device: torch.device) -> list[dict[str, Any]]:
    """The rendered items collated into batches, in host memory, pinned on CUDA."""
    batches = [default_collate(items.items[i:i + settings.batch]) for i in range(0, len(items), settings.batch)]
    if device.type == "cuda":
        batches = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                   for b in batches]
    return batches


@contextlib.contextmanager
def _compiling(variant: Variant) -> Iterator[None]:
    """For a compiled variant: inductor draws random numbers as eager does (the same drop-path
    masks), and its compiled code is dropped afterwards, freeing the networks it holds."""
    if not variant.compile:
        yield
        return
    import torch._dynamo
    import torch._inductor.config

    try:
        with torch._inductor.config.patch(fallback_random=True):
            yield
    finally:
        torch._dynamo.reset()


def _perturbed(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches with every image value moved by a relative ``2^-23 * N(0, 1)`` (fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    eps = torch.finfo(torch.float32).eps

    def move(value: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(value.shape, generator=generator)
        moved = value * (1 + eps * noise)
        return moved.pin_memory() if value.is_pinned() else moved

    return [{k: move(v) if k in ("image", "teacher_image") else v for k, v in b.items()} for b in batches]


def _compile_forward(model: nn.Module) -> None:
    """Compile ``model.forward_logits`` in place: what the Distiller, the Teacher and ``forward`` call.
    Static shapes: the teacher and the student share that method's code, and their different input
    sizes would otherwise make dynamo recompile it for symbolic shapes."""
    model.forward_logits = torch.compile(model.forward_logits, dynamic=False)


def _objective(kind: str, variant: Variant, teacher: nn.Module, student: Student,
               settings: Settings) -> nn.Module:
    """The kind's objective on copies of the networks (the ``student`` budget-checked once, before
    any variant), channels_last on the teacher and compilation applied."""
    student = copy.deepcopy(student)
    if kind == "train":
        objective: nn.Module = Supervised(student.model, "mse")
        networks = [student.model]
    else:
        teacher = copy.deepcopy(teacher)
        if variant.channels_last:  # the Trainer converts the student, the frozen teacher is ours
            teacher.to(memory_format=torch.channels_last)
        objective = Distiller(Teacher(teacher, input_size=settings.teacher_size), student,
                              task_loss="mse", distill_loss="temperature_mse")
        networks = [student.model, teacher]
    if variant.compile:
        for network in networks:
            _compile_forward(network)
    return objective


def _steps(trainer: Trainer, batches: list[dict[str, Any]], steps: int) -> tuple[list[float], list[float], int]:
    """Run the Trainer's own step ``steps`` times over ``batches`` (cycled): the loss curve, each
    step's seconds and how many updates the grad scaler skipped."""
    trainer.objective.train()
    losses, seconds, skipped = [], [], 0
    scaled = trainer.scaler.is_enabled()
    for position, batch in enumerate(itertools.islice(itertools.cycle(batches), steps), start=1):
        scale = trainer.scaler.get_scale() if scaled else 1.0
        start = time.perf_counter()
        terms, _ = trainer._train_step(batch, position)  # reads the loss back: the device is in sync
        seconds.append(time.perf_counter() - start)
        losses.append(terms["loss"])
        skipped += int(scaled and trainer.scaler.get_scale() < scale)
    return losses, seconds, skipped


def _measure(kind: str, variant: Variant, teacher: nn.Module, student: Student, items: InMemory,
             batches: list[dict[str, Any]], settings: Settings, device: torch.device, out: Path) -> dict[str, Any]:
    """One row: the variant's steps of one kind, timed, with their loss curve and peak memory. The
    Trainer is built on the rendered ``items`` (its loader is not iterated: the steps take ``batches``)."""
    label = variant.label
    if device.type == "cpu" and variant.amp == "bf16":
        label = label.replace("AMP bf16", "CPU autocast bf16")
    row: dict[str, Any] = {"step": KINDS[kind], "variant": label, "amp": variant.amp,
                           "channels_last": variant.channels_last, "compile": variant.compile, "device": device.type}
    reason = _skip_reason(variant, settings, device)
    if reason is not None:
        return {**row, "status": "skipped", "reason": reason}
    if kind == "train":
        batches = [{k: v for k, v in b.items() if k != "teacher_image"} for b in batches]
    if variant.perturbed:
        batches = _perturbed(batches)
    if device.type == "cuda":
        gc.collect()  # the previous row's networks (a compiled forward holds its module in a cycle)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    config = TrainConfig(output_dir=str(out), epochs=1, batch_size=settings.batch, optimizer="adamw", lr=LR,
                         weight_decay=WEIGHT_DECAY, scheduler="none", amp=variant.amp,
                         channels_last=variant.channels_last, device=device.type, quiet=True, seed=0)
    trainer = Trainer(_objective(kind, variant, teacher, student, settings), items, None, config)
    try:
        with _compiling(variant), _cpu_autocast(device, variant.amp):
            losses, seconds, skipped = _steps(trainer, batches, settings.steps)
    except NonFiniteLossError as exc:
        return {**row, "status": "failed", "reason": str(exc)}
    median = statistics.median(seconds[settings.warmup:])
    row.update({"images/s": settings.batch / median, "median step ms": 1000 * median,
                "peak GPU MiB": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
                "status": "reference" if variant.reference else "measured", "loss_curve": losses})
    if variant.amp == "fp16":
        row["scaler skipped steps"] = skipped
    return row


def _judge(rows: list[dict[str, Any]]) -> None:
    """Add each curve's deviation from its kind's float32 curve and, for the AMP rows, the verdict."""
    references = {r["step"]: r["loss_curve"] for r in rows if r["status"] == "reference"}
    for row in rows:
        if row["status"] != "measured":
            continue
        reference = references[row["step"]]
        row["first-step rel. deviation"] = max_relative_deviation(row["loss_curve"][:1], reference[:1])
        row["max rel. loss deviation"] = max_relative_deviation(row["loss_curve"], reference)
        if row["amp"] in TOLERANCES:
            row["tolerance"] = TOLERANCES[row["amp"]]
            row["within tolerance"] = row["max rel. loss deviation"] <= row["tolerance"]
        else:
            row["status"] = "control"


def _notes(rows: list[dict[str, Any]], loader: dict[str, Any], settings: Settings, cuda: bool) -> list[str]:
    """What the table needs to be read: settings, tolerance and its verdicts, the control, the loader,
    the rows not measured and why."""
    judged = [r for r in rows if "within tolerance" in r]
    over = [f"{r['step']}, {r['variant']}: {r['max rel. loss deviation']:.3g}" for r in judged
            if not r["within tolerance"]]
    controls = [f"{r['max rel. loss deviation']:.3g} ({r['step']})" for r in rows if r["status"] == "control"]
    notes = [
        f"teacher {TEACHER} at {settings.teacher_size}, student {STUDENT} at {settings.student_size}, batch "
        f"{settings.batch}, {settings.steps} steps per row ({settings.warmup} warm-up step(s) not timed), AdamW "
        f"lr {LR:g}, the same initial weights, seed and {settings.distinct_batches} batches (cycled) in every "
        f"row; float32 with TF32 off; {settings.threads or torch.get_num_threads()} torch thread(s)",
        f"loss-curve deviation: {DEVIATION}; tolerance bf16 {TOLERANCES['bf16']:g}, fp16 {TOLERANCES['fp16']:g} "
        "(about 5 units of roundoff of the format); the first step compares the formats at the same weights, "
        "later steps also how far the training trajectories drift apart; "
        + ("no AMP curve measured" if not judged else
           "every AMP curve within it" if not over else f"gap: over it: {'; '.join(over)}"),
        f"control: the float32 curve on batches moved by one float32 rounding step deviates by "
        f"{', '.join(controls)}: AMP deviations of that order after the first step are the training's own "
        "sensitivity to any perturbation, not the format's (from random initial weights the student's "
        "features barely differ between images, and the head's BatchNorm1d spreads those differences to "
        "unit variance)",
        f"loader: FIQADataset + DataLoader, {loader['workers']} workers (one per core), {loader['images']} "
        f"synthetic faces as JPEGs of short edge {loader['short edge']}, 2077Agent views, batch {settings.batch}: "
        + (f"{loader['images/s']:.1f} images/s, {'keeps up with' if loader['keeps up'] else 'gap: short of'} "
           f"the fastest distill step ({loader['fastest step images/s']:.1f} images/s)" if "images/s" in loader
           else f"failed: {loader['error']}"),
    ]
    notes += [f"{r['step']}, {r['variant']}: {r['status']}: {r['reason']}" for r in rows
              if r["status"] in ("skipped", "failed")]
    notes += [f"{r['step']}, {r['variant']}: the grad scaler skipped {r['scaler skipped steps']} of "
              f"{settings.steps} updates" for r in rows if r.get("scaler skipped steps")]
    if not cuda:
        notes.insert(0, f"{NOT_MEASURED}: peak GPU memory is null (cpu); kdfiqa's AMP switch is CUDA-only, "
                        "so the bf16 rows run the Trainer's step inside torch's CPU bf16 autocast")
    notes.append("absolute figures move with other jobs' load on the machine (load_average_1min in the JSON)")
    return notes


def run(quick: bool) -> dict:
    cuda = torch.cuda.is_available()
    if not cuda and not quick:
        print("  no CUDA device: running the reduced CPU mode; GPU figures not measured", flush=True)
    settings = REDUCED if quick or not cuda else FULL
    device = torch.device("cuda" if cuda else "cpu")
    rows: list[dict[str, Any]] = []
    with scratch_dir("gpu") as folder, _strict_float32(), torch_threads(settings.threads):
        torch.manual_seed(0)
        teacher = create_model(TEACHER, pretrained=False).eval().requires_grad_(False)
        student = Student(create_model(STUDENT, pretrained=False), input_sizes=settings.student_size)
        dataset = _faces(folder, settings)
        torch.manual_seed(0)  # the random crops and flips of the rendered items
        items = InMemory(Subset(dataset, [i % len(dataset) for i in range(settings.batch * settings.distinct_batches)]))
        batches = _batches(items, settings, device)
        for kind in KINDS:
            for variant in VARIANTS:
                print(f"  {kind}: {variant.label}", flush=True)
                rows.append(_measure(kind, variant, teacher, student, items, batches, settings, device,
                                     folder / "run"))
        print(f"  loader at {settings.loader_edge} px", flush=True)
        loader = _loader(dataset, settings, device)
    _judge(rows)
    judged = [r["within tolerance"] for r in rows if "within tolerance" in r]
    tolerance_met = all(judged) if judged else None
    if "images/s" in loader:
        loader["fastest step images/s"] = max(r["images/s"] for r in rows
                                              if r["step"] == KINDS["distill"] and "images/s" in r)
        loader["keeps up"] = loader["images/s"] >= loader["fastest step images/s"]
    result: dict[str, Any] = {
        "title": TITLE if cuda else f"{TITLE} — {NOT_MEASURED}",
        "quick": settings is REDUCED,
        "mode": "full" if settings is FULL else "reduced",
        "gpu_measured": cuda,
        "status": "measured" if cuda else "not measured: no CUDA device",
        "settings": dataclasses.asdict(settings),
        "tolerance": {"measure": DEVIATION, **TOLERANCES},
        "tolerance_met": tolerance_met,
        "loader": loader,
        "met": tolerance_met if cuda else None,
        "columns": ["step", "variant", "images/s", "median step ms", "peak GPU MiB" if cuda else "device",
                    "first-step rel. deviation", "max rel. loss deviation", "tolerance", "within tolerance",
                    "status"],
        "rows": rows,
        "notes": _notes(rows, loader, settings, cuda),
    }
    if cuda:
        result["goal"] = (f"the AMP loss curves stay within the stated tolerance of float32 over {settings.steps} "
                          f"steps (bf16 {TOLERANCES['bf16']:g}, fp16 {TOLERANCES['fp16']:g}, relative)")
    return result
