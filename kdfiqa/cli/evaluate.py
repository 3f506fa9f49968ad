"""``kdfiqa evaluate``: the challenge metrics of a checkpoint on a labeled CSV."""

from __future__ import annotations

import argparse
import json

from .predict import add_inference_flags

METRIC_KEYS = ("srcc", "plcc", "krcc", "rmse", "score", "n")

EXAMPLES = """examples:
  kdfiqa evaluate runs/student/best.pt --root data/val --csv data/val.csv
  kdfiqa evaluate runs/student/best.pt --root data/val --csv data/val.csv --json
  kdfiqa evaluate runs/baseline/best.pt --root data/val --csv data/val.csv --multi-crop 20
  kdfiqa evaluate runs/ders/best.pt --root data/val --csv data/val.csv --native --fit logistic4
  torchrun --nproc_per_node 4 -m kdfiqa.cli.main evaluate runs/student/best.pt --root data/val --csv data/val.csv

--json prints exactly {"srcc", "plcc", "krcc", "rmse", "score", "n"}. Under torchrun every rank scores
its share (each image once), metrics are computed on the full set gathered from all ranks (the same
numbers as one process), and only rank 0 prints.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "evaluate", help="SRCC, PLCC, KRCC, RMSE and challenge score on a labeled CSV",
        description="Score the images of a labeled CSV (challenge format image_name,score without a "
                    "header, or a headed CSV) with a checkpoint and compute the challenge metrics.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CKPT", help="checkpoint (*.pt), or registered name/timm:NAME/file.py:factory")
    p.add_argument("--root", required=True, metavar="DIR", help="folder the CSV's image names are relative to")
    p.add_argument("--csv", required=True, metavar="FILE", help="labeled CSV")
    p.add_argument("--fit", type=_fit, metavar="logistic4",
                   help="map predictions with a 4-parameter logistic fitted on this set before PLCC/RMSE")
    p.add_argument("--json", action="store_true", help='print {"srcc", "plcc", "krcc", "rmse", "score", "n"}')
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (each logged, counted)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept CSV names that lead outside --root (../, symlinks)")
    add_inference_flags(p)
    p.set_defaults(func=run)


def _fit(text: str) -> str:
    """argparse type of ``--fit``: one of :data:`kdfiqa.metrics.FITS` (imported only when given)."""
    from ..metrics import FITS

    if text not in FITS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(FITS)})")
    return text


def run(args: argparse.Namespace) -> int:
    """Score the CSV's images and print the metrics (only rank 0 under torchrun)."""
    from ..console import make_console
    from rich.table import Table

    from ..engine.distributed import init_distributed, shutdown_distributed
    from ..inference import evaluate_csv, load_inference_model, speed_note

    ctx = init_distributed(args.device)  # joins the torchrun group when there is one
    try:
        loaded = load_inference_model(args.target, input_size=args.input, native=args.native,
                                      multi_crop=args.multi_crop, fuse=not args.no_fuse)
        metrics = evaluate_csv(loaded, args.root, args.csv, batch_size=args.batch_size,
                               device=args.device, fit=args.fit, num_workers=args.workers,
                               skip_bad=args.skip_bad, allow_outside_root=args.allow_outside_root, amp=args.amp,
                               channels_last=args.channels_last)
    finally:
        shutdown_distributed()
    if not ctx.is_main:
        return 0
    note = speed_note(ctx.device, args.amp, args.channels_last)
    if note:
        make_console(stderr=True).print(f"note: {note}", markup=False, highlight=False)
    result = {key: metrics[key] for key in METRIC_KEYS}
    if args.json:
        print(json.dumps({k: (int(v) if k == "n" else float(v)) for k, v in result.items()}))
        return 0
    table = Table(title=f"{args.target} on {args.csv}")
    for key in METRIC_KEYS:
        table.add_column(key, justify="right")
    table.add_row(*(str(int(result[k])) if k == "n" else f"{float(result[k]):.4f}" for k in METRIC_KEYS))
    make_console().print(table)
    return 0
