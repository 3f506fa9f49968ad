"""Tiny stand-ins shared by the engine tests and their subprocess scripts: 16x16 images."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from kdfiqa.distill import Distiller, Student, Teacher


class ToyFaces(Dataset):
    """``n`` random 16x16 images whose score is a fixed function of their content.

    Each access adds fresh noise (``noise`` x N(0, 1)) drawn from the global torch RNG (an "augmentation"), so data
    loading consumes randomness like a real augmenting dataset does.
    """

    def __init__(self, n: int, seed: int = 0, sizes: list[tuple[int, int]] | None = None,
                 noise: float = 0.05) -> None:
        g = torch.Generator().manual_seed(seed)
        self.noise = noise
        sizes = sizes or [(16, 16)] * n
        self.images = [torch.randn(3, h, w, generator=g) for h, w in sizes]
        self.scores = [torch.sigmoid(3 * x.mean()).float() for x in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        noisy = self.images[i] + self.noise * torch.randn(self.images[i].shape)
        return {"image": noisy, "score": self.scores[i], "name": f"img{i}.png", "index": i}


class ToyNet(nn.Module):
    """conv - BN - ReLU - dropout - global pool - linear - sigmoid: a (B, 1) score in (0, 1)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


class ToyObjective(nn.Module):
    """MSE of the model's scores against the MOS, plus a trainable projector the model lacks."""

    def __init__(self, model: nn.Module, nan_on_index: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.projector = nn.Linear(1, 1)
        self.nan_on_index = nan_on_index

    def forward(self, batch: dict) -> dict:
        scores = self.model(batch["image"]).reshape(-1)
        mse = ((scores - batch["score"]) ** 2).mean()
        aux = self.projector(scores[:, None]).pow(2).mean()
        loss = mse + 0.01 * aux
        if self.nan_on_index is not None and bool((batch["index"] == self.nan_on_index).any()):
            loss = loss * float("nan")
        return {"loss": loss, "mse": mse.detach(), "aux": aux.detach()}


def toy_distiller() -> Distiller:
    """A frozen ToyNet(6) teacher guiding a ToyNet student through the labels, its logits and a
    projected feature map (a trainable projector outside the student)."""
    return Distiller(Teacher(ToyNet(6)), Student(ToyNet(), input_sizes=(3, 16, 16)), "mse",
                     "temperature_mse", [("bn", "bn", "feature", 0.5)])
