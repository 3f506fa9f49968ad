"""TorchScript files (``.pt``): deprecated by PyTorch in favour of ``torch.export`` (the ``pt2``
format), kept for runtimes that only load TorchScript.

The model is traced at the export size; shape arithmetic done in tensor operations stays dynamic,
Python integers taken from the input's shape are frozen (the verification at other sizes catches
that).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_write import atomic_path
from ..budget import InputSize, parse_input_size
from .common import METADATA_KEY, ExportShape, example_batch, metadata_json

if TYPE_CHECKING:
    from torch import nn

__all__ = ["export_torchscript", "write_torchscript", "load_torchscript"]


def export_torchscript(model: nn.Module, path: str | Path, input_size: InputSize,
                       *, meta: dict[str, Any] | None = None) -> ExportShape:
    """Trace ``model`` (in eval mode) at ``input_size`` and save it as TorchScript to ``path``,
    atomically; ``meta`` is stored as the JSON extra file :data:`~kdfiqa.export.common.METADATA_KEY`."""
    with atomic_path(path) as tmp:
        return write_torchscript(model, tmp, input_size, meta)


def write_torchscript(model: nn.Module, path: Path, input_size: InputSize,
                      meta: dict[str, Any] | None) -> ExportShape:
    """Trace and save to ``path`` (no atomic move)."""
    import torch

    from ..modes import evaluating

    example = example_batch(parse_input_size(input_size), 1, seed=0)
    with evaluating(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path), _extra_files={METADATA_KEY: metadata_json(meta)})
    return ExportShape(True)


def load_torchscript(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The loaded TorchScript module (eval mode, CPU) and its metadata."""
    import torch

    extra = {METADATA_KEY: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    return module, json.loads(extra[METADATA_KEY] or "{}")
