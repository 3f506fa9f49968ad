"""A weighted sum of loss terms that feeds each term by its kind and prints itself as a formula."""

from __future__ import annotations

import ast
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
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*(?:\((?P<args>[^()]*)\)\s*)?")
_EXPONENT_SIGN = re.compile(r"[0-9.][eE]$")
LITERALS = (bool, int, float, str, type(None))
"""The types a term's keyword argument may take in a formula."""


def _split_terms(formula: str) -> list[str]:
    """``formula`` cut at each ``+`` that joins terms: outside parentheses and not an exponent's sign."""
    pieces, depth, start = [], 0, 0
    for i, char in enumerate(formula):
        depth += (char == "(") - (char == ")")
        if char == "+" and depth == 0 and not _EXPONENT_SIGN.search(formula[start:i]):
            pieces.append(formula[start:i])
            start = i + 1
    return [*pieces, formula[start:]]


def _keyword_args(text: str, term: str, formula: str) -> dict[str, Any]:
    """``"temperature=2, alpha=0.5"`` → ``{"temperature": 2, "alpha": 0.5}``: keywords only, each a
    number, a boolean, a string or None (read as Python literals, never evaluated as code)."""
    usage = (f"loss formula {formula!r}: cannot read the parameters of {term.strip()!r}; write them as "
             "NAME=VALUE joined by ',', e.g. '0.5*temperature_mse(temperature=2)'")
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise ConfigError(usage) from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise ConfigError(usage)
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        try:
            value = ast.literal_eval(keyword.value)
        except ValueError:
            value = ...  # an expression, not a literal
        if not isinstance(value, LITERALS):
            raise ConfigError(f"{usage} (a value must be a number, True/False, a quoted string or None)")
        if keyword.arg in kwargs:
            raise ConfigError(f"loss formula {formula!r}: {term.strip()!r} gives {keyword.arg!r} twice; keep one")
        if keyword.arg == "weight":
            raise ConfigError(f"loss formula {formula!r}: give the weight of {term.strip()!r} as WEIGHT*NAME, "
                              "not as a parameter")
        kwargs[keyword.arg] = value
    return kwargs


def parse_formula(formula: str) -> dict[str, TermSpec]:
    """``"1.0*hybrid(alpha=0.5) + 0.5*temperature_mse"`` → ``{"hybrid": {"weight": 1.0, "alpha": 0.5},
    "temperature_mse": 0.5}``.

    A term is ``[WEIGHT*]NAME[(KEY=VALUE, ...)]``: without a weight it has weight 1; its keyword
    arguments (numbers, booleans, quoted strings, None) go to the loss's constructor, which checks
    them against its signature and ranges. :class:`ConfigError` names the term that cannot be read.
    """
    terms: dict[str, TermSpec] = {}
    for piece in _split_terms(formula):
        match = _TERM.fullmatch(piece)
        if match is None:
            raise ConfigError(
                f"loss formula {formula!r}: cannot read term {piece.strip()!r}; "
                "write terms as WEIGHT*NAME or WEIGHT*NAME(KEY=VALUE, ...) joined by '+', "
                "e.g. '1.0*hybrid + 0.5*temperature_mse(temperature=2)'"
            )
        name = match["name"]
        if name in terms:
            raise ConfigError(f"loss formula {formula!r} names {name!r} twice")
        weight = float(match["weight"]) if match["weight"] else 1.0
        kwargs = _keyword_args(match["args"], piece, formula) if match["args"] is not None else {}
        terms[name] = {"weight": weight, **kwargs} if kwargs else weight
    return terms


def _build_term(key: str | nn.Module, spec: TermSpec) -> tuple[nn.Module, float, dict[str, Any]]:
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
        try:
            module = create_loss(key, **options)
        except ConfigError as exc:
            raise ConfigError(f"loss term {key!r}: {exc}") from None
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
    return module, weight, options


class WeightedSum(nn.Module):
    """``Loss = Σ_k w_k · L_k`` over loss terms of any kind.

    Build it from a formula ``"1.0*hybrid + 0.5*temperature_mse(temperature=2)"`` or a mapping whose keys are
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
        self.options: dict[str, dict[str, Any]] = {}
        for key, spec in terms.items():
            module, weight, options = _build_term(key, spec)
            name = getattr(module, "loss_name", None) or type(module).__name__.lower()
            unique, n = name, 2
            while unique in self.terms:
                unique, n = f"{name}_{n}", n + 1
            self.terms[unique] = module
            self.weights[unique] = weight
            self.options[unique] = options

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

    @property
    def formula(self) -> str:
        """The sum as a formula :func:`parse_formula` reads back: ``"1.0*hybrid + 0.5*temperature_mse(temperature=2)"``."""
        return " + ".join(f"{self.weights[name]}*{name}{self._arguments(name)}" for name in self.terms)

    def _arguments(self, name: str) -> str:
        options = self.options[name]
        return f"({', '.join(f'{k}={v!r}' for k, v in options.items())})" if options else ""

    def __str__(self) -> str:
        return "Loss = " + " + ".join(f"{w} * {name}{self._arguments(name)}" for name, w in self.weights.items())


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
