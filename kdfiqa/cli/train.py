"""``kdfiqa train``: train a FIQA model (a teacher, or a student without a teacher) on labeled images.

The flags shared with ``kdfiqa distill`` (data, model, optimisation, recipe/config/--set) are defined
here by :func:`add_run_flags` and turned into a resolved :class:`~kdfiqa.config.RunConfig` by
:func:`run_config_from_args`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..budget import parse_input_size
from ..config import RunConfig, build_layers, resolve_config
from ..workflows import RunResult, is_main_process, train_model

EXAMPLES = """examples:
  kdfiqa train --root data/train --csv data/train.csv --model emo2_5m --input 512 --out runs/teacher
  kdfiqa train --root data/train --csv data/train.csv --val-csv data/val.csv --val-root data/val \\
      --model mobilenetv2_fiqa --epochs 20 --batch-size 64 --lr 5e-4 --out runs/baseline
  kdfiqa train --recipe 2077agent --root data/train --csv data/train.csv --out runs/teacher
  kdfiqa train --recipe ders --root data/train --csv data/train.csv --set train.epochs=50 --out runs/ders
  kdfiqa train --config my_run.yaml --set train.lr=1e-4 --set data.train_transform.flip=false
  kdfiqa train --config my_run.yaml --out runs/teacher --resume
  torchrun --nproc_per_node 4 -m kdfiqa.cli.main train --recipe 2077agent --root data/train --csv data/train.csv

Settings apply in this order, later winning: the recipe (`kdfiqa recipes` lists them), --config
file, dedicated flags, --set SECTION.KEY=VALUE (sections: model, data, train, loss, distill, ssar).
--print-config shows the resolved settings without training. Checkpoints (best.pt, last.pt) and
log.jsonl go to --out; best.pt is what `kdfiqa evaluate/predict/export` take.
"""

FLAG_KEYS: dict[str, str] = {
    "root": "data.root",
    "csv": "data.csv",
    "val_root": "data.val_root",
    "val_csv": "data.val_csv",
    "val_fraction": "data.val_fraction",
    "sampler": "data.sampler",
    "pseudo_csv": "data.pseudo_csv",
    "unlabeled": "data.unlabeled",
    "skip_bad": "data.skip_bad",
    "model": "model.name",
    "input": "model.input",
    "init": "model.init",
    "pretrained": "model.pretrained",
    "out": "train.output_dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "optimizer": "train.optimizer",
    "scheduler": "train.scheduler",
    "amp": "train.amp",
    "ema": "train.ema_decay",
    "seed": "train.seed",
    "device": "train.device",
    "workers": "train.num_workers",
    "quiet": "train.quiet",
    "task_loss": "loss.task",
}
"""Dedicated flag (argparse dest) → config key. Flags left out of a sub-command are skipped."""


def input_size_arg(text: str) -> Any:
    try:
        _, h, w = parse_input_size(text)
    except Exception:
        raise argparse.ArgumentTypeError(f"{text!r} is not an input size such as 224 or 224x336")
    return h if h == w else [h, w]


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags every training command takes (data, model, optimisation, configuration)."""
    cfg = p.add_argument_group("configuration")
    cfg.add_argument("--recipe", metavar="NAME", help="start from a packaged recipe (`kdfiqa recipes`) or a YAML file")
    cfg.add_argument("--config", metavar="FILE", help="YAML file with model/data/train/loss/distill/ssar sections")
    cfg.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override any setting, e.g. --set train.lr=1e-4 (repeatable)")
    cfg.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")
    data = p.add_argument_group("data")
    data.add_argument("--root", metavar="DIR", help="folder the CSV's image names are relative to")
    data.add_argument("--csv", metavar="FILE", help="labels: challenge format (image_name,score) or a headed CSV")
    data.add_argument("--val-csv", metavar="FILE", help="validation labels (default: a split of --csv)")
    data.add_argument("--val-root", metavar="DIR", help="image folder of --val-csv (default: --root)")
    data.add_argument("--val-fraction", type=float, metavar="F", help="share of --csv held out for validation (0.1)")
    data.add_argument("--sampler", choices=["ssus"], help="score-stratified uniform sampling (RankCORE)")
    data.add_argument("--pseudo-csv", metavar="FILE", help="pseudo-labels added to the training labels")
    data.add_argument("--unlabeled", metavar="DIR", help="unlabeled images (pseudo-labelling, self-training, SSAR)")
    data.add_argument("--skip-bad", action="store_true", default=None,
                      help="drop unreadable images (each logged, counted) instead of stopping")
    model = p.add_argument_group("model")
    model.add_argument("--model", metavar="NAME", help="registered model or timm:NAME (`kdfiqa models`)")
    model.add_argument("--input", type=input_size_arg, metavar="SIZE", help="training resolution: 224 or 224x336")
    model.add_argument("--init", metavar="CKPT", help="start from the weights of a kdfiqa checkpoint")
    model.add_argument("--pretrained", action="store_true", default=None,
                       help="load the model's published weights (needs them locally or a network)")
    train = p.add_argument_group("training")
    train.add_argument("--out", metavar="RUNDIR", help="folder for best.pt, last.pt and log.jsonl")
    train.add_argument("--epochs", type=int, metavar="N")
    train.add_argument("--batch-size", type=int, metavar="B")
    train.add_argument("--lr", type=float)
    train.add_argument("--weight-decay", type=float, metavar="WD")
    train.add_argument("--optimizer", metavar="NAME", help="adam, adamw or sgd")
    train.add_argument("--scheduler", metavar="NAME", help="none, cosine, step or plateau")
    train.add_argument("--amp", metavar="MODE", help="mixed precision on CUDA: none, bf16 or fp16")
    train.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights, e.g. 0.999")
    train.add_argument("--task-loss", metavar="FORMULA", help='loss against the labels, e.g. "0.75*plcc + 0.25*rank"')
    train.add_argument("--seed", type=int)
    train.add_argument("--device", metavar="DEV", help="auto (default), cpu or cuda")
    train.add_argument("--workers", type=int, metavar="N", help="data-loading worker processes")
    train.add_argument("--quiet", action="store_true", default=None, help="no progress bar or epoch tables")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")


def run_config_from_args(args: argparse.Namespace, command: str,
                         flag_keys: dict[str, str] = FLAG_KEYS) -> RunConfig:
    """The resolved config: recipe, then --config, then dedicated flags, then --set."""
    flags = {key: getattr(args, dest) for dest, key in flag_keys.items() if hasattr(args, dest)}
    layers = build_layers(command, recipe=args.recipe, config_file=args.config, flags=flags, sets=args.sets)
    return resolve_config(command, layers)


def setup_logging() -> None:
    """kdfiqa's own log lines on stderr, from rank 0 only."""
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.ERROR,
                        format="%(message)s", stream=sys.stderr)


def report(result: RunResult) -> None:
    """One summary line per run on rank 0: where the model is and its best validation figures."""
    if not is_main_process():
        return
    best = [r for r in result.history if r.get("best")] or result.history[-1:]
    metrics = best[-1].get("val", {}) if best else {}
    figures = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("srcc", "plcc", "score") if metrics.get(k) is not None)
    print(f"saved {result.checkpoint}" + (f" ({figures})" if figures else ""))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on labeled face images",
        description="Train a FIQA model (e.g. a teacher) on images under --root labeled by --csv, "
                    "validating every epoch with SRCC, PLCC and the challenge score.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = run_config_from_args(args, "train")
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    setup_logging()
    report(train_model(config, resume=args.resume))
    return 0
