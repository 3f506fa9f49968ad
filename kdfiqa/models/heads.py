"""The quality head and the FIQA regressor (backbone + head).

:class:`QualityHead` is the regression head of the seed's 2077Agent entry (§1.3): the final feature map
is global-average-pooled and passed through two bottleneck layers of Linear + BatchNorm + ReLU, then a
linear output and a sigmoid. Its options cover the heads of the other entries: average+max pooling and
dropout (DERS, §1.4), a single hidden layer without batch norm (the ECNU-SJTU EdgeNeXt student), no
hidden layer at all (the MobileNetV2 challenge baseline), no output activation.

:class:`FIQARegressor` puts a head on any backbone and is what :func:`kdfiqa.models.create_model` returns
for a backbone name.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .bounds import Bound

__all__ = ["POOLINGS", "ACTIVATIONS", "HEAD_BOUNDS", "QualityHead", "FIQARegressor"]

POOLINGS = ("avg", "avgmax", "none")
"""Global pooling of :class:`QualityHead`: average; average and max concatenated (2C wide); none (the
input is already a pooled (B, C) vector)."""

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
HEAD_BOUNDS = {"hidden": Bound(at_least=1, at_most=65536, integer=True, max_items=16)}
"""What a quality head's ``hidden`` widths may be (checked on every build with a ``head``)."""
"""Hidden-layer activations of :class:`QualityHead` by name."""


def _choice(field: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ConfigError(f"quality head: {field}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


class QualityHead(nn.Module):
    """Global pooling, bottleneck MLP, one output: feature map (B, C, H, W) → quality (B, 1).

    The default is the 2077Agent head (seed §1.3): average pooling, two bottleneck layers
    Linear → BatchNorm1d → ReLU (widths ``hidden``), a linear output and a sigmoid. The seed gives no
    widths; kdfiqa uses (128, 64).

    Args:
        in_features: channels C of the incoming map (or width of the incoming vector for ``pool="none"``).
        hidden: widths of the bottleneck layers, in order; ``()`` leaves a single linear output.
        pool: ``"avg"``; ``"avgmax"`` concatenates average and max pooling (DERS, seed §1.4), so the first
            linear layer sees 2C features; ``"none"`` takes (B, C) vectors pooled upstream.
        norm: ``"batchnorm"`` (BatchNorm1d after each hidden linear) or ``None``.
        act: hidden activation, one of :data:`ACTIVATIONS`, or ``None`` for none.
        dropout: dropout probability applied after each hidden layer (before the next linear layer).
        out_activation: ``"sigmoid"`` maps the output to (0, 1); ``None`` returns the logit itself.

    :meth:`forward_logits` returns the value before the output activation, which the distillation
    losses compare between teacher and student.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 64),
        *,
        pool: str = "avg",
        norm: str | None = "batchnorm",
        act: str | None = "relu",
        dropout: float = 0.0,
        out_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        self.pool = _choice("pool", pool, POOLINGS)
        _choice("norm", norm, ("batchnorm", None))
        _choice("act", act, (*ACTIVATIONS, None))
        self.out_activation = _choice("out_activation", out_activation, ("sigmoid", None))
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"quality head: dropout={dropout!r} must be in [0, 1)")
        self.in_features = in_features
        width = in_features * (2 if pool == "avgmax" else 1)
        layers: list[nn.Module] = []
        for out in hidden:
            layers.append(nn.Linear(width, out))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm1d(out))
            if act is not None:
                layers.append(ACTIVATIONS[act]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        self.mlp = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 1)

    def pool_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C) or (B, 2C) for ``"avgmax"``; (B, C) passes through for ``"none"``."""
        if self.pool == "none":
            return x.flatten(1)
        avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool == "avg":
            return avg
        return torch.cat([avg, F.adaptive_max_pool2d(x, 1).flatten(1)], dim=1)

    def forward_logits(self, x: Tensor) -> Tensor:
        """Pre-activation quality value, shape (B, 1)."""
        return self.fc(self.mlp(self.pool_features(x)))

    def activate(self, logits: Tensor) -> Tensor:
        """Apply the output activation to values from :meth:`forward_logits`."""
        return torch.sigmoid(logits) if self.out_activation == "sigmoid" else logits

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.forward_logits(x))


def _head_kwargs(head: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a user's head options against :class:`QualityHead`'s keyword arguments."""
    head = dict(head or {})
    accepted = set(inspect.signature(QualityHead).parameters) - {"in_features"}
    unknown = sorted(set(head) - accepted)
    if unknown:
        raise ConfigError(f"head: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}")
    return head


class FIQARegressor(nn.Module):
    """A backbone with a :class:`QualityHead`: image (B, 3, H, W) → quality score (B, 1) in (0, 1).

    The head is fed ``backbone.forward_head_input(x)`` when the backbone defines it (for instance to
    apply a final norm, or a timm model's own pooling and pre-logits layers), else
    ``backbone.forward_features(x)``. Its width is ``backbone.head_input_features`` when defined, else
    ``backbone.num_features``; a backbone with ``head_input_pooled = True`` hands over (B, C) vectors,
    so the head does no pooling of its own (``pool="none"``).

    Args:
        backbone: a module with ``forward_features(x) -> (B, C, H, W)`` and ``num_features``.
        head: keyword arguments of :class:`QualityHead` (``hidden``, ``pool``, ``dropout`` ...).
        default_input_size: (3, H, W) the model is meant to run at (budget checks, export).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        head: dict[str, Any] | None = None,
        default_input_size: Sequence[int] = (3, 224, 224),
    ) -> None:
        super().__init__()
        options = _head_kwargs(head)
        if getattr(backbone, "head_input_pooled", False):
            if options.get("pool", "none") != "none":
                raise ConfigError(f"head: pool={options['pool']!r} is impossible, this backbone already "
                                  "pools its features; build it with pooled=False to pool in the head")
            options["pool"] = "none"
        in_features = getattr(backbone, "head_input_features", None) or backbone.num_features
        self.backbone = backbone
        self.head = QualityHead(in_features, **options)
        self.default_input_size = tuple(int(d) for d in default_input_size)

    def forward_features(self, x: Tensor) -> Tensor:
        """The backbone's feature map (B, C, H', W')."""
        return self.backbone.forward_features(x)

    def forward_head_input(self, x: Tensor) -> Tensor:
        """What the head receives: the backbone's ``forward_head_input`` or its feature map."""
        if hasattr(self.backbone, "forward_head_input"):
            return self.backbone.forward_head_input(x)
        return self.backbone.forward_features(x)

    def forward_logits(self, x: Tensor) -> Tensor:
        """Pre-sigmoid quality values (B, 1)."""
        return self.head.forward_logits(self.forward_head_input(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head.activate(self.forward_logits(x))
