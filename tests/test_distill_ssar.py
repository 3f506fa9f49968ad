"""SSAR pretraining (RankCORE): degraded pairs and the adaptive-margin objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from distill_tiny_models import TinyFIQA
from kdfiqa.data.datasets import UnlabeledImageFolder
from kdfiqa.data.transforms import build_transform
from kdfiqa.distill import SSARObjective, SSARPairs
from kdfiqa.errors import ConfigError


class FirstPixelScore(nn.Module):
    """Scores each image by its first pixel (already in (0, 1) here), so pair scores are chosen."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :1, 0, 0]


def test_ssar_loss_is_the_seed_adaptive_margin_formula():
    q_ref = [0.9, 0.5, 0.4, 0.7, 0.2]
    q_deg = [0.1, 0.45, 0.6, 0.7, 0.19]
    severity = [0.8, 0.9, 0.3, 0.0, 0.05]
    lam = 0.2
    image = torch.tensor(q_ref).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    degraded = torch.tensor(q_deg).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    out = SSARObjective(FirstPixelScore(), margin_scale=lam)(
        {"image": image, "degraded": degraded, "severity": torch.tensor(severity)}
    )
    # L = mean over pairs of max(0, -(q(I) - q(I')) + lambda * s)   (seed, RankCORE SSAR)
    expected = sum(max(0.0, -(r - d) + lam * s) for r, d, s in zip(q_ref, q_deg, severity)) / len(q_ref)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["ranking_accuracy"].item() == pytest.approx(3 / 5)
    out["loss"].backward()


def _faces(folder, n=3, size=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # fine texture: blur shows
        Image.fromarray(pixels).save(folder / f"face_{i}.png")
    return folder


def _pairs(tmp_path, **kwargs):
    transform = build_transform({"mode": "random_crop", "size": 16, "flip": True, "normalize": "none"})
    return SSARPairs(UnlabeledImageFolder(_faces(tmp_path), transform=transform), **kwargs)


def test_pairs_share_crop_and_flip_and_differ_only_by_the_degradation(tmp_path):
    identity = _pairs(tmp_path, severity_range=(0.0, 0.0))
    torch.manual_seed(0)
    for i in range(len(identity)):
        item = identity[i]
        assert item["severity"].item() == 0.0
        assert torch.equal(item["image"], item["degraded"])
    blurred = _pairs(tmp_path, kinds=("blur",), severity_range=(0.5, 1.0))
    item = blurred[0]
    assert 0.5 <= item["severity"].item() <= 1.0 and item["degradation"] == "blur"

    def roughness(x):
        return (x[:, :, 1:] - x[:, :, :-1]).abs().mean().item()

    assert roughness(item["degraded"]) < 0.5 * roughness(item["image"])


def test_pair_draws_are_deterministic_per_seed_epoch_and_index(tmp_path):
    pairs = _pairs(tmp_path, seed=3)
    first = [(pairs[i]["degradation"], pairs[i]["severity"].item()) for i in range(3)]
    assert first == [(pairs[i]["degradation"], pairs[i]["severity"].item()) for i in range(3)]
    pairs.set_epoch(1)
    assert first != [(pairs[i]["degradation"], pairs[i]["severity"].item()) for i in range(3)]
    with pytest.raises(ConfigError):
        _pairs(tmp_path, kinds=("smudge",))


def test_ssar_objective_trains_on_pair_batches(tmp_path):
    torch.manual_seed(0)
    objective = SSARObjective(TinyFIQA(), margin_scale=0.1)
    batch = next(iter(DataLoader(_pairs(tmp_path), batch_size=3)))
    out = objective(batch)
    assert set(out) == {"loss", "adaptive_margin", "ranking_accuracy"}
    out["loss"].backward()
    assert all(p.grad is not None for p in objective.model.parameters())
