"""ONNX files: the dynamo exporter (default) and the TorchScript-based legacy exporter.

* ``dynamo``: the model is captured by :func:`kdfiqa.export.torch_export.capture` (dynamic batch,
  height and width where the model allows, else fixed height and width with a note) and converted by
  ``torch.onnx.export(program, dynamo=True)`` (needs ``onnxscript``).
* ``legacy``: ``torch.onnx.export(..., dynamo=False)`` traces the model with TorchScript and marks
  batch, height and width of ``image`` as dynamic axes; PyTorch deprecates it.

Either way the graph has one input ``image`` (B, 3, H, W) and one output ``score`` (B, 1), the JSON
metadata under the ``metadata_props`` key :data:`~kdfiqa.export.common.METADATA_KEY`, and passes
``onnx.checker``. Needs ``kdfiqa[onnx]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_write import atomic_path
from ..budget import InputSize, parse_input_size
from ..errors import first_line, spelled
from .common import (
    DEFAULT_OPSET,
    METADATA_KEY,
    MIN_OPSET,
    ONNX_EXPORTERS,
    ExportError,
    ExportShape,
    display_name,
    example_batch,
    metadata_json,
    native_stdout_silenced,
)
from .torch_export import capture

if TYPE_CHECKING:
    from torch import nn
    from torch.export import ExportedProgram

__all__ = ["check_onnx_options", "export_onnx", "write_onnx", "load_onnx_session"]


def check_onnx_options(exporter: str, opset: int) -> None:
    """Refuse an unknown exporter or an opset too old for dynamic sizes (before anything is written)."""
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"{spelled('--onnx-exporter')} {exporter!r} is unknown; choose from {', '.join(ONNX_EXPORTERS)}")
    if opset < MIN_OPSET:
        raise ExportError(f"{spelled('--opset')} {opset} is too old: dynamic height and width need opset >= {MIN_OPSET}")


def export_onnx(model: nn.Module, path: str | Path, input_size: InputSize, *, exporter: str = "dynamo",
                opset: int = DEFAULT_OPSET, meta: dict[str, Any] | None = None, dynamic: bool = True,
                program: ExportedProgram | None = None, shape: ExportShape | None = None) -> ExportShape:
    """Export ``model`` (in eval mode) to ONNX at ``path``, atomically; returns which sizes it accepts.

    ``dynamic=False``: height and width fixed at ``input_size`` (dynamo only; the batch stays dynamic).
    ``program``/``shape``: an earlier :func:`~kdfiqa.export.torch_export.capture` of the model to
    convert (dynamo only), so that a pt2 and an ONNX file share one capture.
    """
    check_onnx_options(exporter, opset)
    with atomic_path(path) as tmp:
        if exporter == "dynamo" and program is None:
            program, shape = capture(model, input_size, dynamic=dynamic)
        shape = write_onnx(model, tmp, input_size, exporter=exporter, opset=opset, meta=meta,
                           program=program, shape=shape)
    return shape


def write_onnx(model: nn.Module, path: Path, input_size: InputSize, *, exporter: str, opset: int,
               meta: dict[str, Any] | None, program: ExportedProgram | None = None,
               shape: ExportShape | None = None) -> ExportShape:
    """Write the ONNX file to ``path`` (no atomic move: :func:`export_onnx` and
    :func:`~kdfiqa.export.export_model` do that) and add the metadata. The dynamo exporter converts
    ``program``, a :func:`~kdfiqa.export.torch_export.capture` of ``model`` with its ``shape``."""
    import onnx

    if exporter == "dynamo":
        assert program is not None and shape is not None, "the dynamo exporter converts a captured program"
        _convert(model, lambda: _dynamo(program, path, opset))
    else:
        shape = ExportShape(True)
        _convert(model, lambda: _legacy(model, path, parse_input_size(input_size), opset))
    graph = onnx.load(str(path))
    _name_dimensions(graph)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata_json(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return shape


def _name_dimensions(graph: Any) -> None:
    """Rename the symbols of the input's batch, height and width (``s0``, ``s77``, ... from
    ``torch.export``) to ``batch``, ``height`` and ``width`` wherever they appear."""
    names = {}
    for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
        symbol = graph.graph.input[0].type.tensor_type.shape.dim[axis].dim_param
        if symbol and symbol not in names:
            names[symbol] = name
    for value in (*graph.graph.input, *graph.graph.output, *graph.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _dynamo(program: ExportedProgram, path: Path, opset: int) -> None:
    import torch

    torch.onnx.export(program, dynamo=True, f=str(path), opset_version=opset, input_names=["image"],
                      output_names=["score"], external_data=False, verbose=False)


def _legacy(model: nn.Module, path: Path, size: tuple[int, int, int], opset: int) -> None:
    import torch

    from ..modes import evaluating

    with evaluating(model):
        torch.onnx.export(
            model, (example_batch(size, 1, seed=0),), str(path), dynamo=False, opset_version=opset,
            input_names=["image"], output_names=["score"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "score": {0: "batch"}},
        )


def _convert(model: nn.Module, convert: Any) -> None:
    """Run ``convert`` with the exporters' output silenced; any failure becomes one line."""
    with warnings.catch_warnings(), native_stdout_silenced():
        warnings.simplefilter("ignore")
        try:
            convert()
        except Exception as exc:  # the exporters raise many types; the user needs one line
            reason = first_line(exc)
            reason = reason.split(" Please feel free")[0].split("  [Caused by")[0].rstrip(". ")
            raise ExportError(
                f"ONNX export of {display_name(model)} failed ({reason}); export {spelled('--format pt2', 'formats pt2')} or torchscript "
                "instead, or write that operation so that it works for any height and width") from exc


def load_onnx_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` (``threads``: intra-op threads, default ORT's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
