"""Training objectives: what the Trainer minimises for one batch.

The objective protocol
----------------------
An *objective* is an ``nn.Module`` with

* ``.model``: the network that is trained and saved (the Trainer saves only
  ``objective.model.state_dict()``, so parameters that exist only for training, such as
  projectors, belong to the objective, never to the model);
* ``forward(batch) -> dict[str, Tensor]``: ``"loss"`` is the scalar to back-propagate, every other
  entry a detached scalar for logging.

An objective with a frozen part (a teacher) also splits into

* ``frozen_forward(batch)``: runs the frozen modules without autograd and returns what the
  trainable side needs (for :class:`~kdfiqa.distill.Distiller`, a
  :class:`~kdfiqa.distill.distiller.TeacherOutput`: teacher logits and tapped features);
* ``trainable``: the ``nn.Module`` holding every parameter that is trained (the model, projectors,
  loss modules), whose ``forward(batch, frozen)`` returns the loss dict;

and then ``forward(batch)`` is ``trainable(batch, frozen_forward(batch))``. The Trainer calls
``frozen_forward`` first (its temporaries are freed before the trainable forward keeps activations
for backward), optimises the parameters of ``trainable`` that require grad, and under ``torchrun``
wraps only ``trainable`` in DDP, so the frozen part is never synchronised. Objectives without a
frozen part (:class:`Supervised`, :class:`~kdfiqa.distill.SSARObjective`) define neither: they are
trainable as a whole. The Trainer checkpoints, for resuming, the parameters and buffers of the
trainable module's submodules outside ``.model`` that own trainable parameters, named as in that
module (:mod:`kdfiqa.engine.state`).
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
