"""Export a FIQA model for deployment: ONNX, ``torch.export`` programs (pt2), TorchScript, INT8 ONNX.

One module per concern:

* :mod:`~kdfiqa.export.core`: :func:`export_model` (budget re-check, export, verification against the
  eager model, INT8), :func:`load_exported`, :func:`verify_exported`;
* :mod:`~kdfiqa.export.onnx`: :func:`export_onnx`, the dynamo exporter by default, the legacy
  TorchScript-based one on request;
* :mod:`~kdfiqa.export.torch_export`: :func:`export_pt2` (``torch.export.save``) and the shared
  dynamic-shape capture;
* :mod:`~kdfiqa.export.torchscript`: :func:`export_torchscript` (deprecated by PyTorch);
* :mod:`~kdfiqa.export.int8`: static INT8 quantisation with ONNX Runtime and its accuracy check
  (imports onnxruntime);
* :mod:`~kdfiqa.export.common`: formats, errors, results and the dependency check.

Each ``export_*`` function takes ``(model, path, input_size, ...)``, writes one file atomically and
returns the :class:`ExportShape` it accepts. Names are imported on first use: the constants cost
nothing to import (command-line parsers use them).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".common": ("EXPORT_FORMATS", "DEFAULT_FORMATS", "ONNX_EXPORTERS", "DEFAULT_ATOL", "DEFAULT_OPSET", "MIN_OPSET",
                "SUFFIXES", "INT8_SUFFIX", "METADATA_KEY", "ExportError", "AccuracyDropError", "ExportShape",
                "Verification", "ExportResult", "require_dependencies", "DEFAULT_CALIBRATION_COUNT",
                "MAX_CALIBRATION_COUNT", "DEFAULT_MAX_DROP"),
    ".core": ("verification_sizes", "load_exported", "verify_exported", "output_names", "export_model"),
    ".onnx": ("export_onnx",),
    ".torch_export": ("export_pt2", "load_pt2"),
    ".torchscript": ("export_torchscript", "load_torchscript"),
    ".int8": ("Int8Options", "Int8Report", "quantize_int8"),
}

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = list(_NAMES)
