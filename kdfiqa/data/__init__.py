"""Face-quality data: labels and score CSV files, safe image decoding, data sets, paired views, SSUS,
degradations and the teacher-scored quality augmentation, synthetic demo data.

Names are imported on first use, so the torch-free parts (:mod:`~kdfiqa.data.splits`) load alone."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".csv_files": ("write_scores", "write_table"),
    ".datasets": ("FIQADataset", "ImageSamples", "Sample", "UnlabeledImageFolder", "split_dataset"),
    ".degradations": ("DEGRADATIONS", "RandomDegradation", "degrade"),
    ".images": ("IMAGE_EXTENSIONS", "MAX_PIXELS", "check_image", "load_rgb", "validate_images"),
    ".labels": ("Label", "read_labels"),
    ".paths": ("resolve_image_path",),
    ".quality_augment": ("QualityAugment",),
    ".samplers": ("SSUSSampler", "TwoStreamSampler"),
    ".synthetic": ("SyntheticFIQA", "make_synthetic_fiqa"),
    ".transforms": ("PRESETS", "PairedViews", "build_transform"),
}

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = _NAMES
