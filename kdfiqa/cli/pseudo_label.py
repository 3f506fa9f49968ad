"""``kdfiqa pseudo-label``: score a folder of unlabeled images with a teacher, as challenge labels."""

from __future__ import annotations

import argparse
import sys

from ..options import LABEL_SHARD_BATCHES
from .config_flags import add_threads_flag, at_least, input_size_arg
from .predict import add_speed_flags
from .train import setup_logging

EXAMPLES = """examples:
  kdfiqa pseudo-label --teacher runs/teacher/best.pt --images data/unlabeled --out pseudo.csv
  kdfiqa pseudo-label --teacher runs/teacher/best.pt --images data/unlabeled --out pseudo.csv \\
      --calibrate --root data/train --csv data/train.csv
  kdfiqa pseudo-label --teacher runs/a/best.pt --teacher runs/b/best.pt --teacher-input 448 \\
      --images data/unlabeled --out pseudo.csv
  kdfiqa distill --model emo2_1m --root data/train --csv data/train.csv \\
      --pseudo-csv pseudo.csv --pseudo-root data/unlabeled --teacher runs/teacher/best.pt --out runs/student

  kdfiqa pseudo-label --teacher runs/teacher/best.pt --images data/unlabeled --out pseudo.csv --resume
  torchrun --nproc_per_node 4 -m kdfiqa.cli.main pseudo-label --teacher runs/teacher/best.pt \
      --images data/unlabeled --out pseudo.csv --device cuda --amp bf16 --channels-last

The CSV is header-less image_name,score (the challenge format), names relative to --images, so that
`kdfiqa train|distill --pseudo-csv FILE --pseudo-root DIR` trains on labels + these pseudo-labels,
used as given. With --calibrate the teacher also scores the labeled set (--root, --csv) and its raw
scores are mapped to the label scale by the 4-parameter logistic fitted there (the challenge
winner's method).

Restartable: every --shard-batches batches of images are kept in a part file under <out>.parts/
as soon as they are scored; after an interruption, the same command with --resume scores only
the missing shards and writes the same CSV. Under torchrun every rank scores its share.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pseudo-label", help="score unlabeled images with a teacher into a labels CSV",
        description="Score every image under --images with the teacher(s) and write image_name,score rows.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", action="append", required=True, metavar="SOURCE",
                   help="checkpoint.pt, registered name or timm:NAME (repeat to average an ensemble)")
    p.add_argument("--images", required=True, metavar="IMAGES", help="folder, image list or tar shards")
    p.add_argument("--out", required=True, metavar="FILE", help="CSV to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--teacher-input", type=input_size_arg, metavar="SIZE",
                   help="teacher resolution (default: the teacher's own)")
    p.add_argument("--normalize", choices=["imagenet", "symmetric", "none"],
                   help="override the teacher's input normalisation (default: the one it was trained with)")
    p.add_argument("--calibrate", action="store_true", help="fit a 4-parameter logistic to the labels of --root/--csv")
    p.add_argument("--raw-if-degenerate", action="store_true",
                   help="with --calibrate: keep the raw scores when the fit is degenerate (refused otherwise)")
    p.add_argument("--root", metavar="DIR", help="labeled images for --calibrate")
    p.add_argument("--csv", metavar="FILE", help="labels for --calibrate")
    p.add_argument("--batch-size", type=at_least(1), default=32, metavar="B")
    p.add_argument("--workers", type=at_least(0), default=0, metavar="N")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="default: cpu")
    p.add_argument("--shard-batches", type=at_least(1), default=LABEL_SHARD_BATCHES, metavar="N",
                   help="batches per part file kept under <out>.parts/ (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the part files of an interrupted run of this command and score only the rest")
    p.add_argument("--no-fuse", action="store_true",
                   help="score with the teacher's training form; by default its inference form (batch norms "
                        "folded, channels-last weights) is used once its outputs match it to 1e-5")
    add_speed_flags(p)
    add_threads_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import pipeline
    from ..distill import Teacher
    from ..engine import init_distributed
    from ..engine.distributed import rank_zero_writer_lock
    from ..errors import ConfigError
    from ..outputs import check_output_file

    if args.calibrate and not (args.root and args.csv):
        raise ConfigError("--calibrate needs the labeled set: add --root DIR --csv FILE")
    if not args.calibrate and (args.root or args.csv):
        raise ConfigError("--root/--csv are only used with --calibrate; add --calibrate or drop them")
    if not args.calibrate and args.raw_if_degenerate:
        raise ConfigError("--raw-if-degenerate is only used with --calibrate; add --calibrate or drop it")
    ctx = init_distributed(args.device)
    with rank_zero_writer_lock(args.out, ctx):  # held before the check; pipeline.pseudo_label holds it already
        check_output_file(args.out, inputs=[*args.teacher, args.csv, args.images], overwrite=args.overwrite)
        setup_logging()
        teacher = Teacher(args.teacher, input_size=args.teacher_input, device=ctx.device)
        calibrate = pipeline.Labels(Path(args.csv), Path(args.root)) if args.calibrate else None
        pipeline.pseudo_label(teacher, args.images, args.out, calibrate_on=calibrate,  # it says what it wrote
                              raw_if_degenerate=args.raw_if_degenerate, normalize=args.normalize,
                              batch_size=args.batch_size, num_workers=args.workers, ctx=ctx, overwrite=args.overwrite,
                              amp=args.amp, channels_last=args.channels_last, shard_batches=args.shard_batches,
                              resume=args.resume, fuse=not args.no_fuse)
    if ctx.is_main:
        from ..inference import speed_note

        note = speed_note(ctx.device, args.amp, args.channels_last)
        if note:
            print(f"note: {note}", file=sys.stderr)
    return 0
