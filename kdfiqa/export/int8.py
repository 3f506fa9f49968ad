"""INT8 ONNX by static quantisation with ONNX Runtime, and its accuracy check.

* **Calibration**: up to ``count`` images (default :data:`DEFAULT_CALIBRATION_COUNT`, at most
  :data:`MAX_CALIBRATION_COUNT`), evenly spaced over a folder or a labeled CSV's rows, rendered by the
  model's own evaluation transform (its deploy config's, at the export size) and fed one at a time to
  ONNX Runtime's calibrator (min/max of every activation).
* **Quantisation**: ``onnxruntime.quantization.quantize_static`` in QDQ format (QuantizeLinear /
  DequantizeLinear pairs around each quantised operator: any ONNX Runtime provider runs it), weights
  signed INT8 per output channel, activations unsigned INT8 per tensor, convolutions and matrix
  products only (:data:`QUANTIZED_OPS`), after ONNX Runtime's graph pre-processing. The float ONNX may have
  dynamic or fixed height and width: the quantisation parameters do not depend on the size.
* **Accuracy check** (given a labeled CSV): float32 and INT8 score the same images through ONNX
  Runtime; SRCC, PLCC and the challenge score (:func:`kdfiqa.metrics.evaluate`) of both are reported,
  and when the INT8 score is lower by more than ``max_drop`` (default :data:`DEFAULT_MAX_DROP`) the
  INT8 file is refused with :class:`~kdfiqa.export.common.AccuracyDropError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..atomic_write import atomic_path
from ..budget import InputSize
from ..errors import ConfigError, spelled
from .common import DEFAULT_CALIBRATION_COUNT, DEFAULT_MAX_DROP, MAX_CALIBRATION_COUNT, AccuracyDropError
from .onnx import load_onnx_session

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ..data.datasets import ImageSamples

__all__ = ["Int8Options", "Int8Report", "ImageCalibrationReader", "quantize_int8", "write_int8", "score_onnx", "compare_int8"]

SCORE_BATCH = 32
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
"""Operators quantised to INT8; the rest stay float32."""


@dataclass(frozen=True)
class Int8Report:
    """Float32 vs INT8 on the check set (metrics ``None`` without one) and the file sizes."""

    calibration_images: int
    float_bytes: int
    int8_bytes: int
    float_metrics: dict[str, float | int] | None = None
    int8_metrics: dict[str, float | int] | None = None
    max_drop: float = DEFAULT_MAX_DROP

    @property
    def drop(self) -> float | None:
        """Challenge score lost by quantising (positive: INT8 is worse)."""
        if self.float_metrics is None or self.int8_metrics is None:
            return None
        return float(self.float_metrics["score"]) - float(self.int8_metrics["score"])

    def as_dict(self) -> dict[str, Any]:
        return {"calibration_images": self.calibration_images, "float_bytes": self.float_bytes,
                "int8_bytes": self.int8_bytes, "float32": self.float_metrics, "int8": self.int8_metrics,
                "drop": self.drop, "max_drop": self.max_drop}


@dataclass(frozen=True)
class Int8Options:
    """Where the calibration and check images come from, and the tolerance.

    Calibration: ``calibrate_images`` (a folder, searched recursively) or ``calibrate_csv`` with
    ``calibrate_root``; check: ``check_csv`` with ``check_root`` (optional: without it the INT8 file is
    written unchecked).
    """

    calibrate_images: Path | None = None
    calibrate_csv: Path | None = None
    calibrate_root: Path | None = None
    count: int = DEFAULT_CALIBRATION_COUNT
    check_csv: Path | None = None
    check_root: Path | None = None
    max_drop: float = DEFAULT_MAX_DROP

    def __post_init__(self) -> None:
        if (self.calibrate_images is None) == (self.calibrate_csv is None):
            raise ConfigError(f"{spelled('--int8', 'Int8Options')} needs calibration images: give "
                              f"{spelled('--calibrate-images DIR', 'calibrate_images')} or "
                              f"{spelled('--calibrate-csv CSV', 'calibrate_csv')} with "
                              f"{spelled('--calibrate-root DIR', 'calibrate_root')} (one of them)")
        if (self.calibrate_csv is None) != (self.calibrate_root is None):
            raise ConfigError(f"{spelled('--calibrate-csv')} and {spelled('--calibrate-root')} go together")
        if (self.check_csv is None) != (self.check_root is None):
            raise ConfigError(f"{spelled('--check-csv')} and {spelled('--check-root')} go together")
        if not 1 <= self.count <= MAX_CALIBRATION_COUNT:
            raise ConfigError(f"{spelled('--calibrate-count', 'count')} {self.count} must be between 1 and {MAX_CALIBRATION_COUNT}")
        if not 0 <= self.max_drop < 2:
            raise ConfigError(f"{spelled('--max-drop')} {self.max_drop} must be >= 0 (a drop of the challenge score)")

    def calibration(self, model: nn.Module, input_size: InputSize | None) -> ImageSamples:
        """The calibration images (read and checked now, before any file is written), rendered by
        ``model``'s evaluation transform at ``input_size`` (default: its deploy size)."""
        from ..data.datasets import FIQADataset, UnlabeledImageFolder
        from ..data.transforms import build_transform
        from ..inference import resolve_eval_transform

        transform = build_transform(resolve_eval_transform(None, model, input_size=input_size))
        if self.calibrate_images is not None:
            images = UnlabeledImageFolder(self.calibrate_images, transform=transform)
        else:
            images = FIQADataset(self.calibrate_root, self.calibrate_csv, transform=transform)
        step = max(1, len(images) / self.count)
        return images.subset(sorted({int(i * step) for i in range(min(self.count, len(images)))}))

    def write(self, float_path: Path, path: Path, calibration: ImageSamples) -> Int8Report:
        """Quantise ``float_path`` to ``path`` (no atomic move) and, given a check set (rendered by
        the calibration images' transform), compare the two (:func:`compare_int8`)."""
        from ..data.datasets import FIQADataset

        write_int8(float_path, path, calibration)
        report = Int8Report(len(calibration), float_path.stat().st_size, path.stat().st_size, max_drop=self.max_drop)
        if self.check_csv is None:
            return report
        check = FIQADataset(self.check_root, self.check_csv, transform=calibration.transform)
        return compare_int8(float_path, path, check, report)


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator one rendered image at a time as ``{"image": (1, 3, H, W)}``."""

    def __init__(self, images: ImageSamples) -> None:
        self.images = images
        self._items: Iterator[dict[str, np.ndarray]] = self._iterate()

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for index in range(len(self.images)):
            yield {"image": self.images[index]["image"][None].numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:
        self._items = self._iterate()


def quantize_int8(float_path: str | Path, path: str | Path, calibration: ImageSamples) -> Path:
    """Statically quantise the float ONNX ``float_path`` to ``path``, atomically: QDQ, per-channel
    INT8 weights, UINT8 activations calibrated by min/max on ``calibration`` (rendered images)."""
    with atomic_path(path) as tmp:
        write_int8(float_path, tmp, calibration)
    return Path(path)


def write_int8(float_path: str | Path, path: str | Path, calibration: ImageSamples) -> None:
    """:func:`quantize_int8` without the atomic move.

    The float graph is first pre-processed by ONNX Runtime (graph optimisation and shape inference,
    into a temporary file beside ``path``); only :data:`QUANTIZED_OPS` are quantised: INT8
    element-wise operators cost more in conversions than they save. ONNX Runtime's advisory log lines
    (per-channel axes of 1-D weights) are kept out of the output.
    """
    import tempfile

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".kdfiqa-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        root.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(path), ImageCalibrationReader(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, op_types_to_quantize=list(QUANTIZED_OPS))
        finally:
            root.setLevel(level)


def score_onnx(path: str | Path, images: ImageSamples, *, threads: int | None = None) -> np.ndarray:
    """Scores of ``images`` by the ONNX file at ``path`` through ONNX Runtime, in order."""
    import numpy as np
    import torch

    session = load_onnx_session(path, threads=threads)
    scores = []
    batch = SCORE_BATCH if all(images[0]["image"].shape == images[i]["image"].shape
                               for i in range(min(2, len(images)))) else 1
    for start in range(0, len(images), batch):
        x = torch.stack([images[i]["image"] for i in range(start, min(start + batch, len(images)))])
        scores.append(session.run(["score"], {"image": x.numpy()})[0].reshape(-1))
    return np.concatenate(scores)


def compare_int8(float_path: str | Path, int8_path: str | Path, check: ImageSamples,
                 report: Int8Report) -> Int8Report:
    """``report`` with the metrics of both files on the labeled ``check`` set; raises
    :class:`~kdfiqa.export.common.AccuracyDropError` when INT8 loses more than ``report.max_drop``."""
    from dataclasses import replace

    from ..metrics import evaluate

    mos = check.scores
    report = replace(report, float_metrics=evaluate(score_onnx(float_path, check), mos),
                     int8_metrics=evaluate(score_onnx(int8_path, check), mos))
    if report.drop > report.max_drop:
        f, q = report.float_metrics, report.int8_metrics
        raise AccuracyDropError(
            f"INT8 loses {report.drop:.4f} of the challenge score on {len(check)} check images "
            f"(float32 {f['score']:.4f}, INT8 {q['score']:.4f}; SRCC {f['srcc']:.4f} -> {q['srcc']:.4f}), "
            f"more than {spelled('--max-drop')} {report.max_drop:g}: INT8 file not written; try more "
            f"{spelled('--calibrate-count', 'count')} images "
            "or keep float32")
    return report
