"""``kdfiqa train``: train a FIQA model (a teacher, or a student without a teacher) on labeled images.

The flags shared with ``kdfiqa distill`` come from the run configuration's fields
(:mod:`kdfiqa.cli.config_flags`); :func:`run_config_from_args` layers recipe, ``--config`` file,
flags and ``--set`` into a :class:`~kdfiqa.config.RunConfig`, and :func:`kdfiqa.pipeline.train` runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from .config_flags import add_config_flags, add_threads_flag, config_from_args

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
log.jsonl go to --out; best.pt is what `kdfiqa evaluate/predict/export` take. The same command and
--seed give the same weights on CPU.
"""


def add_run_flags(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of a training command: configuration layering, then one group per config section."""
    cfg = p.add_argument_group("configuration")
    cfg.add_argument("--recipe", metavar="NAME", help="start from a packaged recipe (`kdfiqa recipes`) or a YAML file")
    cfg.add_argument("--config", metavar="FILE", help="YAML file with model/data/train/loss/distill/ssar sections, "
                     "or a checkpoint (.pt: the run config it stores, validated as a file is)")
    cfg.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override any setting, e.g. --set train.lr=1e-4 (repeatable)")
    cfg.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")
    cfg.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last.pt (distill: or from its interrupted "
                          "labelling of --unlabeled)")
    cfg.add_argument("--overwrite", action="store_true",
                     help="start a new run in an --out that holds one (its checkpoints and log are replaced)")
    cfg.add_argument("--allow-changes", action="store_true",
                     help="with --resume: accept changed schedule or data settings (e.g. more --epochs)")
    add_config_flags(p, command)
    add_threads_flag(p)


def run_config_from_args(args: argparse.Namespace, command: str) -> Any:
    """The resolved config: recipe, then --config, then dedicated flags, then --set."""
    from ..config import build_layers, resolve_config

    layers = build_layers(command, recipe=args.recipe, config_file=args.config, flags=config_from_args(args),
                          sets=args.sets)
    return resolve_config(command, layers)


def setup_logging(quiet: bool = False) -> None:
    """kdfiqa's own log lines on stderr, from rank 0 only (warnings and errors only when ``quiet``);
    warnings are one-line notes for every command (:func:`kdfiqa.cli.main.warnings_as_notes`)."""
    from ..engine.distributed import is_main_process

    level = logging.ERROR if not is_main_process() else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("kdfiqa").setLevel(level)


def report(result: Any, seconds: float) -> None:
    """The end-of-run summary on rank 0: the best epoch and its figures, time, files, what next."""
    from ..engine.progress import shown_figures
    from ..engine.distributed import is_main_process

    if not is_main_process():
        return
    best = [r for r in result.history if r.get("best")]
    record = best[-1] if best else (result.history[-1] if result.history else {})
    metrics = record.get("val", {})
    figures = shown_figures(metrics, ", ")
    if not figures:
        epoch = ""
    elif best:
        epoch = f" (best epoch {record['epoch']}: {figures})"
    else:
        epoch = f" (no epoch kept as best: every validated epoch collapsed or gave no figure; last: {figures})"
    files = ", ".join(p.name for p in (result.output_dir / n for n in ("best.pt", "last.pt", "log.jsonl")) if p.exists())
    print(f"saved {result.checkpoint}{epoch} in {seconds:.0f} s; {result.output_dir} holds {files}")
    print(f"next: kdfiqa evaluate {result.checkpoint} --root DIR --csv FILE   |   "
          f"kdfiqa export {result.checkpoint} --out DIR")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on labeled face images",
        description="Train a FIQA model (e.g. a teacher) on images under --root labeled by --csv, "
                    "validating every epoch with SRCC, PLCC and the challenge score.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p, "train")
    p.set_defaults(func=run)


def run_stage(args: argparse.Namespace, command: str, stage: str) -> int:
    """Resolve ``command``'s config from ``args`` and print it (``--print-config``), or run ``stage``
    on it (the name of a :mod:`kdfiqa.pipeline` stage) and print the summary. The stage's checks
    (:func:`kdfiqa.pipeline.checks.preflight`: the run folder, the files, the settings) run first,
    before the stage's modules (torch, the models) are imported, so that a refusal answers at once."""
    from ..errors import ConfigError

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite cannot be combined: continue the run, or start it over")
    config = run_config_from_args(args, command)
    if args.print_config:
        config.validate()
        print(config.to_yaml(), end="")
        return 0
    _early_checks(config, command, args)
    from .. import pipeline
    from ..engine.distributed import is_main_process

    setup_logging(config.train.quiet)
    started = time.perf_counter()
    result = getattr(pipeline, stage)(config, resume=args.resume, allow_changes=args.allow_changes,
                                      overwrite=args.overwrite)
    report(result, time.perf_counter() - started)
    if result.collapsed and is_main_process():  # the last word of the run, so that it is not mistaken for a result
        print(f"warning: kdfiqa {command}: the run collapsed: every validated epoch predicted a near-constant "
              f"score, so {result.checkpoint.name} is not worth deploying; try a lower --lr or more epochs "
              "(log.jsonl flags each epoch: \"collapsed\": true)", file=sys.stderr)
    return 0


def _early_checks(config: Any, command: str, args: argparse.Namespace) -> None:
    """The stage's checks (:func:`kdfiqa.pipeline.checks.preflight`) before torch is imported, in a
    single process, under the run folder's writer lock as the stage will hold it (a folder another
    process writes is refused naming it first); under ``torchrun`` the stage checks on every rank."""
    import contextlib
    import os

    from ..pipeline.checks import preflight
    from ..writer_lock import writer_lock

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(writer_lock(os.path.join(config.train.output_dir, "")))
        except OSError:  # no lock file can be made there: the output checks refuse the path
            pass
        preflight(config, command, resume=args.resume, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "train", "train")
