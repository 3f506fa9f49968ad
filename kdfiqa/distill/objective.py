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

import torch
from torch import Tensor, nn

from ..errors import DataError
from ..losses import WeightedSum

__all__ = ["LossSpec", "as_weighted_sum", "label_mask", "masked_task_loss", "Supervised"]

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
    """The batch's MOS as a float tensor of shape (B,) on ``reference``'s device and dtype, NaN where a
    sample has no label (see :func:`label_mask`); :class:`~kdfiqa.errors.DataError` ending with
    ``remedy`` when the batch has no ``"score"`` at all."""
    if "score" not in batch:
        raise DataError(f"this batch has no 'score' labels (unlabelled images): {remedy}")
    return batch["score"].to(device=reference.device, dtype=reference.dtype).reshape(-1)


def label_mask(batch: Mapping[str, Any]) -> Tensor:
    """Which samples of ``batch`` are labeled (bool, shape (B,), True = labeled), the one place that
    decides: a sample whose ``"score"`` is NaN has no label for the view the student sees (an
    unlabeled image trained on online, or a labeled one whose view was altered); a batch without
    ``"score"`` has none. Task losses see the labeled samples only; distillation and feature losses
    see all."""
    if "score" not in batch:
        return torch.zeros(len(batch["image"]), dtype=torch.bool, device=batch["image"].device)
    return ~torch.isnan(torch.as_tensor(batch["score"]).reshape(-1))


def masked_task_loss(loss: WeightedSum, scores: Tensor, targets: Tensor,
                     mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss`` on the labeled samples only (``mask``, from :func:`label_mask`): on the whole batch
    when every sample is labeled, on none when none is, which gives a zero term (and zero parts)
    that keeps the graph valid; unlabeled samples' NaN targets never reach the loss."""
    mask = mask.to(scores.device)
    if bool(mask.all()):
        return loss(scores, targets)
    if not bool(mask.any()):
        zero = scores.sum() * 0.0
        return zero, {name: zero.detach() for name in loss.terms}
    return loss(scores[mask], targets[mask])


def logged(total: Tensor, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The objective's output: ``"loss"`` kept in the graph, the other terms detached."""
    out = {"loss": total}
    out.update({name: value.detach() for name, value in terms.items()})
    return out


class Supervised(nn.Module):
    """Plain supervised training: the model's scores in (0, 1) against the batch's MOS.

    ``forward(batch)`` calls ``model(batch["image"])`` (shape (B, 1)) and evaluates ``loss`` (a task
    loss spec, see :data:`LossSpec`) on the flattened scores and ``batch["score"]`` of the labeled
    samples (:func:`label_mask`); a batch without a labeled sample is a
    :class:`~kdfiqa.errors.DataError`.
    """

    def __init__(self, model: nn.Module, loss: LossSpec = "mse") -> None:
        super().__init__()
        self.model = model
        self.loss = as_weighted_sum(loss)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        scores = self.model(batch["image"]).reshape(-1)
        targets, mask = targets_of(batch, scores), label_mask(batch)
        if not bool(mask.any()):
            raise DataError("this batch has no labeled sample (every 'score' is NaN): supervised training "
                            "needs labels; train unlabeled images through a teacher (kdfiqa distill)")
        total, terms = masked_task_loss(self.loss, scores, targets, mask)
        return logged(total, terms)
