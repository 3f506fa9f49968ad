"""Training objectives: what the Trainer minimises for one batch.

An *objective* is an ``nn.Module`` with a ``.model`` attribute (the network that is trained and
saved) and ``forward(batch) -> dict[str, Tensor]`` whose ``"loss"`` entry is the scalar to
back-propagate; every other entry is a detached scalar for logging. The Trainer optimises
``objective.parameters()`` that require grad and saves only ``objective.model.state_dict()``, so
parameters that exist only for training (projectors, ...) belong to the objective, never to the model.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import Tensor, nn

from ..errors import DataError
from ..losses import WeightedSum

__all__ = ["LossSpec", "as_weighted_sum", "Supervised"]

LossSpec = Union[str, nn.Module, Mapping[Any, float]]
"""A loss given as a registered name (``"mse"``), a formula (``"1.0*mse + 0.5*plcc"``), a loss
module, a ``{name_or_module: weight}`` mapping, or a ``WeightedSum``."""


def as_weighted_sum(spec: LossSpec) -> WeightedSum:
    """Turn any :data:`LossSpec` into a :class:`~kdfiqa.losses.WeightedSum`.

    A single name or loss module becomes a one-term sum of weight 1, so every loss is called the same
    way and reports its terms by name.
    """
    if isinstance(spec, WeightedSum):
        return spec
    if isinstance(spec, nn.Module):
        return WeightedSum({spec: 1.0})
    return WeightedSum(spec)


def targets_of(batch: Mapping[str, Any], reference: Tensor, *, remedy: str = "use a labelled data set") -> Tensor:
    """The batch's MOS as a float tensor of shape (B,) on ``reference``'s device and dtype;
    :class:`~kdfiqa.errors.DataError` ending with ``remedy`` when the batch has no labels."""
    if "score" not in batch:
        raise DataError(f"this batch has no 'score' labels (unlabelled images): {remedy}")
    return batch["score"].to(device=reference.device, dtype=reference.dtype).reshape(-1)


def logged(total: Tensor, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The objective's output: ``"loss"`` kept in the graph, the other terms detached."""
    out = {"loss": total}
    out.update({name: value.detach() for name, value in terms.items()})
    return out


class Supervised(nn.Module):
    """Plain supervised training: the model's scores in (0, 1) against the batch's MOS.

    ``forward(batch)`` calls ``model(batch["image"])`` (shape (B, 1)) and evaluates ``loss`` (a task
    loss spec, see :data:`LossSpec`) on the flattened scores and ``batch["score"]``.
    """

    def __init__(self, model: nn.Module, loss: LossSpec = "mse") -> None:
        super().__init__()
        self.model = model
        self.loss = as_weighted_sum(loss)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        scores = self.model(batch["image"]).reshape(-1)
        total, terms = self.loss(scores, targets_of(batch, scores))
        return logged(total, terms)
