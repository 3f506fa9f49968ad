"""``kdfiqa search``: sample a family of student architectures under a budget and list the Pareto front.

Exit status 0 when some candidate fits the budget, 1 when none does, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..size import format_size
from .budget import add_budget_flags, resolve_budget
from .config_flags import add_threads_flag, image_size_arg

if TYPE_CHECKING:
    from ..budget.search import SearchResult

FAMILIES = ("emo2", "emo", "mobilenetv3_large", "mobilenetv3_small", "mobilenetv2", "lighthspa")
"""The families of :data:`kdfiqa.budget.search.SPACES`, listed here so that ``--help`` needs no torch."""

EXAMPLES = """examples:
  kdfiqa search
  kdfiqa search --family emo2 --trials 64 --seed 1 --out students/ --plot front.png
  kdfiqa search --family mobilenetv2 --max-gflops 0.3 --json
  kdfiqa search --trials 8 --input 64 --no-latency
  kdfiqa train --model students/emo2_search_03.yaml --root data/train --csv data/train.csv
  kdfiqa budget students/emo2_search_03.yaml

Each candidate is measured with fvcore at --input (default: the budget's deployment size, 224x224
for vquala2025); those over the budget are discarded and counted, the others timed on the CPU
(batch 1, median of --latency-runs passes). The Pareto front maximises parameters (the capacity
proxy) and minimises GFLOPs and latency; with --no-latency it is over parameters and GFLOPs only, and
the same --seed and --trials give the same front and files. --out writes each front configuration as
a model file (FAMILY_search_NN.yaml) for train, distill and budget.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "search", help="search a family of students under a budget and list the Pareto front",
        description="Draw candidate architectures of a family with a seeded sampler, measure each with "
                    "fvcore against a budget and list the Pareto front of those that fit.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=FAMILIES, default="emo2",
                   help="the architectures searched (default: %(default)s)")
    p.add_argument("--trials", type=int, default=32, metavar="N",
                   help="candidates drawn, at most 1000 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default: %(default)s)")
    p.add_argument("--input", type=image_size_arg, metavar="SIZE",
                   help="input size measured at: 224 or 224x336 (default: the budget's deployment size)")
    add_budget_flags(p, "--preset", help="named budget (default: %(default)s)")
    p.add_argument("--latency-runs", type=int, default=5, metavar="N",
                   help="timed CPU passes per candidate, median kept, at most 100 (default: %(default)s)")
    p.add_argument("--no-latency", action="store_true", help="skip timing: a front over parameters and GFLOPs")
    add_threads_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="draw the candidates and the front into a PNG")
    p.add_argument("--out", metavar="DIR", help="write each front configuration as a model file into DIR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier search (--out) and an existing --plot file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Search, then print the front (table or JSON) and write the requested plot and model files."""
    from ..budget.search import check_out_dir, search_students, write_front
    from ..outputs import check_output_file

    if args.latency_runs < 1:
        raise ConfigError(f"--latency-runs must be at least 1 (--no-latency skips timing), got {args.latency_runs}")
    if args.plot is not None:
        if not args.plot.lower().endswith(".png"):
            raise ConfigError(f"--plot {args.plot}: the plot is a PNG; give a FILE.png")
        check_output_file(args.plot, overwrite=args.overwrite, flag="--plot")  # before the search, not after
    if args.out is not None:
        check_out_dir(args.out, args.family, overwrite=args.overwrite)
    budget = resolve_budget(args)
    result = search_students(args.family, budget, input_size=args.input, trials=args.trials, seed=args.seed,
                    latency_runs=0 if args.no_latency else args.latency_runs, progress=True)
    files = [str(p) for p in write_front(result, args.out, overwrite=args.overwrite)] if args.out else []
    if args.plot is not None:
        _plot(result, args.plot, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({**result.as_dict(), "files": files, "plot": args.plot}))
    else:
        _print_human(result, files)
    return 0 if result.front else 1


def _plot(result: SearchResult, path: str, *, overwrite: bool) -> None:
    from ..plots import pareto_plot

    measured = [c for c in result.candidates if c.flops is not None]
    reference = result.reference
    pareto_plot([(c.gflops, c.params / 1e6) for c in measured], [(c.gflops, c.params / 1e6) for c in result.front],
                path, title=f"kdfiqa search: {result.space.family} at {format_size(result.input_size)}",
                reference=(result.space.model, reference.gflops, reference.params / 1e6)
                if reference.flops is not None else None,
                limits=(result.budget.max_gflops, result.budget.max_params / 1e6), overwrite=overwrite)


def _print_human(result: SearchResult, files: list[str]) -> None:
    from ..console import make_console
    from rich.table import Table

    console = make_console()
    size = format_size(result.input_size)
    reference = result.reference
    table = Table(title=f"Pareto front: {result.space.family} ({result.space.model}) at {size}, "
                        f"{result.budget.describe()}")
    for column in ("#", "trial", "params", f"x {result.space.model}", "GFLOPs", "latency ms"):
        table.add_column(column, justify="right")
    table.add_column("settings", overflow="fold")
    for k, c in enumerate(result.front, 1):
        settings = " ".join(f"{key}={','.join(map(str, v)) if isinstance(v, list) else v}"
                            for key, v in c.kwargs.items())
        table.add_row(str(k), str(c.trial), f"{c.params:,}", f"{c.params / reference.params:.2f}",
                      f"{c.gflops:.4f}", "-" if c.latency_ms is None else f"{c.latency_ms:.1f}", settings)
    console.print(table)
    gflops = "-" if reference.gflops is None else f"{reference.gflops:.4f}"
    console.print(f"{result.trials} trials (seed {result.seed}): {result.duplicates} duplicates, "
                  f"{result.over_budget} over the budget (discarded), {result.within_budget} within, "
                  f"{len(result.front)} on the front; {result.space.model} itself: {reference.params:,} params, "
                  f"{gflops} GFLOPs; {result.seconds:.1f} s", markup=False, highlight=False)
    for path in files:
        console.print(f"wrote {path}", markup=False, highlight=False)
