"""What every export format shares: the format table, errors, results, the random verification
inputs, the metadata entry and the check of optional dependencies.

Nothing here imports torch at module level: command-line parsers read :data:`EXPORT_FORMATS`,
:data:`DEFAULT_ATOL` and friends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..budget import CostReport
from ..errors import KdfiqaError, spelled
from ..size import format_size

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "EXPORT_FORMATS",
    "DEFAULT_FORMATS",
    "ONNX_EXPORTERS",
    "MIN_OPSET",
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "SUFFIXES",
    "INT8_SUFFIX",
    "METADATA_KEY",
    "ONNX_EXTRA",
    "DEFAULT_CALIBRATION_COUNT",
    "MAX_CALIBRATION_COUNT",
    "DEFAULT_MAX_DROP",
    "Runner",
    "ExportError",
    "AccuracyDropError",
    "ExportShape",
    "Verification",
    "ExportResult",
    "require_dependencies",
    "example_batch",
    "metadata_json",
    "display_name",
    "native_stdout_silenced",
]

EXPORT_FORMATS = ("onnx", "pt2", "torchscript")
"""``onnx`` (ONNX Runtime and any ONNX consumer), ``pt2`` (a ``torch.export`` program) and
``torchscript`` (deprecated by PyTorch in favour of ``torch.export``; kept for older runtimes)."""
DEFAULT_FORMATS = ("onnx", "pt2")
ONNX_EXPORTERS = ("dynamo", "legacy")
"""``dynamo``: ``torch.onnx.export(..., dynamo=True)`` from a ``torch.export`` program (the default);
``legacy``: the TorchScript-based exporter, kept while PyTorch ships it."""
DEFAULT_ATOL = 1e-4
"""Largest absolute difference allowed between exported and eager scores (scores lie in (0, 1))."""
DEFAULT_OPSET = 18
"""ONNX opset; the dynamo exporter writes 18 or newer, the legacy one accepts 17 and up."""
MIN_OPSET = 17
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
INT8_SUFFIX = ".int8.onnx"
METADATA_KEY = "kdfiqa.json"
"""Name of the JSON metadata entry (TorchScript and pt2 extra file, ONNX ``metadata_props`` key)."""
ONNX_EXTRA = "pip install 'kdfiqa[onnx]'"
DEFAULT_CALIBRATION_COUNT = 64
"""INT8 calibration images used by default (:mod:`kdfiqa.export.int8`)."""
MAX_CALIBRATION_COUNT = 1024
DEFAULT_MAX_DROP = 0.01
"""Largest allowed drop of the challenge score ((SRCC + PLCC) / 2) from float32 to INT8."""

_MODULES = {"onnx": ("onnx", "onnxruntime"), "onnx-dynamo": ("onnxscript",), "int8": ("onnx", "onnxruntime")}

Runner = Callable[["torch.Tensor"], "np.ndarray"]


class ExportError(KdfiqaError):
    """An export that cannot be written, or whose output differs from the eager model's."""


class AccuracyDropError(ExportError):
    """The INT8 model scores worse than the float32 one by more than the allowed drop."""


@dataclass(frozen=True)
class ExportShape:
    """Which input dimensions an exported file accepts at any value."""

    dynamic_size: bool
    """Height and width are free (from :attr:`min_side` up); else fixed at the export size."""
    min_side: int = 1
    note: str = ""
    """Why the sizes are fixed, when they are."""

    def accepts(self, input_size: tuple[int, int, int], export_size: tuple[int, int, int]) -> bool:
        """Whether an input of ``input_size`` may be fed to the file exported at ``export_size``."""
        if not self.dynamic_size:
            return input_size == export_size
        return min(input_size[1:]) >= self.min_side


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
        return (f"{self.format} at {format_size(self.input_size, channels=True)}: max |diff| {self.max_abs_diff:.2e} (atol {self.atol:g}, "
                f"eager spread {self.eager_spread:.2e}) {verdict}")


@dataclass
class ExportResult:
    """What :func:`~kdfiqa.export.export_model` wrote and checked."""

    paths: dict[str, Path]
    budget_reports: list[CostReport]
    within_budget: bool | None
    """``None`` when no budget was given."""
    verifications: list[Verification] = field(default_factory=list)
    shapes: dict[str, ExportShape] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """One line each: a format exported with fixed sizes, a verification size left out."""
    int8: Any = None
    """The :class:`~kdfiqa.export.int8.Int8Report` when INT8 was asked for."""


def require_dependencies(formats: Iterable[str], *, onnx_exporter: str = "dynamo", int8: bool = False) -> None:
    """Import every optional module the requested ``formats`` (and INT8) need, before any file is
    written; the first one missing raises :class:`ExportError` naming the extra to install."""
    needed: list[str] = []
    if "onnx" in formats or int8:
        needed += _MODULES["onnx"]
        if onnx_exporter == "dynamo":
            needed += _MODULES["onnx-dynamo"]
    for module in dict.fromkeys(needed):
        try:
            importlib.import_module(module)
        except ImportError:
            what = "INT8 quantisation" if int8 and "onnx" not in formats else "ONNX export"
            raise ExportError(f"{what} needs {module}, which is not installed: {ONNX_EXTRA} "
                              f"(or leave onnx out of {spelled('--format', 'formats')})") from None


def example_batch(input_size: tuple[int, int, int], batch_size: int, seed: int) -> torch.Tensor:
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


def metadata_json(meta: dict[str, Any] | None) -> str:
    """``meta`` as the JSON text stored under :data:`METADATA_KEY`."""
    return json.dumps(meta or {}, sort_keys=True, default=str)


def display_name(model: nn.Module) -> str:
    """The model's registry name, else its class name."""
    from ..models.deploy import deploy_config

    return deploy_config(model).name or type(model).__name__


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Point the process's stdout (file descriptor 1) at the null device: the exporters print graphs
    and progress there, from C++ too, before an exception that kdfiqa turns into one line."""
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
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
