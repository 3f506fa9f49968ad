"""kdfiqa: distil any face-image-quality teacher into a small student that fits a compute budget."""

from __future__ import annotations

__version__ = "0.1.0"
