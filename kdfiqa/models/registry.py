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
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, NamedTuple, TypeVar, Union

from torch import nn

from ..data.transform_spec import check_normalize
from ..errors import ConfigError, first_line
from ..registry import Registry
from .deploy import DeployConfig, output_kind, set_deploy_config
from .heads import FIQARegressor
from .timm_backbone import TIMM_BACKBONE_KWARGS, TimmBackbone

__all__ = [
    "BACKBONES",
    "MODELS",
    "MODELS_GROUP",
    "ModelInfo",
    "UNSAFE_KWARGS",
    "register_backbone",
    "register_model",
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
    """A registered factory and its facts."""

    factory: Callable[..., nn.Module]
    info: ModelInfo


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
) -> F | Callable[[F], F]:
    try:
        check_normalize(normalize)
    except ConfigError as exc:  # a factory registered wrongly: a programming error
        raise ValueError(str(exc)) from None
    forwards = tuple(forwards)

    def decorate(f: F) -> F:
        key = name or f.__name__
        doc = (f.__doc__ or "").strip().splitlines()
        accepted = _safe(set().union(_keywords(f), *(_keywords(t) for t in forwards)))
        info = ModelInfo(key, tuple(default_input_size), is_student, doc[0] if doc else "", normalize, accepted)
        table.register(Entry(f, info), name=key)
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
) -> Any:
    """Register a backbone factory (usable bare or as ``@register_backbone(name=...)``).

    The factory takes keyword arguments (``pretrained``, ``num_classes``, ...) and returns a module
    with ``forward_features`` and ``num_features``. ``is_student`` says whether the backbone, with
    its quality head, is meant to fit the default budget at ``default_input_size``; ``normalize``
    is the input normalisation it expects (see :data:`~kdfiqa.data.transform_spec.NORMALIZATIONS`).
    ``forwards`` names where the factory's ``**kwargs`` go (callables or sets of names), so that a
    checkpoint may replay those too (:func:`restorable_kwargs`).
    """
    return _register(BACKBONES, fn, name, default_input_size, is_student, normalize, forwards)


def register_model(
    fn: F | None = None,
    *,
    name: str | None = None,
    default_input_size: tuple[int, int, int] = (3, 224, 224),
    is_student: bool = True,
    normalize: str = "imagenet",
    forwards: Iterable[Forward] = (),
) -> Any:
    """Register a complete FIQA model factory (usable bare or as ``@register_model(name=...)``);
    the options are those of :func:`register_backbone`."""
    return _register(MODELS, fn, name, default_input_size, is_student, normalize, forwards)


def _is_model(name: Any) -> bool:
    """Whether ``name`` is a registered complete model, not a backbone nor ``timm:NAME``; plugins
    are loaded only for a name no table holds."""
    return (isinstance(name, str) and not name.startswith(TIMM_PREFIX) and name not in BACKBONES
            and name in MODELS)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` (or ``timm:NAME``) with ``kwargs``."""
    if name.startswith(TIMM_PREFIX):
        return TimmBackbone(name[len(TIMM_PREFIX):], **kwargs)
    if name not in BACKBONES:
        MODELS.load_plugins()  # which may register backbones
    return BACKBONES.get(name).factory(**kwargs)


def create_model(name: str, *, head: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the FIQA model registered as ``name``: image → score in (0, 1), shape (B, 1).

    Registered models are built by their own factory with ``kwargs``. A backbone name (or
    ``timm:NAME``) becomes a :class:`~kdfiqa.models.heads.FIQARegressor`: the backbone built with
    ``kwargs`` and a :class:`~kdfiqa.models.heads.QualityHead` built with ``head``.

    The model carries its :class:`~kdfiqa.models.deploy.DeployConfig`: ``name``, the keyword
    arguments (``head`` included, ``pretrained`` left out), its ``default_input_size``, a resize to
    that size, the registered normalisation and the head's output kind.
    """
    recorded = dict(kwargs) if head is None else dict(kwargs, head=head)
    info = model_info(name)
    try:
        if _is_model(name):
            model = MODELS.get(name).factory(**recorded)
        else:
            backbone = create_backbone(name, **kwargs)
            size = getattr(backbone, "default_input_size", None) or info.default_input_size
            model = FIQARegressor(backbone, head=head, default_input_size=size)
    except OSError as exc:  # a download of published weights (torchvision, timm's hub) that failed
        if kwargs.get("pretrained") is not True:
            raise
        raise ConfigError(
            f"{name}: its published weights could not be fetched ({first_line(exc)}); without a network "
            "start from random weights (--set model.pretrained=false) or put the weights in the torch/timm "
            "cache first") from None
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
