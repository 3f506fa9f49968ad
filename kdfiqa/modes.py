"""Module modes: run a model in eval mode for a while and hand it back exactly as it came."""

from __future__ import annotations

import contextlib
from typing import Iterator, TypeVar

import torch
from torch import nn

__all__ = ["evaluating"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextlib.contextmanager
def evaluating(model: ModuleT, *, no_grad: bool = True) -> Iterator[ModuleT]:
    """Put ``model`` in eval mode (and, by default, under :func:`torch.no_grad`); yield it.

    On exit, normal or by an exception, every sub-module gets back its own ``training`` flag, so a
    model with a frozen (eval-mode) part inside a training model is restored as it was, which a
    plain ``model.train(was_training)`` would not do. ``no_grad=False`` leaves autograd as the
    caller has it. Nested uses restore in turn::

        with evaluating(student) as model:
            scores = model(images)
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for module, training in modes:
            module.training = training
