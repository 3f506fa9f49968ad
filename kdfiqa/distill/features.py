"""Feature distillation plumbing: which student and teacher modules to compare, and hooks to read them.

Modules are named by their path in the **unwrapped** model (``"backbone.stages.2"``), as
``model.named_modules()`` lists them; a DDP wrapper's ``module.`` prefix is never part of a name.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from ..errors import ConfigError
from ..losses import create_loss, loss_class

__all__ = ["FeatureLossSpec", "FeaturePair", "parse_feature_pairs", "FeatureTap", "capturing", "build_feature_loss"]

FeatureLossSpec = Union[str, Mapping[str, Any], nn.Module]
"""A feature loss: a registered name (``"feature"``), ``{"name": "feature", **kwargs}``, or a module."""

DEFAULT_FEATURE_LOSS = "feature"


@dataclass(frozen=True)
class FeaturePair:
    """Compare the output of ``student`` (a module path in the student) with that of ``teacher`` (a
    module path in the teacher network) through ``loss``, weighted by ``weight``."""

    student: str
    teacher: str
    loss: FeatureLossSpec = DEFAULT_FEATURE_LOSS
    weight: float = 1.0
    name: str = field(default="")

    @classmethod
    def from_spec(cls, spec: Any, name: str = "") -> "FeaturePair":
        """Read ``(student, teacher[, loss[, weight]])``, the same as a ``"S:T[:LOSS[:WEIGHT]]"`` string
        (the command line's ``--feature-loss``), a mapping with those keys, or a FeaturePair."""
        if isinstance(spec, str):
            spec = _split_spec(spec)
        if isinstance(spec, FeaturePair):
            pair = spec
        elif isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"student", "teacher", "loss", "weight"})
            if unknown or not {"student", "teacher"} <= set(spec):
                raise ConfigError(
                    f"feature loss {name or spec!r}: give keys student, teacher and optionally loss, weight "
                    f"(got {', '.join(map(str, spec))})"
                )
            pair = cls(**spec)
        elif isinstance(spec, (tuple, list)) and 2 <= len(spec) <= 4:
            pair = cls(*spec)
        else:
            raise ConfigError(
                f"feature loss {spec!r}: expected (student_module, teacher_module[, loss[, weight]])"
            )
        return cls(pair.student, pair.teacher, pair.loss, float(pair.weight), name or pair.name or pair.student)


def _split_spec(text: str) -> tuple[Any, ...]:
    parts: list[Any] = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(parts[:2]):
        raise ConfigError(f"feature loss {text!r}: expected STUDENT_MODULE:TEACHER_MODULE[:LOSS[:WEIGHT]]")
    if len(parts) == 4:
        try:
            parts[3] = float(parts[3])
        except ValueError:
            raise ConfigError(f"feature loss {text!r}: weight {parts[3]!r} is not a number") from None
    return tuple(parts)


def parse_feature_pairs(specs: Sequence[Any] | Mapping[str, Any] | None) -> list[FeaturePair]:
    """Feature pairs from a list of specs (named by student path) or a ``{term_name: spec}`` mapping."""
    if not specs:
        return []
    items = specs.items() if isinstance(specs, Mapping) else [("", s) for s in specs]
    pairs = [FeaturePair.from_spec(spec, name) for name, spec in items]
    names = [p.name for p in pairs]
    for i, pair in enumerate(pairs):
        if names.count(pair.name) > 1:
            pairs[i] = FeaturePair(pair.student, pair.teacher, pair.loss, pair.weight, f"{pair.name}#{i}")
    return pairs


def find_module(model: nn.Module, path: str, role: str) -> nn.Module:
    """``model``'s sub-module at ``path`` (``""`` is the model); ConfigError listing close paths."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        close = difflib.get_close_matches(path, [n for n, _ in model.named_modules() if n], n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; list them with model.named_modules()"
        raise ConfigError(f"{role} has no module {path!r}{hint}") from None


class FeatureTap:
    """A forward hook on one named module that keeps its output while armed (see :func:`capturing`),
    so forwards outside distillation (validation, export, copies of the model) retain nothing."""

    def __init__(self, model: nn.Module, path: str, role: str) -> None:
        self.path = path
        self.role = role
        self.armed = False
        self.value: Tensor | None = None
        self.module = find_module(model, path, role)
        self.module.register_forward_hook(self._store)

    def _store(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.armed:
            self.value = output

    def take(self) -> Tensor:
        """The output captured by the last forward, then forget it."""
        value, self.value = self.value, None
        if value is None:
            children = [f"{self.path}.{name}" for name, _ in self.module.named_children()][-1:]
            hint = f" (a container: name one of its modules, e.g. {children[0]!r})" if children else ""
            raise ConfigError(f"{self.role} module {self.path!r} was not called by forward{hint}; pick another module")
        if not isinstance(value, Tensor):
            raise ConfigError(
                f"{self.role} module {self.path!r} returns {type(value).__name__}, not a tensor; pick a module "
                "whose output is one feature map"
            )
        return value


@contextlib.contextmanager
def capturing(taps: Sequence[FeatureTap]) -> Iterator[None]:
    """Arm ``taps`` for the forwards inside the block; disarm and forget their values on exit."""
    for tap in taps:
        tap.armed = True
    try:
        yield
    finally:
        for tap in taps:
            tap.armed, tap.value = False, None


def build_feature_loss(spec: FeatureLossSpec, student_feat: Tensor, teacher_feat: Tensor) -> nn.Module:
    """The loss module for one pair, sized from example features (channel dimension 1).

    A registered loss that takes ``student_channels``/``teacher_channels`` gets them from the features
    unless given; lazily sized parameters are materialised on the example features, so the optimiser
    sees every parameter from the first step.
    """
    if isinstance(spec, nn.Module):
        loss = spec
    else:
        options = {"name": spec} if isinstance(spec, str) else dict(spec)
        if "name" not in options:
            raise ConfigError(f"feature loss {spec!r}: give the registered loss 'name'")
        name = options.pop("name")
        accepted = inspect.signature(loss_class(name)).parameters
        sizes = {"student_channels": student_feat.shape[1], "teacher_channels": teacher_feat.shape[1]}
        options.update({k: v for k, v in sizes.items() if k in accepted and options.get(k) is None})
        loss = create_loss(name, **options)
    if getattr(loss, "kind", None) != "feature":
        raise ConfigError(f"feature loss {type(loss).__name__} has kind {getattr(loss, 'kind', None)!r}, not 'feature'")
    if any(is_lazy(p) for p in loss.parameters()):
        with torch.no_grad():
            loss(student_feat, teacher_feat)
    return loss
