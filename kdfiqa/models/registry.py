"""Name → factory registries for backbones and FIQA models.

Two :class:`~kdfiqa.registry.Registry` tables, in the manner of timm's ``register_model``/``create_model``:

* **backbones** (:data:`BACKBONES`) map an input image to a feature map. A backbone module exposes
  ``forward_features(x) -> (B, C, H, W)`` and ``num_features`` (C).
* **models** (:data:`MODELS`) are complete FIQA regressors: image → MOS in (0, 1), shape (B, 1).

Every backbone name is also a model name: ``create_model("emo2_1m")`` puts a
:class:`~kdfiqa.models.heads.QualityHead` on ``create_backbone("emo2_1m")``. ``timm:NAME`` names any
timm model, used as a backbone. Every model :func:`create_model` builds carries its
:class:`~kdfiqa.models.deploy.DeployConfig`.

A checkpoint replays only the factory keyword arguments :func:`restorable_kwargs` allows: the
factory's own keyword parameters and those of the callables its ``**kwargs`` are declared to reach
(``forwards=``), never ``pretrained`` or anything else that downloads or opens a file.

Plugins add models through the entry-point group ``kdfiqa.models`` (:data:`MODELS_GROUP`). An entry
point is either a **model factory**, registered with :func:`register_model`'s defaults under the
entry point's name, or a **module** whose import registers models and backbones with
:func:`register_model` / :func:`register_backbone` (to set their input size, normalisation or
``forwards``)::

    [project.entry-points."kdfiqa.models"]
    my_student = "my_package.models:my_student"     # a factory
    my_zoo = "my_package.zoo"                       # a module that registers its models

Plugin models are built, listed (``kdfiqa models``) and rebuilt from their checkpoints (with the
same :func:`restorable_kwargs` allow-list) like built-in ones, whenever the plugin is installed.

Every model spec is bounded before memory is touched: whatever the spec came from (a flag, ``--set``,
a model file, a search, a checkpoint), :func:`create_model` and :func:`create_backbone` first check the
keyword arguments against the :class:`Bound` each family declares (``bounds=`` of
:func:`register_model`/:func:`register_backbone`; the quality head's :data:`~kdfiqa.models.heads.HEAD_BOUNDS`
and timm's :data:`~kdfiqa.models.timm_backbone.TIMM_BOUNDS` always apply), then build the network on
the ``meta`` device (no memory, no weights) and refuse one over :data:`MAX_PARAMETERS` parameters,
and only then build it for real. Any failure of the factory becomes one :class:`ConfigError` line
naming the spec.
"""

from __future__ import annotations

import inspect
import reprlib
import types
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Mapping, NamedTuple, TypeVar, Union

import torch
from torch import nn

from ..data.transform_spec import check_normalize
from ..errors import ConfigError, KdfiqaError, first_line, named_first_line, spelled
from ..registry import Registry
from .bounds import Bound, check_bounds
from .deploy import DeployConfig, output_kind, set_deploy_config
from .heads import HEAD_BOUNDS, FIQARegressor
from .timm_backbone import TIMM_BACKBONE_KWARGS, TIMM_BOUNDS, TimmBackbone

__all__ = [
    "BACKBONES",
    "MODELS",
    "MODELS_GROUP",
    "MAX_PARAMETERS",
    "Bound",
    "ModelInfo",
    "UNSAFE_KWARGS",
    "register_backbone",
    "register_model",
    "check_model_spec",
    "create_backbone",
    "create_model",
    "list_models",
    "list_backbones",
    "model_info",
    "restorable_kwargs",
]

TIMM_PREFIX = "timm:"
MODELS_GROUP = "kdfiqa.models"
"""The entry-point group of plugin models: model factories, or modules that register models."""
LISTING = "`kdfiqa models` lists them; any timm model is 'timm:NAME'"

MAX_PARAMETERS = 2_000_000_000
"""The most parameters any model spec may build to (far above any FIQA network, far below what
exhausts a machine); counted on the ``meta`` device before the real build."""

F = TypeVar("F", bound=Callable[..., nn.Module])
Forward = Union[Callable[..., Any], Collection[str]]
"""Where a factory's ``**kwargs`` go: a callable (its keyword parameters count) or a set of names."""

UNSAFE_KWARGS = frozenset({"pretrained", "checkpoint_path", "cache_dir", "file", "path", "url"})
"""Keyword arguments a checkpoint never replays (nor any starting with ``pretrained``, such as
timm's ``pretrained_cfg`` and ``pretrained_cfg_overlay``): they download weights or open files,
and a checkpoint brings its own weights."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a name without building it."""

    name: str
    default_input_size: tuple[int, int, int]
    is_student: bool
    description: str
    normalize: str = "imagenet"
    """Input normalisation the network expects (its deploy config's default)."""
    restorable_kwargs: frozenset[str] = frozenset()
    """The factory's keyword arguments a checkpoint may replay (see :func:`restorable_kwargs`)."""


class Entry(NamedTuple):
    """A registered factory, its facts and the bounds of its keyword arguments."""

    factory: Callable[..., nn.Module]
    info: ModelInfo
    bounds: Mapping[str, Bound]


def _adopt(name: str, obj: Any) -> None:
    """Take in a plugin's entry point: a module registered its models when imported; a factory is
    registered as model ``name``."""
    if isinstance(obj, types.ModuleType):
        return
    if not callable(obj):
        raise TypeError(f"{obj!r} is neither a model factory nor a module that registers models")
    if name in BACKBONES:
        raise ValueError(f"model {name!r} is already registered as a backbone")
    register_model(obj, name=name)


MODELS: Registry[Entry] = Registry("model", listing=LISTING, group=MODELS_GROUP, adopt=_adopt)
"""Complete FIQA models by name (built-ins, then plugins of :data:`MODELS_GROUP`)."""
BACKBONES: Registry[Entry] = Registry("backbone", listing=LISTING)
"""Backbones by name (each is a model name too; plugins register theirs when :data:`MODELS` loads
them)."""


def _keywords(target: Forward) -> set[str]:
    """The names a callable accepts by keyword, or the given names."""
    if not callable(target):
        return set(target)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(target).parameters.values() if p.kind in kinds}


def _safe(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n for n in names if n not in UNSAFE_KWARGS and not n.startswith("pretrained"))


def _register(
    table: Registry[Entry],
    fn: F | None,
    name: str | None,
    default_input_size: tuple[int, int, int],
    is_student: bool,
    normalize: str,
    forwards: Iterable[Forward],
    bounds: Mapping[str, Bound],
) -> F | Callable[[F], F]:
    try:
        check_normalize(normalize)
    except ConfigError as exc:  # a factory registered wrongly: a programming error
        raise ValueError(str(exc)) from None
    forwards = tuple(forwards)
    bounds = types.MappingProxyType(dict(bounds))

    def decorate(f: F) -> F:
        key = name or f.__name__
        doc = (f.__doc__ or "").strip().splitlines()
        accepted = _safe(set().union(_keywords(f), *(_keywords(t) for t in forwards)))
        info = ModelInfo(key, tuple(default_input_size), is_student, doc[0] if doc else "", normalize, accepted)
        table.register(Entry(f, info, bounds), name=key)
        return f

    return decorate(fn) if fn is not None else decorate


def register_backbone(
    fn: F | None = None,
    *,
    name: str | None = None,
    default_input_size: tuple[int, int, int] = (3, 224, 224),
    is_student: bool = True,
    normalize: str = "imagenet",
    forwards: Iterable[Forward] = (),
    bounds: Mapping[str, Bound] | None = None,
) -> Any:
    """Register a backbone factory (usable bare or as ``@register_backbone(name=...)``).

    The factory takes keyword arguments (``pretrained``, ``num_classes``, ...) and returns a module
    with ``forward_features`` and ``num_features``. ``is_student`` says whether the backbone, with
    its quality head, is meant to fit the default budget at ``default_input_size``; ``normalize``
    is the input normalisation it expects (see :data:`~kdfiqa.data.transform_spec.NORMALIZATIONS`).
    ``forwards`` names where the factory's ``**kwargs`` go (callables or sets of names), so that a
    checkpoint may replay those too (:func:`restorable_kwargs`). ``bounds`` maps keyword arguments
    with a cost (depths, widths, ratios, ...) to the :class:`Bound` they must lie in; every build
    checks them before anything is built.
    """
    return _register(BACKBONES, fn, name, default_input_size, is_student, normalize, forwards, bounds or {})


def register_model(
    fn: F | None = None,
    *,
    name: str | None = None,
    default_input_size: tuple[int, int, int] = (3, 224, 224),
    is_student: bool = True,
    normalize: str = "imagenet",
    forwards: Iterable[Forward] = (),
    bounds: Mapping[str, Bound] | None = None,
) -> Any:
    """Register a complete FIQA model factory (usable bare or as ``@register_model(name=...)``);
    the options are those of :func:`register_backbone`."""
    return _register(MODELS, fn, name, default_input_size, is_student, normalize, forwards, bounds or {})


def _is_model(name: Any) -> bool:
    """Whether ``name`` is a registered complete model, not a backbone nor ``timm:NAME``; plugins
    are loaded only for a name no table holds."""
    return (isinstance(name, str) and not name.startswith(TIMM_PREFIX) and name not in BACKBONES
            and name in MODELS)


def _spec(name: str, kwargs: Mapping[str, Any]) -> str:
    """``name(key=value, ...)``, long values abridged: how an error names a model spec."""
    short = reprlib.Repr()
    short.maxlist = short.maxtuple = short.maxdict = 8
    short.maxstring = short.maxother = 60
    return f"model {name}(" + ", ".join(f"{k}={short.repr(v)}" for k, v in kwargs.items()) + ")"


def _bounds(name: str) -> dict[str, Bound]:
    """The bounds the keyword arguments of ``name``'s factory must lie in."""
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        return dict(TIMM_BOUNDS)
    table = MODELS if _is_model(name) else BACKBONES
    if name not in table:
        MODELS.load_plugins()  # which may register backbones
    return dict(table.get(name).bounds)


def _meta_parameters(build: Callable[..., nn.Module], kwargs: Mapping[str, Any]) -> int | None:
    """The parameter count of ``build(**kwargs)`` built on the ``meta`` device (shapes only, no
    memory), without downloading or opening weights and leaving the random state as it was;
    ``None`` when the factory cannot build on the ``meta`` device (it reads tensor values)."""
    shapes_only = {k: v for k, v in kwargs.items() if k in _safe([k])}
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = build(**shapes_only)
    except NotImplementedError:  # "Cannot copy out of meta tensor": the factory needs real values
        return None
    except RuntimeError as exc:
        if "meta" in str(exc):
            return None
        raise
    return sum(p.numel() for p in model.parameters())


def _attempt(spec: str, kwargs: Mapping[str, Any], build: Callable[[], Any]) -> Any:
    """``build()``, its failures one line naming ``spec``: kdfiqa's own errors keep their kind, a
    constructor's exception (torch, timm, the family's code) becomes a :class:`ConfigError`; a
    failed download of published weights says how to do without."""
    try:
        return build()
    except KdfiqaError as exc:  # the factory's own one-line refusal, now naming the spec
        exc.args = (f"{spec}: {exc}", *exc.args[1:])
        raise
    except OSError as exc:  # a download of published weights (torchvision, timm's hub) that failed
        if kwargs.get("pretrained") is not True:
            raise
        raise ConfigError(
            f"{spec}: its published weights could not be fetched ({first_line(exc)}); without a network "
            f"start from random weights ({spelled('--set model.pretrained=false', 'pretrained=False')}) or put the weights in the torch/timm "
            "cache first") from None
    except Exception as exc:  # noqa: BLE001 - a constructor refusing the values fails in many ways
        raise ConfigError(f"{spec} cannot be built: {named_first_line(exc)}") from exc


def check_model_spec(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse, with one :class:`ConfigError` line naming the spec and the argument, keyword arguments
    outside the bounds ``name``'s family declares, or a ``head`` whose ``hidden`` widths are outside
    :data:`~kdfiqa.models.heads.HEAD_BOUNDS`. Builds nothing."""
    spec = _spec(name, kwargs)
    check_bounds(spec, kwargs, _bounds(name))
    if isinstance(kwargs.get("head"), Mapping):
        check_bounds(f"{spec}: head", kwargs["head"], HEAD_BOUNDS)


def _guarded_build(name: str, kwargs: dict[str, Any], build: Callable[..., nn.Module]) -> nn.Module:
    """``build(**kwargs)`` once the spec is known to be bounded: the declared bounds hold, and the
    network built on the ``meta`` device has at most :data:`MAX_PARAMETERS` parameters (counted
    whenever an argument other than ``pretrained`` is given). Every
    failure is one line naming the spec (see :func:`_attempt`)."""
    spec = _spec(name, kwargs)
    check_model_spec(name, kwargs)
    # a registered variant as its factory defines it (no argument but pretrained) needs no count
    counted = any(k != "pretrained" for k in kwargs)
    params = _attempt(spec, kwargs, lambda: _meta_parameters(build, kwargs)) if counted else None
    if params is not None and params > MAX_PARAMETERS:
        raise ConfigError(f"{spec}: {params:,} parameters, over the {MAX_PARAMETERS:,} any model may have; "
                          "choose smaller depths or widths")
    return _attempt(spec, kwargs, lambda: build(**kwargs))


def _backbone(name: str, **kwargs: Any) -> nn.Module:
    if name.startswith(TIMM_PREFIX):
        return TimmBackbone(name[len(TIMM_PREFIX):], **kwargs)
    if name not in BACKBONES:
        MODELS.load_plugins()  # which may register backbones
    return BACKBONES.get(name).factory(**kwargs)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` (or ``timm:NAME``) with ``kwargs``, once they are
    within bounds (see the module's notes); a failure is one :class:`ConfigError` line."""
    return _guarded_build(name, kwargs, lambda **kw: _backbone(name, **kw))


def create_model(name: str, *, head: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the FIQA model registered as ``name``: image → score in (0, 1), shape (B, 1).

    Registered models are built by their own factory with ``kwargs``. A backbone name (or
    ``timm:NAME``) becomes a :class:`~kdfiqa.models.heads.FIQARegressor`: the backbone built with
    ``kwargs`` and a :class:`~kdfiqa.models.heads.QualityHead` built with ``head``. The spec is
    bounded first (see the module's notes): a spec out of bounds, or one the factory refuses, is
    one :class:`ConfigError` line naming it.

    The model carries its :class:`~kdfiqa.models.deploy.DeployConfig`: ``name``, the keyword
    arguments (``head`` included, ``pretrained`` left out), its ``default_input_size``, a resize to
    that size, the registered normalisation and the head's output kind.
    """
    recorded = dict(kwargs) if head is None else dict(kwargs, head=head)
    info = model_info(name)

    def build(**values: Any) -> nn.Module:
        if _is_model(name):
            return MODELS.get(name).factory(**values)
        own_head = values.pop("head", None)
        backbone = _backbone(name, **values)
        size = getattr(backbone, "default_input_size", None) or info.default_input_size
        return FIQARegressor(backbone, head=own_head, default_input_size=size)

    model = _guarded_build(name, recorded, build)
    config = DeployConfig(
        name=name,
        kwargs={k: v for k, v in recorded.items() if k != "pretrained"},
        input_size=tuple(getattr(model, "default_input_size", None) or info.default_input_size),
        normalize=info.normalize,
        output=output_kind(model),
    )
    return set_deploy_config(model, config)


def model_info(name: str) -> ModelInfo:
    """Registry facts for ``name`` (a model, a backbone or ``timm:NAME``)."""
    if _is_model(name):
        return MODELS.get(name).info
    if name in BACKBONES:
        return BACKBONES.get(name).info
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        return ModelInfo(name, (3, 224, 224), False, "timm model " + name[len(TIMM_PREFIX):],
                         restorable_kwargs=TIMM_BACKBONE_KWARGS)
    raise MODELS.unknown(name, list_models())


def restorable_kwargs(name: str) -> frozenset[str]:
    """The keyword arguments of ``create_model(name, ...)`` a checkpoint may replay.

    Registered models: the factory's keyword parameters and those of its declared ``forwards``;
    backbone names: the same for the backbone factory, plus ``head``; ``timm:NAME``: the timm
    allow-list :data:`~kdfiqa.models.timm_backbone.TIMM_BACKBONE_KWARGS`, plus ``head``. Never any
    of :data:`UNSAFE_KWARGS`.
    """
    info = model_info(name)
    return info.restorable_kwargs if _is_model(name) else info.restorable_kwargs | {"head"}


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching the shell-style ``pattern``."""
    MODELS.load_plugins()  # which may register backbones
    return BACKBONES.list(pattern)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names accepted by :func:`create_model`: registered models and every backbone."""
    return sorted(set(MODELS.list(pattern)) | set(BACKBONES.list(pattern)))
