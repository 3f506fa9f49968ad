"""``kdfiqa models``: list registered models; with ``--cost``, their cost at their deploy resolution."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

EXAMPLES = """examples:
  kdfiqa models                 # names, roles, deploy input sizes (at once)
  kdfiqa models 'emo2_*' --cost # also params, GFLOPs and the vquala2025 verdict, one row per model as measured
  kdfiqa models --cost --json   # a JSON list with the cost fields
"""

from ..size import format_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "models", help="list registered models (with --cost: params, GFLOPs and budget verdict)",
        description="List every registered model with its role and deploy input size. With --cost, build "
                    "each one (random weights) and measure it at its deploy input size against the "
                    "vquala2025 budget, printing each row as soon as it is measured (the large teachers "
                    "take tens of seconds).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'emo2_*'")
    p.add_argument("--cost", action="store_true", help="measure params, GFLOPs and the budget verdict")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def describe_models(pattern: str = "*", *, cost: bool = True,
                    on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict]:
    """One row per registered model matching ``pattern``: name, role, deploy input size and
    description; with ``cost`` also params, GFLOPs and the vquala2025 verdict, measured on the built
    model at its deploy input size (tens of seconds for the large teachers). ``on_row`` is called
    with each row as soon as it is made."""
    from ..models import list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        row = {"name": name, "role": "student" if info.is_student else "teacher",
               "input_size": list(info.default_input_size)}
        if cost:
            row.update(_measured(name))
        row["description"] = info.description
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _measured(name: str) -> dict[str, Any]:
    """Deploy input size, params, GFLOPs and vquala2025 verdict of the built model ``name``."""
    from ..budget import VQUALA2025, measure
    from ..models import create_model, deploy_config

    model = create_model(name)
    size = deploy_config(model).input_size
    report = measure(model, size)
    return {"input_size": list(size), "params": report.params, "gflops": report.gflops,
            "within_vquala2025": VQUALA2025.fits(report)}


COLUMNS = ("name", "role", "input", "params", "GFLOPs", "vquala2025")
"""The columns of the human listing (``params`` onwards with ``--cost`` only)."""


def _cells(row: dict[str, Any]) -> list[str]:
    cells = [row["name"], row["role"], format_size(row["input_size"], channels=True)]
    if "params" in row:
        cells += [f"{row['params']:,}", f"{row['gflops']:.3f}", "within" if row["within_vquala2025"] else "OVER"]
    return cells


def run(args: argparse.Namespace) -> int:
    """Print the rows of :func:`describe_models`: a JSON list, or one line per model as it is made
    (with ``--cost`` each line comes as soon as its model is measured)."""
    from ..budget import VQUALA2025
    from ..console import make_console
    from ..models import list_models

    names = list_models(args.pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r}; `kdfiqa models` lists them all "
              "(timm backbones are timm:NAME)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(describe_models(args.pattern, cost=args.cost)))
        return 0
    console = make_console()
    columns = COLUMNS if args.cost else COLUMNS[:3]
    widths = [max(len("name"), *map(len, names)), 7, 9, 11, 7, 10][:len(columns)]

    def line(cells: list[str]) -> None:
        text = "  ".join(c.ljust(w) if k < 3 or k == 5 else c.rjust(w)
                         for k, (c, w) in enumerate(zip(cells, widths)))
        console.print(text.rstrip(), markup=False, highlight=False)

    what = f"with their cost at their deploy input size against {VQUALA2025.describe()}" if args.cost else \
        "(kdfiqa models --cost adds params, GFLOPs and the budget verdict)"
    console.print(f"registered models ({len(names)}) {what}", markup=False, highlight=False)
    line(list(columns))
    describe_models(args.pattern, cost=args.cost, on_row=lambda row: line(_cells(row)))
    return 0
