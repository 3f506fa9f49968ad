"""``kdfiqa distill``: train a budget-checked student under a frozen teacher (or an ensemble)."""

from __future__ import annotations

import argparse

from ..workflows import BUDGETS, distill_model
from .train import FLAG_KEYS, input_size_arg, add_run_flags, report, run_config_from_args, setup_logging

EXAMPLES = """examples:
  kdfiqa distill --root data/train --csv data/train.csv --model emo2_1m --input 224 \\
      --teacher runs/teacher/best.pt --teacher-input 512 \\
      --task-loss hybrid --distill-loss "0.5*temperature_mse" --out runs/student
  kdfiqa distill --recipe 2077agent --root data/train --csv data/train.csv \\
      --teacher runs/teacher/best.pt --out runs/student
  kdfiqa distill --model emo2_1m --root data/train --csv data/train.csv --out runs/ens \\
      --teacher runs/a/best.pt --teacher timm:convnext_tiny --teacher scores.csv
  kdfiqa distill --model edgenext_xxs_fiqa --root data/train --csv data/train.csv \\
      --pseudo-csv pseudo.csv --unlabeled data/unlabeled --teacher runs/teacher/best.pt \\
      --distill-loss none --task-loss "1.0*mse + 1.0*plcc" --out runs/offline
  kdfiqa distill --recipe ecnu_sjtu --root data/train --csv data/train.csv \\
      --unlabeled data/unlabeled --teacher runs/teacher/best.pt --out runs/winner
  kdfiqa distill --model emo2_1m --teacher runs/teacher/best.pt --root data/train --csv data/train.csv \\
      --feature-loss backbone.stages.3:backbone.stages.3:feature:0.1 --out runs/feat

The student is measured with fvcore at its training and test resolutions before any training: over
--budget it stops with status 2 unless --allow-over-budget (then a loud warning is logged). A
--teacher is a registered name, timm:NAME, a kdfiqa checkpoint or an image,score CSV (offline);
several are averaged. With --unlabeled the teacher first pseudo-labels those images (--calibrate maps
them onto the label scale with a 4-parameter logistic fitted on the training labels, never on the
validation share, --self-train N retrains the teacher N times on
labels + its pseudo-labels) and the student trains on labels + pseudo-labels. --distill-loss none
trains on labels (+ pseudo-labels) only. The saved student holds no projector or teacher weight.
"""

DISTILL_KEYS: dict[str, str] = {
    **FLAG_KEYS,
    "teacher": "distill.teachers",
    "teacher_input": "distill.teacher_input",
    "distill_loss": "distill.loss",
    "feature_loss": "distill.feature",
    "budget": "distill.budget",
    "allow_over_budget": "distill.allow_over_budget",
    "calibrate": "distill.calibrate",
    "self_train": "distill.self_train",
}


def _loss_or_none(text: str) -> str:
    return "" if text.strip().lower() == "none" else text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill", help="distil a teacher into a student that fits the budget",
        description="Train --model as a student of --teacher: task loss on the labels plus a "
                    "distillation loss on the teacher's outputs, after checking the student's budget.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    kd = p.add_argument_group("distillation")
    kd.add_argument("--teacher", action="append", metavar="SOURCE",
                    help="name, timm:NAME, checkpoint.pt or scores.csv (repeat for an ensemble)")
    kd.add_argument("--teacher-input", type=input_size_arg, metavar="SIZE", help="teacher resolution, e.g. 512")
    kd.add_argument("--distill-loss", type=_loss_or_none, metavar="FORMULA",
                    help='loss on the logits, e.g. "0.5*temperature_mse"; none: labels only')
    kd.add_argument("--feature-loss", action="append", metavar="S:T[:LOSS[:W]]",
                    help="match student module S to teacher module T (repeatable)")
    kd.add_argument("--budget", choices=[*BUDGETS, "none"], help="budget the student must fit (vquala2025)")
    kd.add_argument("--allow-over-budget", action="store_true", default=None,
                    help="train a student over budget anyway (loudly logged)")
    kd.add_argument("--calibrate", action="store_true", default=None,
                    help="map pseudo-labels to the label scale (4-parameter logistic fitted on the "
                         "training share of --csv)")
    kd.add_argument("--self-train", type=int, metavar="N", help="self-training rounds of the teacher")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.distill_loss == "":
        args.sets.insert(0, "distill.loss=null")
        args.distill_loss = None
    config = run_config_from_args(args, "distill", DISTILL_KEYS)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    setup_logging()
    report(distill_model(config, resume=args.resume))
    return 0
