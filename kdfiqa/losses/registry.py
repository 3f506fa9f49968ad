"""Name → class registry for losses, in the manner of torchdistill's loss tables.

Every registered loss is an ``nn.Module`` class with a class attribute ``kind`` that says what its
``forward`` takes:

* ``"task"``: ``forward(pred, target)``, predicted scores in (0, 1) against MOS;
* ``"distill"``: ``forward(student_logits, teacher_logits)``, pre-sigmoid values of both networks;
* ``"feature"``: ``forward(student_feat, teacher_feat)``, intermediate features (owns its projector);
* ``"pair"``: ``forward(q_ref, q_deg, severity)``, scores of an image and of its degraded copy.

:class:`~kdfiqa.losses.weighted_sum.WeightedSum` uses ``kind`` to feed each term its inputs.

Plugins add losses through the entry-point group ``kdfiqa.losses`` (:data:`LOSSES_GROUP`): each
entry point is a loss class as above (with its ``kind``), registered under the entry point's name,
so that ``--task-loss "1.0*NAME"`` and ``create_loss("NAME")`` find it::

    [project.entry-points."kdfiqa.losses"]
    wing = "my_package.losses:Wing"
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["LOSS_KINDS", "LOSSES", "LOSSES_GROUP", "register_loss", "create_loss", "list_losses", "loss_class"]

LOSS_KINDS = ("task", "distill", "feature", "pair")
LOSSES_GROUP = "kdfiqa.losses"
"""The entry-point group of plugin losses: loss classes, registered under the entry point's name."""

L = TypeVar("L", bound=type)


def _adopt(name: str, cls: Any) -> None:
    """Register a plugin's loss class under its entry point's name."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"{cls!r} is not a loss class (an nn.Module subclass with a kind)")
    register_loss(cls, name=name)


LOSSES: Registry[type[nn.Module]] = Registry("loss", plural="losses", group=LOSSES_GROUP, adopt=_adopt)
"""Loss name → loss class (built-ins, then plugins of :data:`LOSSES_GROUP`)."""


def register_loss(cls: L | None = None, *, name: str | None = None) -> Any:
    """Register a loss class under ``name`` (usable bare or as ``@register_loss(name="wing")``;
    default: the class name in lower case).

    The class must define ``kind`` (one of :data:`LOSS_KINDS`). The registered name is stored on
    the class as ``loss_name``; it is the name a :class:`WeightedSum` prints for the term.
    """

    def decorate(c: L) -> L:
        if getattr(c, "kind", None) not in LOSS_KINDS:
            raise ValueError(f"loss class {c.__name__} needs a class attribute kind in {LOSS_KINDS}")
        key = name or c.__name__.lower()
        LOSSES.register(c, name=key)
        c.loss_name = key
        return c

    return decorate(cls) if cls is not None else decorate


def loss_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; :class:`ConfigError` listing the known names otherwise."""
    return LOSSES.get(name)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with ``kwargs``.

    Unknown names, keyword arguments the loss does not take and missing required ones raise
    :class:`ConfigError` naming what exists.
    """
    cls = loss_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(inspect.signature(cls).parameters) or "none"
        raise ConfigError(f"loss {name!r}: {err}; its parameters are: {accepted}") from None
    return cls(**kwargs)


def list_losses(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Sorted registered loss names matching the shell-style ``pattern`` (and ``kind`` if given)."""
    return [n for n in LOSSES.list(pattern) if kind is None or LOSSES.get(n).kind == kind]
