"""``kdfiqa distill``: train a budget-checked student under a frozen teacher (or an ensemble)."""

from __future__ import annotations

import argparse

from .train import add_run_flags, run_stage

EXAMPLES = """examples:
  kdfiqa distill --root data/train --csv data/train.csv --model emo2_1m --input 224 \\
      --teacher runs/teacher/best.pt --teacher-input 512 \\
      --task-loss hybrid --distill-loss "0.5*temperature_mse" --out runs/student
  kdfiqa distill --recipe 2077agent --root data/train --csv data/train.csv \\
      --teacher runs/teacher/best.pt --out runs/student
  kdfiqa distill --model emo2_1m --root data/train --csv data/train.csv --out runs/ens \\
      --teacher runs/a/best.pt --teacher timm:convnext_tiny --teacher scores.csv
  kdfiqa distill --model edgenext_xxs_fiqa --root data/train --csv data/train.csv \\
      --pseudo-csv pseudo.csv --pseudo-root data/unlabeled \\
      --distill-loss none --task-loss "1.0*mse + 1.0*plcc" --out runs/offline
  kdfiqa distill --recipe ecnu_sjtu --root data/train --csv data/train.csv \\
      --unlabeled data/unlabeled --teacher runs/teacher/best.pt --out runs/winner
  kdfiqa distill --model emo2_1m --teacher runs/teacher/best.pt --root data/train --csv data/train.csv \\
      --feature-loss backbone.stage4.2:backbone.stage4.2:feature:0.1 --out runs/feat
  kdfiqa distill --model emo2_1m --teacher runs/teacher/best.pt --root data/train --csv data/train.csv \\
      --unlabeled data/unlabeled --unlabeled-use online --labeled-per-batch 16 --calibrate-online \\
      --task-loss hybrid --distill-loss "1.0*temperature_mse" --batch-size 32 --out runs/online

Before any training the student is measured with fvcore at its deployment size (--deploy-input;
default the budget's, 224x224 for vquala2025, or the training size when larger): over --budget it
stops with status 2 naming the costliest modules, unless --allow-over-budget (then a loud warning is
logged). A --teacher is a registered name, timm:NAME, a kdfiqa checkpoint or an image,score CSV
(offline); several are averaged. Pseudo-labels come one way or the other, never both:
--pseudo-csv FILE (with --pseudo-root, the folder its names are relative to) is used as given;
--unlabeled DIR has the teacher label DIR first (--calibrate maps its scores onto the label scale
with a 4-parameter logistic fitted on the training share of --csv; --self-train N retrains the
teacher N times on labels + its pseudo-labels). --distill-loss none trains on labels
(+ pseudo-labels) only. --unlabeled-use online trains on the --unlabeled images themselves instead
of pseudo-labelling them (both: pseudo-labels and online targets): they join training without a
label, the task loss sees the labeled samples only and the distillation loss every sample, the
teacher scoring each view the student sees (needs --distill-loss or --feature-loss).
--labeled-per-batch N puts exactly N labeled images in every batch, the rest unlabeled; an epoch
passes the labels once, so runs with more or fewer unlabeled images take the same steps.
--calibrate-online maps the teacher's online outputs onto the label scale with the 4-parameter
logistic --calibrate uses, fitted once on its scores of the labeled training images
(teacher_calibration.json, kept in every checkpoint). log.jsonl and the epoch lines show each loss
term's share of the total (share/task, share/distill, ...). The saved student holds no projector
or teacher weight.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill", help="distil a teacher into a student that fits the budget",
        description="Train --model as a student of --teacher: task loss on the labels plus a "
                    "distillation loss on the teacher's outputs, after checking the student's budget.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p, "distill")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "distill", "run_distill")
