"""``kdfiqa export``: write TorchScript and ONNX files, re-check the budget, verify against eager.

Exit status 0 when every file is written and verified, 1 when the model is over its budget (nothing
is written unless ``--allow-over-budget``), 2 for bad paths, flags, checkpoints or a failed
verification.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..export import DEFAULT_ATOL, DEFAULT_OPSET, EXPORT_FORMATS
from ..size import format_size
from .budget import add_budget_flags, resolve_budget
from .config_flags import image_size_arg

if TYPE_CHECKING:
    from ..export import ExportResult

NO_BUDGET = "none"

EXAMPLES = """examples:
  kdfiqa export runs/student/best.pt --out exported/
  kdfiqa export runs/student/best.pt --out exported/ --format onnx --input 224x336
  kdfiqa export runs/ders/best.pt --out exported/ --input 224 512 --budget none
  kdfiqa export emo2_1m --out exported/ --format torchscript --json

Files: DIR/NAME.pt (TorchScript, torch.jit.load) and DIR/NAME.onnx (input "image" (B,3,H,W) with
dynamic B, H, W; output "score" (B,1) in (0,1)). Both hold a "kdfiqa.json" metadata entry with the
model name, the export sizes, the deploy config and the evaluation transform. ONNX needs
pip install 'kdfiqa[onnx]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "export", help="export to TorchScript/ONNX, re-check the budget, verify against eager",
        description="Export a model (a kdfiqa checkpoint, or any target `kdfiqa budget` accepts) to "
                    "TorchScript and ONNX with dynamic height and width. The budget is checked first, at "
                    "each --input size (default: the model's deploy size, or the budget's deployment size "
                    "where that is larger, 224x224 for vquala2025); each file is then run on random inputs "
                    "at several resolutions "
                    f"and must match the eager model within --atol (default {DEFAULT_ATOL:g}).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CKPT", help="checkpoint (*.pt), registered name, timm:NAME or file.py:factory")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=list(EXPORT_FORMATS),
                   dest="formats", help="formats to write (default: both)")
    p.add_argument("--input", nargs="+", metavar="SIZE", type=image_size_arg,
                   help="deployment size(s), e.g. 224 or 224x336; the first is the tracing size "
                        "(default: the model's deploy size, for a checkpoint the size it was trained for; "
                        "the budget is then also checked at its deployment size where that is larger)")
    add_budget_flags(p, "--budget", NO_BUDGET,
                     help="budget to re-check at each --input size (default: %(default)s)")
    p.add_argument("--allow-over-budget", action="store_true", help="export even when over the budget")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names already in --out")
    p.add_argument("--verify-input", nargs="+", metavar="SIZE", type=image_size_arg,
                   help="resolutions of the random verification inputs (default: the tracing size, "
                        "a smaller and a larger one with odd sides)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="allowed |exported - eager| on scores")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the target at its deploy size (or ``--input``), its deploy config in the files."""
    from rich.console import Console

    from ..budget import BudgetExceeded
    from ..export import export_model
    from ..targets import load_target

    from ..export import SUFFIXES
    from ..models.deploy import deploy_config
    from ..outputs import check_output_dir, check_output_file

    budget = None if args.preset == NO_BUDGET else resolve_budget(args)
    model = load_target(args.target)
    stem = deploy_config(model).name or "model"
    files = [f"{stem}{SUFFIXES[fmt]}" for fmt in args.formats]
    check_output_dir(args.out, inputs=[args.target], resume=True, files=files)
    for name in files:
        check_output_file(Path(args.out) / name, overwrite=args.overwrite)
    try:
        result = export_model(
            model, args.out, formats=args.formats, input_sizes=args.input, budget=budget,
            allow_over_budget=args.allow_over_budget, verify_sizes=args.verify_input, atol=args.atol,
            opset=args.opset, meta={"source": args.target}, overwrite=args.overwrite)
    except BudgetExceeded as exc:
        first, *rest = str(exc).splitlines()
        console = Console(stderr=True)
        console.print(f"kdfiqa export: {first}", markup=False, highlight=False)
        for line in rest:
            console.print(f"  {line}", markup=False, highlight=False)
        console.print("  nothing written; use --allow-over-budget to export anyway", markup=False,
                      highlight=False)
        return 1
    if args.json:
        print(json.dumps(_as_json(result)))
    else:
        _print_human(result, budget)
    return 0


def _as_json(result: ExportResult) -> dict:
    return {
        "paths": {fmt: str(path) for fmt, path in result.paths.items()},
        "within_budget": result.within_budget,
        "budget": [r.as_dict() for r in result.budget_reports],
        "verifications": [{"format": v.format, "input_size": list(v.input_size),
                           "max_abs_diff": v.max_abs_diff, "atol": v.atol, "eager_spread": v.eager_spread,
                           "passed": v.passed}
                          for v in result.verifications],
        "unverified": result.unverified,
    }


def _print_human(result: ExportResult, budget: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="exported files vs eager model")
    for col in ("format", "input", "max |diff|", "eager spread", "verdict"):
        table.add_column(col)
    for v in result.verifications:
        table.add_row(v.format, format_size(v.input_size, channels=True), f"{v.max_abs_diff:.2e}", f"{v.eager_spread:.2e}",
                      "[green]ok[/green]" if v.passed else "[bold red]MISMATCH[/bold red]")
    console.print(table)
    for fmt, reason in result.unverified.items():
        console.print(f"[yellow]{fmt} not verified: {reason}[/yellow]")
    for r in result.budget_reports:
        verdict = "fits" if budget is None or budget.fits(r) else "OVER"
        console.print(f"budget {budget.describe() if budget else ''} at {format_size(r.input_size, channels=True)}: "
                      f"{r.gflops:.4f} GFLOPs, {r.params:,} params: {verdict}", markup=False, highlight=False)
    if result.within_budget is False:
        console.print("[bold red]over budget (exported because of --allow-over-budget)[/bold red]")
    for fmt, path in result.paths.items():
        console.print(f"wrote {fmt}: {path}")
