"""``kdfiqa export``: write ONNX, pt2 (torch.export) and TorchScript files, optionally INT8 ONNX;
re-check the budget, verify against eager.

Exit status 0 when every file is written and verified, 1 when the model is over its budget (nothing
is written unless ``--allow-over-budget``) or INT8 loses more than ``--max-drop``, 2 for bad paths,
flags, checkpoints, missing optional dependencies or a failed verification.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..export import (
    DEFAULT_ATOL,
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_FORMATS,
    DEFAULT_MAX_DROP,
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    MAX_CALIBRATION_COUNT,
    MIN_OPSET,
    ONNX_EXPORTERS,
)
from ..size import format_size
from .budget import add_budget_flags, resolve_budget
from .config_flags import image_size_arg

if TYPE_CHECKING:
    from rich.console import Console

    from ..export import ExportResult
    from ..export.int8 import Int8Options, Int8Report

NO_BUDGET = "none"

EXAMPLES = f"""examples:
  kdfiqa export runs/student/best.pt --out exported/
  kdfiqa export runs/student/best.pt --out exported/ --format onnx --input 224x336
  kdfiqa export runs/student/best.pt --out exported/ --format onnx --int8 --calibrate-images data/train \\
      --check-csv data/val.csv --check-root data/images
  kdfiqa export runs/ders/best.pt --out exported/ --input 224 512 --budget none
  kdfiqa export emo2_1m --out exported/ --format pt2 torchscript --json

Files: DIR/NAME.onnx (input "image" (B,3,H,W), output "score" (B,1) in (0,1); dynamo exporter,
--onnx-exporter legacy for the TorchScript-based one), DIR/NAME.pt2 (torch.export program:
torch.export.load(path).module()), DIR/NAME.pt (TorchScript, deprecated by PyTorch: torch.jit.load)
and DIR/NAME.int8.onnx (--int8). Batch, height and width are dynamic where the model allows; where
dynamic height and width fail, the file is fixed at the export size and a note says so. Each file
holds a "kdfiqa.json" metadata entry with the model name, the export sizes, the deploy config and
the evaluation transform. ONNX and INT8 need pip install 'kdfiqa[onnx]'.

INT8: static quantisation by ONNX Runtime (QDQ, per-channel INT8 weights), calibrated on up to
--calibrate-count images (default {DEFAULT_CALIBRATION_COUNT}, at most {MAX_CALIBRATION_COUNT}) rendered by
the model's evaluation transform. With --check-csv/--check-root, SRCC, PLCC and the challenge score
of float32 and INT8 are printed side by side and the INT8 file is refused (exit 1) when its score is
lower by more than --max-drop (default {DEFAULT_MAX_DROP:g}).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "export", help="export to ONNX/pt2/TorchScript (and INT8), re-check the budget, verify against eager",
        description="Export a model (a kdfiqa checkpoint, or any target `kdfiqa budget` accepts) to "
                    "ONNX, torch.export (pt2) and TorchScript with dynamic height and width where the model "
                    "allows, and optionally to INT8 ONNX. The budget is checked first, at "
                    "each --input size (default: the model's deploy size, or the budget's deployment size "
                    "where that is larger, 224x224 for vquala2025); each file is then run on random inputs "
                    "at several resolutions "
                    f"and must match the eager model within --atol (default {DEFAULT_ATOL:g}).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CKPT", help="checkpoint (*.pt), registered name, timm:NAME or file.py:factory")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=list(DEFAULT_FORMATS),
                   dest="formats", help=f"formats to write (default: {' '.join(DEFAULT_FORMATS)}; torchscript "
                                        "is deprecated by PyTorch)")
    p.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="dynamo",
                   help="dynamo: torch.onnx.export(dynamo=True) (default); legacy: the TorchScript-based "
                        "exporter, deprecated by PyTorch")
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
    p.add_argument("--static-size", action="store_true",
                   help="fix height and width of pt2 and ONNX at the export size (batch stays dynamic): "
                        "seconds instead of minutes for EMO/EMOv2, whose dynamic capture is slow")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default %(default)s, >= {MIN_OPSET})")
    q = p.add_argument_group("INT8 (ONNX Runtime static quantisation)")
    q.add_argument("--int8", action="store_true", help="also write NAME.int8.onnx (needs --format onnx)")
    q.add_argument("--calibrate-images", type=Path, metavar="DIR", help="calibration image folder")
    q.add_argument("--calibrate-csv", type=Path, metavar="CSV", help="calibration images as a labeled CSV ...")
    q.add_argument("--calibrate-root", type=Path, metavar="DIR", help="... under this image root")
    q.add_argument("--calibrate-count", type=int, default=DEFAULT_CALIBRATION_COUNT, metavar="N",
                   help=f"calibration images, evenly spaced (default %(default)s, at most {MAX_CALIBRATION_COUNT})")
    q.add_argument("--check-csv", type=Path, metavar="CSV", help="labeled images to compare float32 and INT8 on ...")
    q.add_argument("--check-root", type=Path, metavar="DIR", help="... under this image root")
    q.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                   help="largest allowed drop of the challenge score (SRCC+PLCC)/2 from float32 to INT8 "
                        "(default %(default)s); a larger drop writes no INT8 file and exits 1")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the target at its deploy size (or ``--input``), its deploy config in the files."""
    from ..budget import BudgetExceeded
    from ..console import make_console
    from ..export import AccuracyDropError, export_model, output_names, require_dependencies
    from ..models.deploy import deploy_config
    from ..outputs import check_output_dir, check_output_file
    from ..targets import load_target

    require_dependencies(args.formats, onnx_exporter=args.onnx_exporter, int8=args.int8)
    int8 = _int8_options(args)
    budget = None if args.preset == NO_BUDGET else resolve_budget(args)
    model = load_target(args.target)
    stem = deploy_config(model).name or "model"
    files = output_names(stem, args.formats, args.int8, folder=True)
    check_output_dir(args.out, inputs=[args.target], resume=True, files=files)
    for name in files:
        check_output_file(Path(args.out) / name, overwrite=args.overwrite)
    try:
        result = export_model(
            model, args.out, formats=args.formats, input_sizes=args.input, budget=budget,
            allow_over_budget=args.allow_over_budget, verify_sizes=args.verify_input, atol=args.atol,
            opset=args.opset, onnx_exporter=args.onnx_exporter, static_size=args.static_size, int8=int8, meta={"source": args.target},
            source=args.target, overwrite=args.overwrite)
    except AccuracyDropError as exc:
        make_console(stderr=True).print(f"kdfiqa export: {exc}", markup=False, highlight=False)
        return 1
    except BudgetExceeded as exc:
        first, *rest = str(exc).splitlines()
        console = make_console(stderr=True)
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


def _int8_options(args: argparse.Namespace) -> Int8Options | None:
    """The INT8 options of the flags (``None`` without ``--int8``); INT8 flags without it are refused."""
    from ..errors import ConfigError

    flags = ("calibrate_images", "calibrate_csv", "calibrate_root", "check_csv", "check_root")
    if not args.int8:
        given = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"{given[0]} only applies with --int8")
        return None
    from ..export.int8 import Int8Options

    return Int8Options(args.calibrate_images, args.calibrate_csv, args.calibrate_root, args.calibrate_count,
                       args.check_csv, args.check_root, args.max_drop)


def _as_json(result: ExportResult) -> dict:
    return {
        "paths": {fmt: str(path) for fmt, path in result.paths.items()},
        "within_budget": result.within_budget,
        "budget": [r.as_dict() for r in result.budget_reports],
        "verifications": [{"format": v.format, "input_size": list(v.input_size),
                           "max_abs_diff": v.max_abs_diff, "atol": v.atol, "eager_spread": v.eager_spread,
                           "passed": v.passed}
                          for v in result.verifications],
        "dynamic_size": {fmt: shape.dynamic_size for fmt, shape in result.shapes.items()},
        "notes": result.notes,
        "int8": result.int8.as_dict() if result.int8 is not None else None,
    }


def _print_human(result: ExportResult, budget: Any) -> None:
    from rich.table import Table

    from ..console import make_console

    console = make_console()
    table = Table(title="exported files vs eager model")
    for col in ("format", "input", "max |diff|", "eager spread", "verdict"):
        table.add_column(col)
    for v in result.verifications:
        table.add_row(v.format, format_size(v.input_size, channels=True), f"{v.max_abs_diff:.2e}", f"{v.eager_spread:.2e}",
                      "[green]ok[/green]" if v.passed else "[bold red]MISMATCH[/bold red]")
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False, style="yellow")
    if result.int8 is not None:
        _print_int8(console, result.int8)
    for r in result.budget_reports:
        verdict = "fits" if budget is None or budget.fits(r) else "OVER"
        console.print(f"budget {budget.describe() if budget else ''} at {format_size(r.input_size, channels=True)}: "
                      f"{r.gflops:.4f} GFLOPs, {r.params:,} params: {verdict}", markup=False, highlight=False)
    if result.within_budget is False:
        console.print("[bold red]over budget (exported because of --allow-over-budget)[/bold red]")
    for fmt, path in result.paths.items():
        console.print(f"wrote {fmt}: {path}")


def _print_int8(console: Console, report: Int8Report) -> None:
    """Float32 vs INT8: file sizes, and the metrics side by side when there was a check set."""
    from rich.table import Table

    console.print(f"INT8: calibrated on {report.calibration_images} images; {report.float_bytes / 1e6:.2f} MB -> "
                  f"{report.int8_bytes / 1e6:.2f} MB", markup=False, highlight=False)
    if report.float_metrics is None or report.int8_metrics is None:
        console.print("INT8 accuracy not checked (give --check-csv and --check-root)", style="yellow")
        return
    table = Table(title=f"float32 vs INT8 on {report.float_metrics['n']} check images")
    for col in ("", "SRCC", "PLCC", "score"):
        table.add_column(col)
    for label, metrics in (("float32", report.float_metrics), ("INT8", report.int8_metrics)):
        table.add_row(label, *(f"{metrics[k]:.4f}" for k in ("srcc", "plcc", "score")))
    console.print(table)
    console.print(f"score drop {report.drop:.4f} (allowed {report.max_drop:g})", markup=False, highlight=False)
