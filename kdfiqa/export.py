"""Export a FIQA model for deployment: TorchScript and ONNX with dynamic height and width.

Exporting is three steps, in this order:

1. **Budget re-check.** The model being exported is measured (fvcore, eval mode, batch 1) at every
   input size it is exported for; a model over its budget is refused with :class:`BudgetExceeded`
   unless ``allow_over_budget=True``, in which case the reports still say by how much.
2. **Export.** TorchScript by tracing ``model.forward`` (scores in (0, 1), shape (B, 1)); ONNX with the
   TorchScript-based exporter at opset >= 17, where batch, height and width of the input ``image`` are
   dynamic axes. ONNX needs the optional extra ``kdfiqa[onnx]`` (``onnx`` and ``onnxruntime``).
3. **Verification.** Each exported file is loaded back (ONNX through onnxruntime when it is installed)
   and run on the same random batches as the eager model at several resolutions (by default the export
   size, a smaller and a larger one with odd sides). The largest absolute difference of the scores must
   be at most ``atol`` (default :data:`DEFAULT_ATOL` = 1e-4 on scores in (0, 1)); a larger difference
   means the export froze something that depends on the input size, and the file is not written
   (each file is verified under a temporary name and moved into place only once it passes).

By default a model is exported at its deploy config's input size
(:class:`~kdfiqa.models.deploy.DeployConfig`) and the files carry that config, its evaluation
transform included. torch, numpy and the exporters are imported by the functions that use them, so
the constants (:data:`EXPORT_FORMATS`, :data:`DEFAULT_ATOL`, :data:`DEFAULT_OPSET`) cost nothing to
import: command-line parsers use them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .atomic_write import atomic_path
from .budget import Budget, BudgetExceeded, CostReport, InputSize, measure, parse_input_size
from .budget.presets import DEFAULT_BUDGET, as_budget
from .errors import ConfigError, KdfiqaError, first_line
from .outputs import check_output_file
from .size import format_size

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "EXPORT_FORMATS",
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "ExportError",
    "Verification",
    "ExportResult",
    "verification_sizes",
    "export_torchscript",
    "export_onnx",
    "load_exported",
    "verify_exported",
    "export_model",
]

EXPORT_FORMATS = ("torchscript", "onnx")
DEFAULT_ATOL = 1e-4
"""Largest absolute difference allowed between exported and eager scores (scores lie in (0, 1))."""
DEFAULT_OPSET = 17
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
METADATA_KEY = "kdfiqa.json"
"""Name of the JSON metadata entry (TorchScript extra file, ONNX ``metadata_props`` key)."""

Runner = Callable[["torch.Tensor"], "np.ndarray"]


class ExportError(KdfiqaError):
    """An export that cannot be written, or whose output differs from the eager model's."""


@dataclass(frozen=True)
class Verification:
    """Exported vs eager scores on one random batch at one resolution."""

    format: str
    input_size: tuple[int, int, int]
    max_abs_diff: float
    atol: float
    eager_spread: float = 0.0
    """max - min of the eager scores over the batch: near 0, the model ignores its input (e.g. an
    untrained network) and the comparison says little."""

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol

    def describe(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        size = format_size(self.input_size, channels=True)
        return (f"{self.format} at {size}: max |diff| {self.max_abs_diff:.2e} (atol {self.atol:g}, "
                f"eager spread {self.eager_spread:.2e}) {verdict}")


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and checked."""

    paths: dict[str, Path]
    budget_reports: list[CostReport]
    within_budget: bool | None
    """``None`` when no budget was given."""
    verifications: list[Verification] = field(default_factory=list)
    unverified: dict[str, str] = field(default_factory=dict)
    """Formats that could not be run back here, with the reason (e.g. onnxruntime not installed)."""


def verification_sizes(input_size: InputSize) -> list[tuple[int, int, int]]:
    """The export size, a smaller one and a larger one, both with odd, unequal sides.

    Odd sides exercise padding and rounding paths that a square, even-sided trace never meets.
    """
    c, h, w = parse_input_size(input_size)
    smaller = (c, max(17, h * 3 // 4) | 1, max(17, w // 2 + 8) | 1)
    larger = (c, (h + h // 4) | 1, (w + w // 2) | 1)
    return list(dict.fromkeys([(c, h, w), smaller, larger]))


def _example(input_size: tuple[int, int, int], batch_size: int, seed: int) -> torch.Tensor:
    """Gaussian noise with a per-sample contrast, per-channel offset and horizontal ramp.

    Images that differ in their global statistics give a trained model different scores, so a
    comparison with the eager model is not satisfied by a near-constant output.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    b, (c, _, w) = batch_size, input_size
    noise = torch.randn((b, *input_size), generator=g)
    contrast = torch.rand((b, 1, 1, 1), generator=g) * 1.5 + 0.5
    offset = torch.rand((b, c, 1, 1), generator=g) * 2 - 1
    ramp = torch.linspace(-1, 1, w).view(1, 1, 1, w) * (torch.rand((b, 1, 1, 1), generator=g) * 2 - 1)
    return noise * contrast + offset + ramp


def _metadata_json(meta: dict[str, Any] | None) -> str:
    return json.dumps(meta or {}, sort_keys=True, default=str)


def export_torchscript(model: nn.Module, path: str | Path, input_size: InputSize,
                       *, meta: dict[str, Any] | None = None) -> Path:
    """Trace ``model`` (in eval mode) at ``input_size`` and save it as TorchScript to ``path``
    (atomically: :func:`kdfiqa.atomic_write.atomic_path`).

    ``meta`` is stored as the JSON extra file :data:`METADATA_KEY`
    (``torch.jit.load(path, _extra_files={"kdfiqa.json": ""})`` reads it back).
    """
    with atomic_path(path) as tmp:
        _write_torchscript(model, tmp, input_size, meta)
    return Path(path)


def _write_torchscript(model: nn.Module, path: Path, input_size: InputSize, meta: dict[str, Any] | None) -> None:
    import torch

    from .modes import evaluating

    example = _example(parse_input_size(input_size), 1, seed=0)
    with evaluating(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path), _extra_files={METADATA_KEY: _metadata_json(meta)})


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the optional extra: pip install 'kdfiqa[onnx]' "
                          "(or choose --format torchscript)") from None
    return onnx


def export_onnx(model: nn.Module, path: str | Path, input_size: InputSize, *,
                opset: int = DEFAULT_OPSET, meta: dict[str, Any] | None = None) -> Path:
    """Export ``model`` (in eval mode) to ONNX at ``path`` with dynamic batch, height and width.

    The graph has one input ``image`` (B, 3, H, W) and one output ``score`` (B, 1). ``meta`` is stored
    as JSON under the model's ``metadata_props`` key :data:`METADATA_KEY`. Needs ``kdfiqa[onnx]``.
    The file is written atomically (:func:`kdfiqa.atomic_write.atomic_path`).
    """
    if opset < DEFAULT_OPSET:
        raise ExportError(f"--opset {opset} is too old: dynamic height and width need opset >= {DEFAULT_OPSET}")
    with atomic_path(path) as tmp:
        _write_onnx(model, tmp, input_size, opset, meta)
    return Path(path)


def _write_onnx(model: nn.Module, path: Path, input_size: InputSize, opset: int, meta: dict[str, Any] | None) -> None:
    import torch

    from .modes import evaluating

    onnx = _import_onnx()
    example = _example(parse_input_size(input_size), 1, seed=0)
    with evaluating(model), warnings.catch_warnings(), _native_stdout_silenced():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=["image"], output_names=["score"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "score": {0: "batch"}},
            )
        except Exception as exc:  # the exporter raises many types; the user needs one line
            reason = first_line(exc)
            reason = reason.split(" Please feel free")[0].split("  [Caused by")[0].rstrip(". ")
            raise ExportError(
                f"ONNX export of {_display_name(model)} failed ({reason}); "
                "export --format torchscript instead, or write that operation so that it works for any "
                "height and width") from exc
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, _metadata_json(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Point the process's stdout (file descriptor 1) at the null device: when it fails, the
    TorchScript ONNX exporter prints its whole graph there from C++, before the exception that
    :func:`export_onnx` turns into one line."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable descriptor 1: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _display_name(model: nn.Module) -> str:
    """The model's registry name, else its class name."""
    from .models.deploy import deploy_config

    return deploy_config(model).name or type(model).__name__


def load_exported(path: str | Path, fmt: str) -> Runner | None:
    """A callable running the exported file on a CPU tensor batch, or ``None`` when it cannot be run
    here (ONNX without onnxruntime)."""
    import torch

    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            scripted = torch.jit.load(str(path), map_location="cpu").eval()

        def run_torchscript(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return scripted(x).numpy()

        return run_torchscript
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(x: torch.Tensor) -> np.ndarray:
            return session.run(["score"], {"image": x.numpy()})[0]

        return run_onnx
    raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")


def verify_exported(model: nn.Module, runner: Runner, fmt: str,
                    sizes: Iterable[InputSize], *, atol: float = DEFAULT_ATOL,
                    batch_size: int = 3, seed: int = 0) -> list[Verification]:
    """Run ``runner`` and the eager ``model`` (eval mode, on CPU) on the same random batch at each size."""
    import numpy as np

    from .modes import evaluating

    results = []
    with evaluating(model):
        for i, size in enumerate(sizes):
            size = parse_input_size(size)
            x = _example(size, batch_size, seed + i)
            eager = model(x).float().numpy()
            exported = np.asarray(runner(x), dtype=np.float32)
            if exported.shape != eager.shape:
                diff = float("inf")
            else:
                diff = float(np.max(np.abs(exported - eager))) if eager.size else 0.0
            spread = float(eager.max() - eager.min()) if eager.size else 0.0
            results.append(Verification(fmt, size, diff, atol, spread))
    return results


def export_model(
    model: nn.Module | str | os.PathLike[str],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = EXPORT_FORMATS,
    input_sizes: Sequence[InputSize] | None = None,
    budget: Budget | str | None = DEFAULT_BUDGET,
    allow_over_budget: bool = False,
    verify_sizes: Sequence[InputSize] | None = None,
    atol: float = DEFAULT_ATOL,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Re-check the budget, export ``model`` in each of ``formats`` to ``out_dir`` and verify each file.

    Args:
        model: a FIQA model (image batch → scores (B, 1)), or what ``kdfiqa export`` takes (a
            checkpoint, a registered name, ``timm:NAME``, ``file.py:factory``); it is moved to the
            CPU for export.
        input_sizes: the resolution(s) the model will be deployed at; the first is the tracing size.
            Default: its deploy config's ``input_size``.
        budget: a :class:`~kdfiqa.budget.Budget` or a registered name (default: ``vquala2025``, as
            ``kdfiqa export``), checked at every size in ``input_sizes`` (by default at the deploy
            size, or the budget's deployment size where that is larger:
            :meth:`~kdfiqa.budget.Budget.sizes_for`); ``None`` skips the check.
        allow_over_budget: export anyway when over ``budget`` (the result says so).
        verify_sizes: resolutions of the random verification batches (default:
            :func:`verification_sizes` of the first input size).
        name: file stem (default: the deploy config's ``name`` or ``"model"``).
        meta: JSON-serialisable facts stored in the files, over the defaults: ``model_name``,
            ``input_sizes``, ``deploy`` (the deploy config) and ``eval_transform`` (its transform).
        overwrite: replace files of the same names already in ``out_dir`` (refused otherwise, before
            anything is written, and again when a file is moved into place: one that another process
            wrote meanwhile is never replaced).

    Each file is written to a temporary file beside its destination, verified there and only then
    moved into place (:mod:`kdfiqa.atomic_write`): a file that fails verification never appears, and
    an earlier file of the same name stays as it was.

    Raises :class:`BudgetExceeded`, :class:`~kdfiqa.budget.MeasurementError`, or :class:`ExportError`
    when a format is unknown, a dependency is missing or an exported file disagrees with the eager model.
    """
    from .models.deploy import deploy_config

    from torch import nn

    from .targets import load_target

    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats!r}; choose from {', '.join(EXPORT_FORMATS)}")
    model = (model if isinstance(model, nn.Module) else load_target(model)).cpu()
    deploy = deploy_config(model)
    sizes = [parse_input_size(s) for s in (input_sizes or [deploy.input_size])]
    stem = name or deploy.name or "model"
    if not (math.isfinite(atol) and atol >= 0):
        raise ConfigError(f"atol {atol!r} must be a finite number >= 0 (the allowed |exported - eager| on scores)")
    if "onnx" in formats and opset < DEFAULT_OPSET:  # refused before any file is written
        raise ExportError(f"--opset {opset} is too old: dynamic height and width need opset >= {DEFAULT_OPSET}")
    out = Path(out_dir)
    for fmt in formats:
        check_output_file(out / f"{stem}{SUFFIXES[fmt]}", overwrite=overwrite, flag="export",
                          overwrite_flag="overwrite=True")
    reports: list[CostReport] = []
    within: bool | None = None
    if budget is not None:
        budget = as_budget(budget)
        checked = sizes if input_sizes else list(dict.fromkeys(s for size in sizes for s in budget.sizes_for(size)))
        reports = [measure(model, size, strict=True) for size in checked]
        over = [r for r in reports if not budget.fits(r)]
        within = not over
        if over and not allow_over_budget:
            raise BudgetExceeded(budget, over[0], stem)
    out.mkdir(parents=True, exist_ok=True)
    described = deploy.to_dict()
    meta = {"model_name": stem, "input_sizes": [list(s) for s in sizes], "deploy": described,
            "eval_transform": described["eval_transform"], **(meta or {})}
    result = ExportResult(paths={}, budget_reports=reports, within_budget=within)
    checks = [parse_input_size(s) for s in (verify_sizes or verification_sizes(sizes[0]))]
    for fmt in dict.fromkeys(formats):
        path = out / f"{stem}{SUFFIXES[fmt]}"
        with atomic_path(path, overwrite=overwrite) as tmp:  # moved into place once verified
            if fmt == "torchscript":
                _write_torchscript(model, tmp, sizes[0], meta)
            else:
                _write_onnx(model, tmp, sizes[0], opset, meta)
            runner = load_exported(tmp, fmt)
            if runner is None:
                result.unverified[fmt] = "onnxruntime is not installed (pip install 'kdfiqa[onnx]')"
            else:
                _verify(model, runner, fmt, checks, atol, stem, result)
        result.paths[fmt] = path
    return result


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
              "arithmetic in tensor ops or export at the deployment size with --input)")
