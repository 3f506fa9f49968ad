"""Export a model in several formats at once: budget re-check, export, verification, INT8.

:func:`export_model` runs, in this order:

1. **Checks before any file is written**: unknown formats and ONNX options, every optional module
   the requested formats need (:func:`~kdfiqa.export.common.require_dependencies`), files that
   already exist, the INT8 options.
2. **Budget re-check**: the model is measured (fvcore, eval mode, batch 1) at every deployment size;
   over its budget it is refused with :class:`~kdfiqa.budget.BudgetExceeded` unless
   ``allow_over_budget=True``.
3. **Export**, each file to a temporary name beside its destination: ``onnx``, ``pt2`` and
   ``torchscript`` (:mod:`~kdfiqa.export.onnx`, :mod:`~kdfiqa.export.torch_export`,
   :mod:`~kdfiqa.export.torchscript`); pt2 and dynamo ONNX share one ``torch.export`` capture.
4. **Verification**: each file is loaded back (:func:`load_exported`) and run on the same random
   batches as the eager model at the export size and at a smaller and a larger one with odd sides
   (those the file accepts: a file with fixed height and width is checked at its own size, with a
   note). The largest absolute score difference must be at most ``atol``.
5. **INT8** (optional): the verified float ONNX is quantised (:mod:`~kdfiqa.export.int8`) and, given
   labeled data, its accuracy compared with the float model's.

Only when every step passes are the files moved into place: a refused export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..atomic_write import atomic_path
from ..budget import Budget, BudgetExceeded, CostReport, InputSize, measure, parse_input_size
from ..budget.presets import DEFAULT_BUDGET, as_budget
from ..errors import ConfigError, spelled
from ..outputs import check_output_file
from ..size import format_size
from .common import (
    DEFAULT_ATOL,
    DEFAULT_FORMATS,
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    INT8_SUFFIX,
    SUFFIXES,
    ExportError,
    ExportResult,
    ExportShape,
    Runner,
    Verification,
    example_batch,
    require_dependencies,
)

if TYPE_CHECKING:
    from torch import nn

    from .int8 import Int8Options

__all__ = ["verification_sizes", "load_exported", "verify_exported", "output_names", "export_model"]


def verification_sizes(input_size: InputSize) -> list[tuple[int, int, int]]:
    """The export size, a smaller one and a larger one, both with odd, unequal sides.

    Odd sides exercise padding and rounding paths that a square, even-sided trace never meets.
    """
    c, h, w = parse_input_size(input_size)
    smaller = (c, max(17, h * 3 // 4) | 1, max(17, w // 2 + 8) | 1)
    larger = (c, (h + h // 4) | 1, (w + w // 2) | 1)
    return list(dict.fromkeys([(c, h, w), smaller, larger]))


def load_exported(path: str | Path, fmt: str) -> Runner:
    """A callable running the exported file of format ``fmt`` on a CPU tensor batch."""
    import torch

    if fmt in ("torchscript", "pt2"):
        if fmt == "pt2":
            from .torch_export import load_pt2 as load
        else:
            from .torchscript import load_torchscript as load
        module, _ = load(path)

        def run_torch(x: torch.Tensor) -> Any:
            with torch.no_grad():
                return module(x).numpy()

        return run_torch
    if fmt == "onnx":
        from .onnx import load_onnx_session

        session = load_onnx_session(path)
        return lambda x: session.run(["score"], {"image": x.numpy()})[0]
    raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")


def verify_exported(model: nn.Module, runner: Runner, fmt: str,
                    sizes: Iterable[InputSize], *, atol: float = DEFAULT_ATOL,
                    batch_size: int = 3, seed: int = 0) -> list[Verification]:
    """Run ``runner`` and the eager ``model`` (eval mode, on CPU) on the same random batch at each size."""
    import numpy as np

    from ..modes import evaluating

    results = []
    with evaluating(model):
        for i, size in enumerate(sizes):
            size = parse_input_size(size)
            x = example_batch(size, batch_size, seed + i)
            eager = model(x).detach().float().numpy()
            exported = np.asarray(runner(x), dtype=np.float32)
            if exported.shape != eager.shape:
                diff = float("inf")
            else:
                diff = float(np.max(np.abs(exported - eager))) if eager.size else 0.0
            spread = float(eager.max() - eager.min()) if eager.size else 0.0
            results.append(Verification(fmt, size, diff, atol, spread))
    return results


def output_names(stem: str, formats: Sequence[str], int8: bool = False, folder: bool = False) -> list[str]:
    """The file names :func:`export_model` writes for ``formats`` (and INT8, and the model folder's)."""
    from ..models.model_folder import CARD, CONFIG, WEIGHTS

    return ([f"{stem}{SUFFIXES[fmt]}" for fmt in dict.fromkeys(formats)] + ([f"{stem}{INT8_SUFFIX}"] if int8 else [])
            + ([WEIGHTS, CONFIG, CARD] if folder else []))


def export_model(
    model: nn.Module | str | os.PathLike[str],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    input_sizes: Sequence[InputSize] | None = None,
    budget: Budget | str | None = DEFAULT_BUDGET,
    allow_over_budget: bool = False,
    verify_sizes: Sequence[InputSize] | None = None,
    atol: float = DEFAULT_ATOL,
    opset: int = DEFAULT_OPSET,
    onnx_exporter: str = "dynamo",
    static_size: bool = False,
    int8: Int8Options | None = None,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
    folder: bool = True,
    source: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Re-check the budget, export ``model`` in each of ``formats`` to ``out_dir`` and verify each file.

    Args:
        model: a FIQA model (image batch → scores (B, 1)), or what ``kdfiqa export`` takes (a
            checkpoint, a registered name, ``timm:NAME``, ``file.py:factory``); it is moved to the
            CPU for export.
        formats: any of :data:`~kdfiqa.export.common.EXPORT_FORMATS` (default ``onnx`` and ``pt2``).
        input_sizes: the resolution(s) the model will be deployed at; the first is the export size.
            Default: its deploy config's ``input_size``.
        budget: a :class:`~kdfiqa.budget.Budget` or a registered name (default: ``vquala2025``, as
            ``kdfiqa export``), checked at every size in ``input_sizes`` (by default at the deploy
            size, or the budget's deployment size where that is larger:
            :meth:`~kdfiqa.budget.Budget.sizes_for`); ``None`` skips the check.
        allow_over_budget: export anyway when over ``budget`` (the result says so).
        verify_sizes: resolutions of the random verification batches (default:
            :func:`verification_sizes` of the export size).
        onnx_exporter: ``dynamo`` (default) or ``legacy`` (:mod:`kdfiqa.export.onnx`).
        static_size: fix height and width of pt2 and dynamo ONNX at the export size (the capture of
            dynamic sizes takes minutes for EMO models: :mod:`kdfiqa.export.torch_export`).
        int8: also write ``NAME.int8.onnx`` (needs ``onnx`` in ``formats``), see
            :class:`~kdfiqa.export.int8.Int8Options`.
        name: file stem (default: the deploy config's ``name`` or ``"model"``).
        meta: JSON-serialisable facts stored in the files, over the defaults: ``model_name``,
            ``input_sizes``, ``deploy`` (the deploy config) and ``eval_transform`` (its transform).
        folder: also write the model folder (:mod:`kdfiqa.models.model_folder`: ``model.safetensors``,
            ``config.json`` with the deploy config and the budget verdict, a ``README.md`` model card)
            into ``out_dir``, for a model the registry can rebuild (otherwise a note says why not).
        source: the kdfiqa checkpoint the model came from, whose run configuration (teacher, recipe)
            and validation metrics go into the model card (default: ``model`` when it is one).
        overwrite: replace files of the same names already in ``out_dir`` (refused otherwise, before
            anything is written, and again when a file is moved into place).

    Raises :class:`~kdfiqa.budget.BudgetExceeded`, :class:`~kdfiqa.budget.MeasurementError`,
    :class:`~kdfiqa.export.common.ExportError` (unknown format, missing dependency, an exported file
    that disagrees with the eager model) or :class:`~kdfiqa.export.common.AccuracyDropError`.
    """
    from torch import nn

    from ..models.deploy import deploy_config
    from ..targets import load_target
    from .onnx import check_onnx_options

    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats!r}; choose from {', '.join(EXPORT_FORMATS)}")
    formats = list(dict.fromkeys(formats))
    if int8 is not None and "onnx" not in formats:
        raise ExportError(f"{spelled('--int8', 'int8')} quantises the ONNX file: add onnx to {spelled('--format', 'formats')}")
    if "onnx" in formats:
        check_onnx_options(onnx_exporter, opset)
    require_dependencies(formats, onnx_exporter=onnx_exporter, int8=int8 is not None)
    if not (math.isfinite(atol) and atol >= 0):
        raise ConfigError(f"atol {atol!r} must be a finite number >= 0 (the allowed |exported - eager| on scores)")
    source = source if source is not None else None if isinstance(model, nn.Module) else model
    model = (model if isinstance(model, nn.Module) else load_target(model)).cpu()
    deploy = deploy_config(model)
    folder_note = _folder_refusal(deploy) if folder else None
    folder = folder and folder_note is None
    sizes = [parse_input_size(s) for s in (input_sizes or [deploy.input_size])]
    stem = name or deploy.name or "model"
    out = Path(out_dir)
    for file_name in output_names(stem, formats, int8 is not None, folder):
        check_output_file(out / file_name, overwrite=overwrite, flag="export")
    calibration = int8.calibration(model, sizes[0] if input_sizes else None) if int8 is not None else None
    reports, within = _check_budget(model, budget, sizes, bool(input_sizes), allow_over_budget, stem)
    out.mkdir(parents=True, exist_ok=True)
    described = deploy.to_dict()
    meta = {"model_name": stem, "input_sizes": [list(s) for s in sizes], "deploy": described,
            "eval_transform": described["eval_transform"], **(meta or {})}
    result = ExportResult(paths={}, budget_reports=reports, within_budget=within)
    checks = [parse_input_size(s) for s in (verify_sizes or verification_sizes(sizes[0]))]
    with contextlib.ExitStack() as moves:  # every file moved into place only once all passed
        temporaries = {fmt: moves.enter_context(atomic_path(out / f"{stem}{SUFFIXES[fmt]}", overwrite=overwrite))
                       for fmt in formats}
        captured = None
        for fmt in formats:
            tmp = temporaries[fmt]
            if fmt == "torchscript":
                from .torchscript import write_torchscript

                shape = write_torchscript(model, tmp, sizes[0], meta)
            else:
                if captured is None and (fmt == "pt2" or onnx_exporter == "dynamo"):
                    from .torch_export import capture

                    captured = capture(model, sizes[0], dynamic=not static_size)
                if fmt == "pt2":
                    from .torch_export import write_pt2

                    write_pt2(captured[0], tmp, meta)
                    shape = captured[1]
                else:
                    from .onnx import write_onnx

                    program, shape = captured if captured is not None else (None, None)
                    shape = write_onnx(model, tmp, sizes[0], exporter=onnx_exporter, opset=opset, meta=meta,
                                       program=program, shape=shape)
            result.shapes[fmt] = shape
            _verify(model, load_exported(tmp, fmt), fmt, _accepted(checks, shape, sizes[0], fmt, result),
                    atol, stem, result)
            result.paths[fmt] = out / f"{stem}{SUFFIXES[fmt]}"
        if int8 is not None:
            int8_path = out / f"{stem}{INT8_SUFFIX}"
            tmp = moves.enter_context(atomic_path(int8_path, overwrite=overwrite))
            result.int8 = int8.write(temporaries["onnx"], tmp, calibration)
            result.paths["onnx-int8"] = int8_path
        if folder:
            from ..models.model_folder import write_model_folder

            write_model_folder(_card_source(source, model), out, budget=budget, overwrite=overwrite)
            result.paths["folder"] = out
    if folder_note is not None:
        result.notes.append(folder_note)
    return result


def _folder_refusal(deploy: Any) -> str | None:
    """Why no model folder can be written for a model of this deploy config (``None``: one can)."""
    from ..models import restorable_kwargs

    if deploy.name is None:
        return "no model folder: the model was built outside the registry, so a folder could not rebuild it"
    try:
        allowed = restorable_kwargs(deploy.name)
    except ConfigError:
        return f"no model folder: {deploy.name!r} is not a registered model a folder could rebuild"
    refused = sorted(set(deploy.kwargs) - allowed)
    if refused:
        return f"no model folder: its argument(s) {', '.join(refused)} cannot be replayed from a saved model"
    return None


def _card_source(source: Any, model: nn.Module) -> Any:
    """The checkpoint behind the model card where ``source`` is one, else the model itself."""
    from ..targets import CHECKPOINT_SUFFIXES

    if source is not None and Path(source).suffix in CHECKPOINT_SUFFIXES and Path(source).is_file():
        return source
    return model


def _check_budget(model: nn.Module, budget: Budget | str | None, sizes: list[tuple[int, int, int]],
                  explicit: bool, allow_over_budget: bool, stem: str) -> tuple[list[CostReport], bool | None]:
    """The cost reports at each deployment size and whether all fit; over budget raises unless allowed."""
    if budget is None:
        return [], None
    budget = as_budget(budget)
    checked = sizes if explicit else list(dict.fromkeys(s for size in sizes for s in budget.sizes_for(size)))
    reports = [measure(model, size, strict=True) for size in checked]
    over = [r for r in reports if not budget.fits(r)]
    if over and not allow_over_budget:
        raise BudgetExceeded(budget, over[0], stem)
    return reports, not over


def _accepted(checks: list[tuple[int, int, int]], shape: ExportShape, export_size: tuple[int, int, int],
              fmt: str, result: ExportResult) -> list[tuple[int, int, int]]:
    """The verification sizes the file accepts (at least the export size); the others noted."""
    kept = [s for s in checks if shape.accepts(s, export_size)] or [export_size]
    if shape.note and shape.note not in result.notes:
        result.notes.append(shape.note)
    skipped = [s for s in checks if s not in kept]
    if skipped:
        result.notes.append(f"{fmt}: not verified at " + ", ".join(format_size(s, channels=True) for s in skipped)
                            + (f" (sides below {shape.min_side})" if shape.dynamic_size else " (fixed size)")
                            + "; verified at " + ", ".join(format_size(s, channels=True) for s in kept))
    return kept


def _verify(model: nn.Module, runner: Runner, fmt: str, checks: list[tuple[int, int, int]], atol: float, stem: str,
            result: ExportResult) -> None:
    """Add the verifications of ``runner`` to ``result``; a mismatch raises :class:`ExportError`."""
    verifications = verify_exported(model, runner, fmt, checks, atol=atol)
    result.verifications.extend(verifications)
    failed = [v for v in verifications if not v.passed]
    if failed:
        raise ExportError(
            f"{fmt} export of {stem} disagrees with the eager model, file not written: "
            + "; ".join(v.describe() for v in failed)
            + " (forward probably turns the input size into Python constants; keep shape "
              f"arithmetic in tensor ops or export at the deployment size with {spelled('--input', 'input_sizes')})")
