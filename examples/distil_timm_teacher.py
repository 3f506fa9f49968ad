"""Distil a timm teacher into an EMO student that fits the VQualA 2025 budget, with the Python API.

    python examples/distil_timm_teacher.py --root faces/ --csv labels.csv --pretrained
    python examples/distil_timm_teacher.py --quick        # a tiny run on synthetic data, in seconds

The steps, each one a few lines below:

1. data: a labeled CSV under an image root (or, without ``--root``, a synthetic set made by
   :func:`kdfiqa.data.make_synthetic_fiqa`: procedurally drawn faces, not real photos), split into
   train and validation. Training samples carry two views of the same crop: the student's
   (``image``) and the teacher's (``teacher_image``), each at its own resolution;
2. the teacher: any timm model with kdfiqa's quality head, fine-tuned on the labels (start from
   ImageNet weights with ``--pretrained`` when you have internet);
3. the student: an EMO/EMOv2 model, checked against the budget before its first step;
4. distillation: the task loss on the labels plus a temperature-scaled MSE to the frozen teacher's
   logits (the 2077Agent recipe of the seed), then the validation metrics of both models.

Checkpoints land in ``--out`` (``teacher/best.pt``, ``student/best.pt``); evaluate, predict and export
them with the ``kdfiqa`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from kdfiqa.data import FIQADataset, build_transform, make_synthetic_fiqa, split_dataset
from kdfiqa.distill import Distiller, Student, Supervised, Teacher
from kdfiqa.engine import TrainConfig, Trainer
from kdfiqa.engine.distributed import init_distributed
from kdfiqa.engine.evaluation import evaluate_model
from kdfiqa.models import create_model

QUICK = {"teacher": "mobilenetv3_small_050", "student": "emo_1m", "teacher_size": 64, "student_size": 48,
         "epochs": 1, "batch_size": 8, "images": 32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="image folder (default: make a synthetic data set)")
    parser.add_argument("--csv", help="labels: challenge format image_name,score or a headed CSV")
    parser.add_argument("--teacher", default="resnet50", help="timm model name (default: %(default)s)")
    parser.add_argument("--student", default="emo2_1m", help="kdfiqa student (default: %(default)s)")
    parser.add_argument("--teacher-size", type=int, default=384, help="teacher input size")
    parser.add_argument("--student-size", type=int, default=224, help="student input size")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=600, help="synthetic images when no --root")
    parser.add_argument("--pretrained", action="store_true", help="start the teacher from timm's weights")
    parser.add_argument("--out", default="runs/distil_timm_teacher", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny models, sizes and data: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if (args.root is None) != (args.csv is None):
        parser.error("give both --root and --csv, or neither (synthetic data)")
    return args


def load_data(args: argparse.Namespace, out: Path):
    """Train/validation splits: training items hold both views, validation items the student's."""
    root, labels = args.root, args.csv
    if root is None:
        synthetic = make_synthetic_fiqa(out / "synthetic_data", args.images, size=max(args.teacher_size, 64))
        root, labels = synthetic.image_dir, synthetic.labels
    views = build_transform({"mode": "randcrop_or_resize", "size": args.student_size,
                             "teacher_size": args.teacher_size, "flip": True})
    train, val = split_dataset(FIQADataset(root, labels, transform=views), val_fraction=0.2, seed=0)
    return train, val.with_transform(build_transform(eval_resize(args.student_size)))


def config(args: argparse.Namespace, out: Path, name: str, lr: float) -> TrainConfig:
    return TrainConfig(output_dir=str(out / name), epochs=args.epochs, batch_size=args.batch_size,
                       optimizer="adam", lr=lr, weight_decay=1e-5, scheduler="cosine",
                       device="cpu" if args.quick else "auto", quiet=args.quick)


def eval_resize(size: int) -> dict:
    """The evaluation transform spec; stored in checkpoints so ``kdfiqa evaluate`` reuses it."""
    return {"mode": "resize", "size": size, "normalize": "imagenet"}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    train, val = load_data(args, out)

    # The teacher sees its own view: train it on "teacher_image" as its "image".
    teacher_net = create_model(f"timm:{args.teacher}", pretrained=args.pretrained)
    teacher_views = build_transform({"mode": "randcrop_or_resize", "size": args.teacher_size, "flip": True})
    teacher_val = val.with_transform(build_transform(eval_resize(args.teacher_size)))
    Trainer(Supervised(teacher_net, "mse"), train.with_transform(teacher_views), teacher_val,
            config(args, out, "teacher", lr=1e-4),
            run_config={"data": {"eval_transform": eval_resize(args.teacher_size)}}).fit()

    # The student is measured at its deployment size before anything is trained.
    student = Student(create_model(args.student), input_sizes=[224])
    teacher = Teacher(teacher_net, input_size=args.teacher_size)
    distiller = Distiller(teacher, student, task_loss="mse", distill_loss="temperature_mse")
    Trainer(distiller, train, val, config(args, out, "student", lr=5e-4),
            run_config={"data": {"eval_transform": eval_resize(args.student_size)}}).fit()

    ctx = init_distributed("cpu")
    results = {"teacher": evaluate_model(teacher_net, teacher_val, ctx, batch_size=args.batch_size)[0],
               "student": evaluate_model(student.model, val, ctx, batch_size=args.batch_size)[0]}
    table = Table(title="validation (synthetic data)" if args.root is None else "validation")
    for column in ("model", "SRCC", "PLCC", "score"):
        table.add_column(column)
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in ("srcc", "plcc", "score")))
    Console().print(table)
    return results


if __name__ == "__main__":
    main()
