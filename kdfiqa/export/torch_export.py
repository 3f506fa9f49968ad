"""``torch.export`` programs: the graph capture behind the ``pt2`` format and the dynamo ONNX exporter.

:func:`capture` exports ``model.forward`` with the batch, height and width of the input marked
``Dim.AUTO``: each stays dynamic where the model's code allows, over the range the model allows (a
stride-32 network needs sides of 64 or more, so that its last map is not 1x1, a dimension torch
treats as a constant); a dimension the code specialises becomes fixed at the export size, and the
returned :class:`~kdfiqa.export.common.ExportShape` says so in one line. Capturing dynamic sizes costs
symbolic shape reasoning: seconds for convolutional students, minutes for EMO/EMOv2, whose window
padding multiplies the guards; ``dynamic=False`` (``kdfiqa export --static-size``) captures at the
export size only, in seconds.
:func:`export_pt2` saves the program with ``torch.export.save``; ``torch.export.load(path).module()``
runs it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_write import atomic_path
from ..budget import InputSize, parse_input_size
from ..errors import first_line, spelled
from .common import METADATA_KEY, ExportError, ExportShape, display_name, example_batch, metadata_json

if TYPE_CHECKING:
    from torch import nn
    from torch.export import ExportedProgram

__all__ = ["capture", "export_pt2", "write_pt2", "load_pt2"]
EXAMPLE_BATCH = 2
"""Batch of the example input: a batch of 1 would be specialised (size-1 dimensions are constants)."""


def capture(model: nn.Module, input_size: InputSize, *, dynamic: bool = True
            ) -> tuple[ExportedProgram, ExportShape]:
    """``torch.export.export`` of ``model`` (in eval mode) with the batch dynamic and, with
    ``dynamic``, height and width as far as the model allows (see the module docstring)."""
    import torch
    from torch.export import Dim

    from ..modes import evaluating

    size = parse_input_size(input_size)
    example = example_batch(size, EXAMPLE_BATCH, seed=0)
    dims = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO} if dynamic else {0: Dim.AUTO}
    with evaluating(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
        except Exception as exc:  # the exporter raises many types; the user needs one line
            raise ExportError(f"torch.export of {display_name(model)} failed ({first_line(exc)}); "
                              f"export {spelled('--format torchscript', 'formats torchscript')} instead") from exc
    return program, _shape(program, size, dynamic, display_name(model))


def _shape(program: ExportedProgram, size: tuple[int, int, int], dynamic: bool, name: str) -> ExportShape:
    """Which sizes ``program`` accepts: its input's height and width symbols and their lower bounds."""
    import torch

    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in
                       program.graph_signature.user_inputs)
    sides = list(placeholder.meta["val"].shape[2:])
    symbols = [s.node.expr for s in sides if isinstance(s, torch.SymInt) and not s.node.expr.is_number]
    _, h, w = size
    if len(symbols) == 2:
        lower = [int(program.range_constraints[s].lower) for s in symbols if s in program.range_constraints]
        return ExportShape(True, max(lower, default=1))
    why = spelled("--static-size", "static_size=True") if not dynamic else "the model's shape arithmetic specialises them"
    return ExportShape(False, note=f"{name}: height and width fixed at {h}x{w} ({why}); export at each "
                                   f"deployment size with {spelled('--input', 'input_sizes')}")


def write_pt2(program: ExportedProgram, path: Path, meta: dict[str, Any] | None) -> None:
    """Save ``program`` to ``path`` with ``meta`` as the JSON extra file :data:`METADATA_KEY`."""
    import torch

    with open(path, "wb") as file:  # a file object: torch.export checks a path's suffix, not a file's
        torch.export.save(program, file, extra_files={METADATA_KEY: metadata_json(meta)})


def export_pt2(model: nn.Module, path: str | Path, input_size: InputSize, *,
               meta: dict[str, Any] | None = None, dynamic: bool = True) -> ExportShape:
    """Export ``model`` (in eval mode) as a ``torch.export`` program to ``path`` (``.pt2``), atomically.

    Returns which sizes the program accepts. ``torch.export.load(path).module()`` runs it;
    ``torch.export.load(path, extra_files={"kdfiqa.json": ""})`` reads ``meta`` back.
    """
    program, shape = capture(model, input_size, dynamic=dynamic)
    with atomic_path(path) as tmp:
        write_pt2(program, tmp, meta)
    return shape


def load_pt2(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The runnable module of a ``.pt2`` file and its metadata."""
    import json

    import torch

    extra = {METADATA_KEY: ""}
    with open(path, "rb") as file:
        program = torch.export.load(file, extra_files=extra)
    return program.module(), json.loads(extra[METADATA_KEY] or "{}")
