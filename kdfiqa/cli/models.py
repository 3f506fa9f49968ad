"""``kdfiqa models``: list registered models with their cost at their deploy resolution."""

from __future__ import annotations

import argparse
import json
import sys

from ..size import format_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "models", help="list registered models with params, GFLOPs and budget verdict",
        description="Build every registered model (random weights) and measure it at its deploy "
                    "input size against the vquala2025 budget.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'emo2_*'")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def describe_models(pattern: str = "*", *, progress: bool = False) -> list[dict]:
    """One row per registered model: name, role, deploy input size, params, GFLOPs, verdict;
    ``progress`` shows a bar on stderr while the models are built and measured (tens of seconds)."""
    from rich.console import Console
    from rich.progress import Progress

    from ..budget import VQUALA2025, measure
    from ..models import create_model, deploy_config, list_models, model_info

    rows = []
    names = list_models(pattern)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("measuring", total=len(names))
        for name in names:
            bar.update(task, description=f"measuring {name}")
            info = model_info(name)
            model = create_model(name)
            size = deploy_config(model).input_size
            report = measure(model, size)
            rows.append({
                "name": name,
                "role": "student" if info.is_student else "teacher",
                "input_size": list(size),
                "params": report.params,
                "gflops": report.gflops,
                "within_vquala2025": VQUALA2025.fits(report),
                "description": info.description,
            })
            bar.advance(task)
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON list) of :func:`describe_models`."""
    from rich.console import Console
    from rich.table import Table

    from ..budget import VQUALA2025

    rows = describe_models(args.pattern, progress=True)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no registered model matches {args.pattern!r}; `kdfiqa models` lists them all "
              "(timm backbones are timm:NAME)", file=sys.stderr)
        return 1
    table = Table(title=f"registered models ({len(rows)}), budget {VQUALA2025.describe()}")
    table.add_column("name", overflow="fold")  # a narrow terminal folds a name, never cuts it
    for col in ("role", "input", "params", "GFLOPs", "vquala2025"):
        table.add_column(col, justify="right" if col in ("params", "GFLOPs") else "left")
    for r in rows:
        table.add_row(r["name"], r["role"], format_size(r["input_size"], channels=True), f"{r['params']:,}",
                      f"{r['gflops']:.3f}",
                      "[green]within[/green]" if r["within_vquala2025"] else "[red]over[/red]")
    Console().print(table)
    return 0
