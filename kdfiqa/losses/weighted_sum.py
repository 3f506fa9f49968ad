"""A weighted sum of loss terms that feeds each term by its kind and prints itself as a formula."""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError
from .registry import LOSS_KINDS, create_loss

__all__ = ["WeightedSum", "parse_formula"]

TermSpec = Union[float, Mapping[str, Any]]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*")
_PLUS = re.compile(r"(?<![0-9][eE])\+")


def parse_formula(formula: str) -> dict[str, float]:
    """``"1.0*hybrid + 0.5*temperature_mse"`` → ``{"hybrid": 1.0, "temperature_mse": 0.5}``.

    A term without a weight has weight 1. :class:`ConfigError` names the term that cannot be read.
    """
    terms: dict[str, float] = {}
    for piece in _PLUS.split(formula):
        match = _TERM.fullmatch(piece)
        if match is None:
            raise ConfigError(
                f"loss formula {formula!r}: cannot read term {piece.strip()!r}; "
                "write terms as WEIGHT*NAME joined by '+', e.g. '1.0*hybrid + 0.5*temperature_mse'"
            )
        name = match["name"]
        if name in terms:
            raise ConfigError(f"loss formula {formula!r} names {name!r} twice")
        terms[name] = float(match["weight"]) if match["weight"] else 1.0
    return terms


def _build_term(key: str | nn.Module, spec: TermSpec) -> tuple[nn.Module, float]:
    if isinstance(spec, Mapping):
        options = dict(spec)
        weight = options.pop("weight", 1.0)
    else:
        options, weight = {}, spec
    if isinstance(key, nn.Module):
        if options:
            raise ConfigError(f"loss term {type(key).__name__} is already built; give only its weight")
        module = key
    else:
        module = create_loss(key, **options)
    if getattr(module, "kind", None) not in LOSS_KINDS:
        raise ConfigError(
            f"loss term {type(module).__name__} has no kind in {LOSS_KINDS}; register it with register_loss"
        )
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight):
        raise ConfigError(f"loss term {key!r} has weight {spec!r}; give a finite number")
    if weight <= 0:  # a zero term does nothing, a negative one ascends its loss
        raise ConfigError(f"loss term {key!r} has weight {weight:g}; give a weight > 0, or leave the term out")
    return module, weight


class WeightedSum(nn.Module):
    """``Loss = Σ_k w_k · L_k`` over loss terms of any kind.

    Build it from a formula ``"1.0*hybrid + 0.5*temperature_mse"`` or a mapping whose keys are
    registered loss names or loss modules and whose values are weights or
    ``{"weight": w, **loss_kwargs}``. ``forward`` returns the total and each term's unweighted,
    detached value by term name; ``str()`` prints the formula.

    Each term gets the inputs of its ``kind``: ``task`` terms ``(pred, target)``; ``distill`` terms
    ``(student_logits, teacher_logits)``; ``feature`` terms ``(student_features, teacher_features)``
    (one tensor each for every feature term, or sequences matched to the feature terms in order);
    ``pair`` terms ``pair = (q_ref, q_deg, severity)``. A term whose inputs are missing raises
    :class:`ConfigError`.
    """

    def __init__(self, terms: str | Mapping[str | nn.Module, TermSpec]) -> None:
        super().__init__()
        if isinstance(terms, str):
            terms = parse_formula(terms)
        if not terms:
            raise ConfigError("a loss needs at least one term, e.g. '1.0*mse'")
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for key, spec in terms.items():
            module, weight = _build_term(key, spec)
            name = getattr(module, "loss_name", None) or type(module).__name__.lower()
            unique, n = name, 2
            while unique in self.terms:
                unique, n = f"{name}_{n}", n + 1
            self.terms[unique] = module
            self.weights[unique] = weight

    @property
    def needs_teacher(self) -> bool:
        """Whether any term compares with the teacher (``distill`` or ``feature`` kind)."""
        return any(term.kind in ("distill", "feature") for term in self.terms.values())

    def forward(
        self,
        pred: torch.Tensor | None,
        target: torch.Tensor | None,
        *,
        student_logits: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        student_features: torch.Tensor | Sequence[torch.Tensor] | None = None,
        teacher_features: torch.Tensor | Sequence[torch.Tensor] | None = None,
        pair: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n_feature = sum(term.kind == "feature" for term in self.terms.values())
        features = iter(_match_features(student_features, teacher_features, n_feature))
        inputs = {
            "task": ((pred, target), "predictions and MOS targets; use it on labelled data only"),
            "distill": ((student_logits, teacher_logits), "student and teacher logits; use a teacher"),
            "pair": (pair, "a (q_ref, q_deg, severity) pair batch"),
        }
        total: torch.Tensor | float = 0.0
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            args, needs = next(features) if term.kind == "feature" else inputs[term.kind]
            if args is None or any(a is None for a in args):
                raise ConfigError(
                    f"loss term {name!r} ({term.kind}) needs {needs}, or remove it from the loss"
                )
            value = term(*args)
            values[name] = value.detach()
            total = total + self.weights[name] * value
        return total, values

    def __str__(self) -> str:
        return "Loss = " + " + ".join(f"{w} * {name}" for name, w in self.weights.items())


def _match_features(
    student: torch.Tensor | Sequence[torch.Tensor] | None,
    teacher: torch.Tensor | Sequence[torch.Tensor] | None,
    count: int,
) -> list[tuple[tuple[Any, Any] | None, str]]:
    """(inputs, what-is-needed) for each of ``count`` feature terms, in order."""
    needs = "student and teacher features; train with a teacher that returns features"
    if student is None or teacher is None:
        return [(None, needs)] * count
    if isinstance(student, torch.Tensor) and isinstance(teacher, torch.Tensor):
        return [((student, teacher), needs)] * count
    student, teacher = list(student), list(teacher)
    if not len(student) == len(teacher) == count:
        raise ConfigError(
            f"the loss has {count} feature terms but got {len(student)} student and "
            f"{len(teacher)} teacher features"
        )
    return [((s, t), needs) for s, t in zip(student, teacher)]
