"""Name → factory registries for backbones and FIQA models.

Two tables, in the manner of timm's ``register_model``/``create_model``:

* **backbones** map an input image to a feature map. A backbone module exposes
  ``forward_features(x) -> (B, C, H, W)`` and ``num_features`` (C).
* **models** are complete FIQA regressors: image → MOS in (0, 1), shape (B, 1).

Every backbone name is also a model name: ``create_model("emo2_1m")`` puts a
:class:`~kdfiqa.models.heads.QualityHead` on ``create_backbone("emo2_1m")``. ``timm:NAME`` names any
timm model, used as a backbone.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

from ..errors import ConfigError

__all__ = [
    "ModelInfo",
    "register_backbone",
    "register_model",
    "create_backbone",
    "create_model",
    "list_models",
    "list_backbones",
    "model_info",
]

TIMM_PREFIX = "timm:"

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a name without building it."""

    name: str
    default_input_size: tuple[int, int, int]
    is_student: bool
    description: str


_BACKBONES: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}
_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


def _register(
    table: dict[str, tuple[Callable[..., nn.Module], ModelInfo]],
    fn: F | None,
    name: str | None,
    default_input_size: tuple[int, int, int],
    is_student: bool,
) -> F | Callable[[F], F]:
    def decorate(f: F) -> F:
        key = name or f.__name__
        if key in table:
            raise ValueError(f"a factory named {key!r} is already registered")
        doc = (f.__doc__ or "").strip().splitlines()
        info = ModelInfo(key, tuple(default_input_size), is_student, doc[0] if doc else "")
        table[key] = (f, info)
        return f

    return decorate(fn) if fn is not None else decorate


def register_backbone(
    fn: F | None = None,
    *,
    name: str | None = None,
    default_input_size: tuple[int, int, int] = (3, 224, 224),
    is_student: bool = True,
) -> Any:
    """Register a backbone factory (usable bare or as ``@register_backbone(name=...)``).

    The factory takes keyword arguments (``pretrained``, ``num_classes``, ...) and returns a module
    with ``forward_features`` and ``num_features``. ``is_student`` says whether the backbone, with
    its quality head, is meant to fit the default budget at ``default_input_size``.
    """
    return _register(_BACKBONES, fn, name, default_input_size, is_student)


def register_model(
    fn: F | None = None,
    *,
    name: str | None = None,
    default_input_size: tuple[int, int, int] = (3, 224, 224),
    is_student: bool = True,
) -> Any:
    """Register a complete FIQA model factory (usable bare or as ``@register_model(name=...)``)."""
    return _register(_MODELS, fn, name, default_input_size, is_student)


def _unknown(name: str, table: dict) -> ConfigError:
    close = difflib.get_close_matches(name, sorted(table), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `kdfiqa models` lists them"
    return ConfigError(f"unknown model {name!r}{hint} (any timm model: 'timm:NAME')")


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` (or ``timm:NAME``) with ``kwargs``."""
    if name.startswith(TIMM_PREFIX):
        from .timm_backbone import TimmBackbone

        return TimmBackbone(name[len(TIMM_PREFIX):], **kwargs)
    if name not in _BACKBONES:
        raise _unknown(name, _BACKBONES)
    return _BACKBONES[name][0](**kwargs)


def create_model(name: str, *, head: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build the FIQA model registered as ``name``: image → score in (0, 1), shape (B, 1).

    Registered models are built by their own factory with ``kwargs``. A backbone name (or
    ``timm:NAME``) becomes a :class:`~kdfiqa.models.heads.FIQARegressor`: the backbone built with
    ``kwargs`` and a :class:`~kdfiqa.models.heads.QualityHead` built with ``head``.
    """
    recorded = dict(kwargs) if head is None else dict(kwargs, head=head)
    if name in _MODELS:
        model = _MODELS[name][0](**recorded)
    else:
        info = model_info(name)
        from .heads import FIQARegressor

        backbone = create_backbone(name, **kwargs)
        size = getattr(backbone, "default_input_size", None) or info.default_input_size
        model = FIQARegressor(backbone, head=head, default_input_size=size)
    model.model_name = name
    # What a checkpoint needs to rebuild this variant; its weights come from the checkpoint itself.
    model.model_kwargs = {k: v for k, v in recorded.items() if k != "pretrained"}
    return model


def model_info(name: str) -> ModelInfo:
    """Registry facts for ``name`` (a model, a backbone or ``timm:NAME``)."""
    if name in _MODELS:
        return _MODELS[name][1]
    if name in _BACKBONES:
        return _BACKBONES[name][1]
    if name.startswith(TIMM_PREFIX):
        return ModelInfo(name, (3, 224, 224), False, "timm model " + name[len(TIMM_PREFIX):])
    raise _unknown(name, {**_MODELS, **_BACKBONES})


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching the shell-style ``pattern``."""
    return sorted(fnmatch.filter(_BACKBONES, pattern))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names accepted by :func:`create_model`: registered models and every backbone."""
    return sorted(fnmatch.filter(set(_MODELS) | set(_BACKBONES), pattern))
