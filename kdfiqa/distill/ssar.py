"""Self-Supervised Adaptive Ranking (SSAR) pretraining, RankCORE (ISeeCV team, seed appendix).

Degradations lower quality monotonically: for a face I and its copy I' = T_s(I) degraded at severity
s ∈ [0, 1], q(I') < q(I). SSAR trains on such pairs with the adaptive margin m(s) = λ·s,

    L(I, I'; s) = max(0, −(q̂(I) − q̂(I')) + λ·s),

so no quality label is needed (:class:`kdfiqa.losses.AdaptiveMarginLoss`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.datasets import ImageSamples
from ..data.degradations import RandomDegradation
from ..data.images import load_rgb
from .objective import LossSpec, as_weighted_sum, logged

__all__ = ["SSARPairs", "SSARObjective"]


def _student_view(views: Tensor | Mapping[str, Tensor]) -> Tensor:
    return views["image"] if isinstance(views, Mapping) else views


class SSARPairs(Dataset):
    """Pairs (I, T_s(I)) built from the images of ``dataset`` (labels, if any, are not used).

    Item ``i`` is ``{"image": I, "degraded": T_s(I), "severity": s (float32 0-dim), "degradation":
    kind, "name", "index"}``. The degradation kind is drawn uniformly from ``kinds`` and s uniformly
    from ``severity_range`` (:class:`kdfiqa.data.degradations.RandomDegradation`), applied to the
    decoded image; both images then go through ``dataset.transform`` with the same random draws
    (same crop box and flip), so they differ by the degradation only.

    The draws depend only on (``seed``, epoch, ``i``), not on the number of loader workers; call
    :meth:`set_epoch` each epoch for fresh pairs.
    """

    def __init__(
        self,
        dataset: ImageSamples,
        *,
        kinds: Sequence[str] = ("blur", "noise", "jpeg", "downup"),
        severity_range: tuple[float, float] = (0.0, 1.0),
        seed: int = 0,
    ) -> None:
        RandomDegradation(kinds, severity_range)  # validates kinds and range up front
        self.dataset = dataset
        self.kinds = tuple(kinds)
        self.severity_range = severity_range
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset.samples[index]
        image = load_rgb(sample.path, max_pixels=self.dataset.max_pixels, background=self.dataset.background)
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        degraded, kind, severity = RandomDegradation(self.kinds, self.severity_range, seed=seed)(image)
        draws = torch.get_rng_state()
        clean_view = _student_view(self.dataset.transform(image))
        torch.set_rng_state(draws)
        degraded_view = _student_view(self.dataset.transform(degraded))
        return {
            "image": clean_view,
            "degraded": degraded_view,
            "severity": torch.tensor(severity, dtype=torch.float32),
            "degradation": kind,
            "name": sample.name,
            "index": index,
        }


class SSARObjective(nn.Module):
    """The SSAR pretraining objective over :class:`SSARPairs` batches (RankCORE, seed appendix).

    The model scores the clean and the degraded images in one forward pass, q̂ ∈ (0, 1), and the loss
    is the adaptive-margin ranking loss mean(max(0, −(q̂(I) − q̂(I')) + λ·s)) with λ =
    ``margin_scale`` (``loss`` replaces it with any spec whose terms are of kind ``"pair"``). Also
    logs ``ranking_accuracy``, the fraction of pairs with q̂(I) > q̂(I').
    """

    images_per_sample = 2
    """Each sample is a (clean, degraded) pair, both scored in one batch: a batch of one sample is
    two images, which a batch norm trains on."""

    def __init__(self, model: nn.Module, *, margin_scale: float = 0.1, loss: LossSpec | None = None) -> None:
        super().__init__()
        self.model = model
        spec = loss if loss is not None else {"adaptive_margin": {"weight": 1.0, "margin_scale": margin_scale}}
        self.loss = as_weighted_sum(spec)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        clean, degraded = batch["image"], batch["degraded"]
        scores = self.model(torch.cat([clean, degraded])).reshape(-1)
        q_ref, q_deg = scores[: len(clean)], scores[len(clean):]
        severity = batch["severity"].to(device=scores.device, dtype=scores.dtype).reshape(-1)
        total, terms = self.loss(None, None, pair=(q_ref, q_deg, severity))
        out = logged(total, terms)
        out["ranking_accuracy"] = (q_ref > q_deg).to(scores.dtype).mean().detach()
        return out
