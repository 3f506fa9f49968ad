"""Tiny FIQA models and data for the distillation tests (fast on a CPU)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kdfiqa.models import list_models, register_model


class TinyFIQA(nn.Module):
    """conv-BN-ReLU x2, global mean, linear: a FIQA model with the kdfiqa model interface."""

    def __init__(self, width: int = 4, default_input_size: tuple[int, int, int] = (3, 16, 16)) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, 1)
        self.default_input_size = default_input_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_logits(x).sigmoid()


class ConstantLogit(nn.Module):
    """Returns the same logit for every image (one parameter, so it has a device)."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(logit)))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], 1)


class DictDataset(Dataset):
    """Items given as a list of dicts (the kdfiqa.data sample contract)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


TINY_NAME = "distill_test_tiny"

if TINY_NAME not in list_models():
    register_model(lambda width=4: TinyFIQA(width), name=TINY_NAME, default_input_size=(3, 16, 16))


def batch(n: int = 4, size: int = 16, *, teacher_size: int | None = None, labels: bool = True,
          seed: int = 0) -> dict[str, Any]:
    """A random collated batch: "image", optional "teacher_image", "score", "name", "index"."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"image": torch.randn(n, 3, size, size, generator=g)}
    if teacher_size is not None:
        out["teacher_image"] = torch.randn(n, 3, teacher_size, teacher_size, generator=g)
    if labels:
        out["score"] = torch.rand(n, generator=g)
    out["name"] = [f"img_{seed}_{i}.png" for i in range(n)]
    out["index"] = torch.arange(n)
    return out
