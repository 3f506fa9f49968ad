"""An exponential moving average of a model's weights (Polyak-Juditsky averaging).

After every optimiser step, each floating-point parameter and buffer of the average becomes
``decay * average + (1 - decay) * current``; integer buffers (e.g. BatchNorm's
``num_batches_tracked``) are copied. The average is a separate copy of the model, always in eval
mode, that the Trainer validates and saves next to the trained weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """Moving average of ``model``'s parameters and buffers with factor ``decay``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current weights into the average (call after each optimiser step)."""
        self.updates += 1
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(value.to(avg.dtype), 1.0 - self.decay)
            else:
                avg.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "state_dict": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["state_dict"])
