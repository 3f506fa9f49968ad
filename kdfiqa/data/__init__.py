"""Face-quality data: labels and score CSV files, safe image decoding, data sets, paired views, SSUS,
degradations, synthetic demo data."""

from __future__ import annotations

from .csv_files import write_scores, write_table
from .datasets import FIQADataset, ImageSamples, Sample, UnlabeledImageFolder, split_dataset
from .degradations import DEGRADATIONS, RandomDegradation, degrade
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, check_image, load_rgb, validate_images
from .labels import Label, read_labels
from .paths import resolve_image_path
from .samplers import SSUSSampler
from .synthetic import SyntheticFIQA, make_synthetic_fiqa
from .transforms import PRESETS, PairedViews, build_transform

__all__ = [
    "DEGRADATIONS",
    "FIQADataset",
    "IMAGE_EXTENSIONS",
    "ImageSamples",
    "Label",
    "MAX_PIXELS",
    "PRESETS",
    "PairedViews",
    "RandomDegradation",
    "SSUSSampler",
    "Sample",
    "SyntheticFIQA",
    "UnlabeledImageFolder",
    "build_transform",
    "check_image",
    "degrade",
    "load_rgb",
    "make_synthetic_fiqa",
    "read_labels",
    "resolve_image_path",
    "split_dataset",
    "validate_images",
    "write_scores",
    "write_table",
]
