"""Mixed precision: which autocast and grad scaler a device and ``amp`` setting get.

AMP runs on CUDA only. ``bf16`` needs no loss scaling; ``fp16`` uses a ``GradScaler``. On CPU the
setting is ignored (full float32) so the same config runs on a laptop and on a GPU server.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

__all__ = ["amp_dtype", "autocast", "grad_scaler"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` ("none" | "bf16" | "fp16") on ``device``; None when disabled."""
    if device.type != "cuda":
        return None
    return _DTYPES.get(amp)


def autocast(device: torch.device, amp: str) -> ContextManager:
    """An autocast context for ``amp`` on ``device``, or a no-op context when AMP is disabled."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A grad scaler, enabled only for fp16 on CUDA (disabled scalers pass gradients through)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device, amp) == torch.float16)
