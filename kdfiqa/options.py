"""Options declared once: a config field carries its own command-line flag, help and rules.

A section of the run configuration (:mod:`kdfiqa.config`, :class:`kdfiqa.engine.TrainConfig`) is a
dataclass whose fields are made with :func:`option`. The field's type hint, default and metadata are
the single declaration:

* the YAML/``--set`` loader checks values against the hint;
* :func:`check_options`, which each section's ``__post_init__`` calls, checks the type, the
  ``choices``, the range (``at_least``/``above``/``at_most``/``below``) and the ``needs`` rule of
  every field;
* :mod:`kdfiqa.cli.config_flags` generates the argparse flag (name, type, choices, help);
* ``resume`` says what a change of the field does to ``--resume`` (:data:`RESUME_RULES`), from which
  :mod:`kdfiqa.pipeline.checks` builds the settings a resumed run may not change.

A refused value is an :class:`OptionError`: one line naming the field and its flag
(``data.val_fraction (--val-fraction): ...``); :func:`kdfiqa.config.resolve_config` names it again
where the user gave it (``c.yaml:4: data.val_fraction``, ``--set: data.val_fraction``,
``--val-fraction``)."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Callable, Sequence, Union

from .errors import ConfigError, spelled

__all__ = ["option", "COMMANDS", "RESUME_RULES", "MAX_SEED", "Naming", "OptionError", "check_options",
           "check_range", "conform", "describe", "LABEL_SHARD_BATCHES"]

COMMANDS = ("train", "distill")
"""The commands that build a run configuration (and that a recipe may hold sections for)."""

RESUME_RULES = {
    "allow": "may change when a run resumes",
    "refuse": "shapes the objective, the schedule or the data: a change refuses --resume unless --allow-changes",
    "model": "names the model whose weights last.pt holds: a change refuses --resume (a run resumes with its "
             "own model)",
}
"""What a field's ``resume`` declares: how :func:`kdfiqa.pipeline.checks.check_unchanged` treats a change."""

MAX_SEED = 2**63 - 1
"""The largest seed: torch, numpy and Python all take seeds up to a signed 64-bit integer."""

LABEL_SHARD_BATCHES = 32
"""Batches per part file of a restartable labelling run: ``pseudo-label --shard-batches``' default,
and the shards ``distill`` keeps its own labelling of ``--unlabeled`` in (:mod:`kdfiqa.distill.label_parts`)."""

_MISSING = dataclasses.MISSING
_UNION_TYPES = (Union, getattr(types, "UnionType", Union))


def option(default: Any = _MISSING, *, resume: str, factory: Callable[[], Any] | None = None,
           flag: str | None = None, help: str = "", metavar: str | None = None,
           choices: Sequence[Any] | None = None, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None, below: float | None = None, needs: str | Sequence[str] | None = None,
           commands: Sequence[str] = COMMANDS, repeat: bool = False) -> Any:
    """A dataclass field of a config section.

    Args:
        default / factory: the field's default value, or a callable making it (lists, dicts).
        resume: one of :data:`RESUME_RULES`: what a change does to ``--resume``.
        flag: the dedicated command-line flag (``"--lr"``); ``None``: reachable through ``--set`` only.
        help: one line for ``--help``.
        metavar: as in argparse.
        choices: the values allowed (``None`` too where the default is ``None``); argparse offers them.
        at_least / above / at_most / below: the range of a number (of each number of a tuple):
            closed bounds, then open ones; a ranged value must also be finite.
        needs: another field of the section that must be set (true, non-zero, non-empty) whenever
            this one differs from its default, e.g. ``needs="calibrate"``; a tuple of fields: at
            least one of them must be set.
        commands: the commands that offer the flag.
        repeat: the flag may be repeated, each use appending one item to a list field.
    """
    if resume not in RESUME_RULES:
        raise ValueError(f"resume={resume!r}: one of {', '.join(RESUME_RULES)}")
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    metadata = {"flag": flag, "help": help, "metavar": metavar, "choices": tuple(choices) if choices else None,
                "range": {k: v for k, v in bounds.items() if v is not None}, "needs": (needs,) if isinstance(needs, str) else tuple(needs) if needs else None, "resume": resume,
                "commands": tuple(commands), "repeat": repeat}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------------------ types


def describe(hint: Any) -> str:
    """A type hint in words: ``int or null``."""
    if typing.get_origin(hint) in _UNION_TYPES:
        return " or ".join(describe(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def conform(value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint``, ints made floats and lists tuples where the hint asks; else
    raise ``TypeError``."""
    if typing.get_origin(hint) in _UNION_TYPES:
        for alternative in typing.get_args(hint):
            try:
                return conform(value, alternative)
            except TypeError:
                continue
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) != len(value):
            raise TypeError
        return tuple(conform(v, a) for v, a in zip(value, args))
    if origin is not None:
        hint = origin
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise TypeError
    if isinstance(value, hint):
        return value
    raise TypeError


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ------------------------------------------------------------------------------------------ rules


def check_range(where: str, value: Any, *, at_least: float | None = None, above: float | None = None,
                at_most: float | None = None, below: float | None = None, integer: bool = False) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` (when not None) is a finite number (an
    integer when ``integer``) within the given bounds (``at_*`` closed, ``above``/``below`` open)."""
    if value is None:
        return
    bounds = [(">=", at_least), (">", above), ("<=", at_most), ("<", below)]
    words = " and ".join(f"{sign} {bound:g}" for sign, bound in bounds if bound is not None)
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {value!r} must be an integer {words}".rstrip())
        if at_least is not None and at_most is not None and above is None and below is None:
            words = f"from {at_least} to {at_most}"
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    inside = ((at_least is None or value >= at_least) and (above is None or value > above)
              and (at_most is None or value <= at_most) and (below is None or value < below))
    if not inside:
        raise ConfigError(f"{where}: {value!r} must be {'an integer ' if integer else ''}{words}")


@dataclasses.dataclass(frozen=True)
class Naming:
    """How an error names the fields of section ``section`` (a dataclass ``cls``): ``at(field)`` is
    the place and name of a value given (``c.yaml:4: data.val_fraction``, ``--val-fraction``),
    ``name(field)`` the name alone in the same spelling. Left out, a field is ``section.field``, and
    the value at fault also names its flag: ``data.val_fraction (--val-fraction)``."""

    section: str
    cls: type
    at: Callable[[str], str] | None = None
    name: Callable[[str], str] | None = None

    def where(self, field: str) -> str:
        if self.at is not None:
            return self.at(field)
        flag = _metadata(self.cls)[field].get("flag")
        name = f"{self.section}.{field}"
        return spelled(f"{name} ({flag})", name) if flag else name

    def called(self, field: str) -> str:
        return self.name(field) if self.name is not None else f"{self.section}.{field}"


class OptionError(ConfigError):
    """A value of ``field`` its declared rules refuse: ``problem`` with it, or ``needed``, the field (or
    fields, one of which would do) it needs, unset. :meth:`reworded` says the same with the fields
    named another way."""

    def __init__(self, naming: Naming, field: str, problem: str = "",
                 needed: str | Sequence[str] | None = None) -> None:
        self.field, self.problem = field, problem
        self.needed = (needed,) if isinstance(needed, str) else tuple(needed) if needed else None
        super().__init__(self.words(naming))

    def words(self, naming: Naming) -> str:
        if self.needed is None:
            return f"{naming.where(self.field)}: {self.problem}"
        other = " or ".join(naming.called(name) for name in self.needed)
        return f"{naming.where(self.field)} is only used with {other}; add {other} or drop {naming.called(self.field)}"

    def reworded(self, naming: Naming) -> ConfigError:
        """The same refusal, the fields named by ``naming``."""
        return ConfigError(self.words(naming))


@functools.lru_cache(maxsize=None)
def _metadata(cls: type) -> dict[str, Any]:
    return {f.name: f.metadata for f in dataclasses.fields(cls)}


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not _MISSING else field.default  # type: ignore[misc]


def check_options(section: Any, name: str) -> None:
    """Check every field of ``section`` (a config dataclass called ``name`` in a run config) against
    its declaration: its type hint (storing ints given for floats as floats, lists for tuples as
    tuples), ``choices`` (of each item of a list), range and ``needs`` (set: true, non-zero, non-empty); raise an
    :class:`OptionError` for the first refused."""
    cls = type(section)
    naming = Naming(name, cls)
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    for field in fields:
        value, meta, hint = getattr(section, field.name), field.metadata, hints[field.name]
        try:
            value = conform(value, hint)
        except TypeError:
            raise OptionError(naming, field.name, f"{value!r} must be {describe(hint)}") from None
        setattr(section, field.name, value)
        choices = meta.get("choices")
        for item in value if isinstance(value, list) else [value]:  # a list: each of its items
            if choices and item not in choices and not (value is None and _default(field) is None):
                raise OptionError(naming, field.name, f"{item!r} is not one of {', '.join(map(str, choices))}")
        if meta.get("range"):
            for number in value if isinstance(value, tuple) else (value,):
                try:
                    check_range("", number, integer=int in _numeric(hint), **meta["range"])
                except ConfigError as exc:
                    raise OptionError(naming, field.name, str(exc).removeprefix(": ")) from None
    for field in fields:
        needed = field.metadata.get("needs")
        if needed and getattr(section, field.name) != _default(field) and not any(
                getattr(section, name) for name in needed):
            raise OptionError(naming, field.name, needed=needed)


def _numeric(hint: Any) -> set[type]:
    """The number types a hint admits (``int | None`` → {int}; ``tuple[float, float]`` → {float})."""
    args = typing.get_args(hint) if typing.get_origin(hint) in _UNION_TYPES + (tuple,) else (hint,)
    return {a for a in args if a in (int, float)}
