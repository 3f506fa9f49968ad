"""``kdfiqa budget``: measure a model with fvcore and say whether it fits a budget.

Exit status 0 when the model fits at every resolution, 1 when it is over at any, 2 when it cannot be
built or measured.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, TYPE_CHECKING

from ..budget.presets import BUDGETS, DEFAULT_BUDGET
from ..errors import ConfigError
from ..size import format_size
from .config_flags import image_size_arg

if TYPE_CHECKING:
    from ..budget import Budget, CostReport
    from ..budget.crosscheck import CrossCheck

EXAMPLES = """examples:
  kdfiqa budget emo2_1m
  kdfiqa budget emo2_1m --input 224 512x512
  kdfiqa budget timm:edgenext_xx_small --json
  kdfiqa budget my_models.py:build_student --max-gflops 0.3 --max-params 2000000
  kdfiqa budget runs/student/best.pt
  kdfiqa budget edgenext_xxs_fiqa --fill
  kdfiqa budget emo2_1m --fill --aspect 3:4 --stride 16
  kdfiqa budget emo2_1m --cross-check

--fill finds the largest input size on the model's stride grid (square, or of --aspect H:W) that fits
the budget, by bisection on fvcore's count, and prints the boundary: the largest size that fits and
the next one, which does not, with both counts. Exit status 0 when some size fits, 1 when none does.

--cross-check counts the model a second time with torch's FlopCounterMode (in multiply-adds: its two
FLOPs per multiply-add are halved) at the costliest size and names the modules where the counters
disagree, with the operators that make the difference. The verdict stays fvcore's.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``budget`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "budget", help="check a model against a FLOPs/params budget",
        description="Measure TARGET with fvcore (eval mode, batch 1, one multiply-add = one FLOP) at "
                    "each input size and compare it with a budget.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="registered model name, timm:NAME, file.py:factory, "
                                  "package.module:factory, or a kdfiqa checkpoint")
    p.add_argument("--input", nargs="+", metavar="SIZE", type=image_size_arg,
                   help="input size(s): 224, 224x336 or 3x224x336 (default: the model's deploy size, for a "
                        "checkpoint the size it was trained for, or the budget's deployment size where that "
                        "is larger: 224x224 for vquala2025)")
    add_budget_flags(p, "--preset", help="named budget (default: %(default)s)")
    p.add_argument("--fill", action="store_true", help="find the largest input size that fits the budget")
    p.add_argument("--stride", type=int, help="--fill: the size grid (default: 32)")
    p.add_argument("--aspect", type=_aspect, metavar="H:W",
                   help="--fill: height:width ratio of the sizes tried (default: 1:1)")
    p.add_argument("--cross-check", action="store_true",
                   help="also count with torch's FlopCounterMode and name the modules where it and fvcore "
                        "disagree (the verdict stays fvcore's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def _aspect(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ratio such as 3:4") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides of the ratio must be positive")
    return height, width


def add_budget_flags(p: argparse.ArgumentParser, flag: str, *extra_choices: str, help: str) -> None:
    """The budget choice ``flag`` (a :data:`~kdfiqa.budget.presets.BUDGETS` name or one of
    ``extra_choices``, stored as ``args.preset``) and ``--max-gflops``/``--max-params`` overriding it."""
    p.add_argument(flag, choices=[*BUDGETS, *extra_choices], default=DEFAULT_BUDGET, dest="preset", help=help)
    p.add_argument("--max-gflops", type=float, help="override the budget's GFLOPs limit")
    p.add_argument("--max-params", type=int, help="override the budget's parameter limit")


def resolve_budget(args: argparse.Namespace) -> Budget:
    """The budget named by ``args.preset`` with the ``--max-gflops``/``--max-params`` overrides."""
    from ..budget import Budget
    from ..budget.presets import get_budget

    base = get_budget(args.preset)
    if args.max_gflops is None and args.max_params is None:
        return base
    for flag, value in (("--max-gflops", args.max_gflops), ("--max-params", args.max_params)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag} must be a finite number > 0, got {value}")
    return Budget(max_gflops=base.max_gflops if args.max_gflops is None else args.max_gflops,
                  max_params=base.max_params if args.max_params is None else args.max_params,
                  name="custom", deploy_size=base.deploy_size)


def run(args: argparse.Namespace) -> int:
    """Measure the target at each size (default: its deploy config's input size) against the budget."""
    from ..budget import measure
    from ..budget.crosscheck import cross_check
    from ..models.deploy import deploy_config
    from ..targets import load_target

    budget = resolve_budget(args)
    if args.fill and args.cross_check:
        raise ConfigError("--cross-check compares the counters at measured sizes; drop --fill, or run "
                          "--cross-check with --input at the size --fill found")
    given = [flag for flag, value in (("--stride", args.stride), ("--aspect", args.aspect)) if value is not None]
    if given and not args.fill:
        raise ConfigError(f"{given[0]} only applies to --fill; add --fill or drop it")
    model = load_target(args.target)
    if args.fill:
        return _fill(args, model, budget)
    sizes = args.input or budget.sizes_for(deploy_config(model).input_size)
    reports = [measure(model, size, strict=True) for size in sizes]
    within = all(budget.fits(r) for r in reports)
    checked = (cross_check(model, max(reports, key=lambda r: r.flops).input_size)
               if args.cross_check else None)
    if args.json:
        print(json.dumps({
            "target": args.target,
            "budget": {"name": budget.name, "max_gflops": budget.max_gflops,
                       "max_params": budget.max_params},
            "results": [{**r.as_dict(), "within": budget.fits(r)} for r in reports],
            "within": within,
            **({"cross_check": checked.as_dict()} if checked else {}),
        }))
    else:
        _print_human(args.target, budget, reports)
        if checked:
            _print_cross_check(checked)
    return 0 if within else 1


def _fill(args: argparse.Namespace, model: Any, budget: Budget) -> int:
    """``--fill``: the boundary of :func:`kdfiqa.budget.fill.fill_budget`, as a table or JSON."""
    from ..console import make_console
    from rich.table import Table

    from ..budget.fill import fill_budget

    if args.input:
        raise ConfigError("--fill searches the input size itself; drop --input")
    result = fill_budget(model, budget, stride=32 if args.stride is None else args.stride,
                         aspect=(1, 1) if args.aspect is None else args.aspect)
    rows = [("largest that fits", result.fits), ("next, over", result.over)]
    if args.json:
        print(json.dumps({"target": args.target, "budget": budget.name, "traces": result.traces,
                          "stride": result.stride, "aspect": list(result.aspect),
                          **{key: (r.as_dict() if r else None) for key, r in zip(("fits", "over"), (result.fits,
                                                                                                    result.over))}}))
    else:
        table = Table(title=f"{args.target}: the largest input that fits {budget.describe()} "
                            f"({result.traces} fvcore traces)")
        for column in ("", "input", "GFLOPs", "params"):
            table.add_column(column, justify="left" if not column else "right")
        for label, report in rows:
            if report is not None:
                table.add_row(label, format_size(report.input_size), f"{report.gflops:.4f}",
                              f"{report.params:,}")
        make_console().print(table)
        if result.fits is None:
            make_console(stderr=True).print("no size on the grid fits: the model is over the budget at its smallest",
                                       markup=False, highlight=False)
    return 0 if result.fits is not None else 1


def _print_human(target: str, budget: Budget, reports: list[CostReport]) -> None:
    from ..console import make_console
    from rich.table import Table

    console = make_console()
    table = Table(title=f"{target} vs {budget.describe()}")
    for col in ("input", "GFLOPs", "params", "limit", "verdict"):
        table.add_column(col, justify="right" if col != "verdict" else "left")
    for r in reports:
        ok = budget.fits(r)
        table.add_row(format_size(r.input_size, channels=True), f"{r.gflops:.4f}", f"{r.params:,}",
                      f"{budget.max_gflops:g} / {budget.max_params:,}",
                      "[green]within[/green]" if ok else "[bold red]OVER[/bold red]")
    console.print(table)
    worst = max(reports, key=lambda r: r.flops)
    top = Table(title=f"costliest modules at {format_size(worst.input_size, channels=True)}")
    top.add_column("module")
    top.add_column("GFLOPs", justify="right")
    top.add_column("share", justify="right")
    for name, flops in worst.costliest(5):
        top.add_row(name, f"{flops / 1e9:.4f}", f"{100 * flops / max(worst.flops, 1):.1f}%")
    console.print(top)
    if worst.unused_params:
        console.print(f"[yellow]{len(worst.unused_params)} parameter tensors are never used by forward "
                      f"(e.g. {worst.unused_params[0]}) and still count towards the budget.[/yellow]")


def _print_cross_check(checked: CrossCheck) -> None:
    """The second counter's total beside fvcore's, and its disagreements grouped by operator."""
    from ..console import make_console
    from rich.table import Table

    console = make_console()
    size = format_size(checked.input_size, channels=True)
    console.print(f"second counter at {size}: FlopCounterMode {checked.flop_counter_macs:,} MACs, fvcore "
                  f"{checked.fvcore_macs:,} ({100 * checked.relative_gap:+.2f}%); the verdict is fvcore's",
                  markup=False, highlight=False)
    if not checked.disagreements:
        console.print("the counters agree on every module", markup=False, highlight=False)
        return
    groups: dict[tuple[str, ...], list] = {}
    for d in checked.disagreements:  # the largest difference first, so each group's first is its largest
        groups.setdefault(d.operators, []).append(d)
    table = Table(title="where the counters disagree (MACs)")
    table.add_column("operators", overflow="fold")
    for column in ("modules", "fvcore", "FlopCounterMode"):
        table.add_column(column, justify="right")
    table.add_column("largest", overflow="fold")
    for operators, group in groups.items():
        table.add_row(", ".join(operators), str(len(group)), f"{sum(d.fvcore_macs for d in group):,}",
                      f"{sum(d.flop_counter_macs for d in group):,}", group[0].module or "(model)")
    console.print(table)
    for group in groups.values():
        console.print(f"- {group[0].module or '(model)'}: {group[0].reason}", markup=False, highlight=False)
