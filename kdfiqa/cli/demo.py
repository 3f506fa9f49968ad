"""``kdfiqa demo``: the whole workflow (teacher, pseudo-labels, budget check, distilled student and
its control) on synthetic data, offline, in a few minutes on a CPU."""

from __future__ import annotations

import argparse

from .config_flags import add_threads_flag

EXAMPLES = """examples:
  kdfiqa demo                          # the full demo into ./kdfiqa-demo (a few minutes on 2 CPU cores)
  kdfiqa demo --quick --out /tmp/demo  # a smaller smoke run of every stage
  kdfiqa demo --images ~/faces         # your own unlabeled face photos as the clean sources
  kdfiqa demo --resume                 # continue a demo stopped by Ctrl-C: finished stages are reused

The data is synthetic: faces are degraded (blur, noise, JPEG, down-up scaling, over/under exposure)
at known severities and scored from them. The output folder gets the checkpoints, summary.json,
test predictions and PNG plots. Each stage is shown as it starts, each model's epochs as they finish.
Ctrl-C stops after the current step; --resume (with the options the demo was started with) reuses
the finished stages and continues the interrupted model from its last.pt.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="distil a teacher into a budget-capped student on synthetic data, offline",
        description="Build a synthetic face-quality data set, train an EMOv2 teacher on a small labeled "
                    "part, pseudo-label a larger unlabeled part, and train the EMOv2-1M student (checked "
                    "against the vquala2025 budget at 224x224) alone, with offline KD, with online KD on "
                    "the labeled and unlabeled images, with both, and under an untrained teacher; compare "
                    "them on a held-out test set.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="kdfiqa-demo", metavar="DIR", help="output folder (default: kdfiqa-demo)")
    p.add_argument("--quick", action="store_true", help="a much smaller run (seconds, for tests); no KD gain expected")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the training (default: 0)")
    p.add_argument("--images", metavar="DIR", help="folder of your own face photos to use as clean sources")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="default: cpu")
    add_threads_flag(p)
    p.add_argument("--overwrite", action="store_true", help="replace the demo already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the demo in --out: reuse its finished stages, resume the interrupted one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, images=args.images, device=args.device,
             overwrite=args.overwrite, resume=args.resume)
    return 0
