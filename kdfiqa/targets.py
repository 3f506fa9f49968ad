"""Turn a TARGET string into a model: the one resolver behind ``kdfiqa budget``, ``export``,
``predict``, ``evaluate`` and :class:`~kdfiqa.distill.Teacher`.

A TARGET is one of:

* a registered model name (``emo2_1m``, ``mobilenetv3_large_fiqa``; ``kdfiqa models`` lists them);
* ``SCHEME:REST`` for a registered scheme (:data:`TEACHER_SCHEMES`): built in, ``timm:NAME`` (any
  timm model, built with ``pretrained=False`` unless asked otherwise) and ``hf-hub:ORG/NAME`` (a model
  folder on the Hub); plugins add theirs;
* ``path/to/file.py:factory`` or ``package.module:factory``: a callable returning an ``nn.Module``
  (a registered scheme wins over a module of the same name);
* a model file (``*.yaml``/``*.yml``/``*.json``, as ``kdfiqa search --out`` writes): a registered name,
  its keyword arguments and input size (:mod:`kdfiqa.models.model_file`);
* a checkpoint written by kdfiqa (``*.pt``/``*.pth``/``*.ckpt``, or any other existing file), rebuilt
  by :func:`kdfiqa.models.rebuild.load_model` with its deploy config;
* a model folder (``model.safetensors``, ``config.json``, ``README.md``), rebuilt by
  :func:`kdfiqa.models.model_folder.load_model_folder` through the same allow-listed path; the
  built-in scheme ``hf-hub:ORG/NAME[@REVISION]`` downloads one from the Hugging Face Hub
  (``huggingface_hub``, the ``hub`` extra) and loads it the same way.

Schemes
-------
A scheme's resolver is called as ``resolver(REST, **model_kwargs)`` and returns an ``nn.Module``:
a FIQA network (one with ``forward_logits(x)``, as :func:`kdfiqa.models.create_model` builds), or,
for a teacher only, a score source: a module whose ``forward(batch)`` returns the teacher's logits
(B, 1) from the batch alone, as :class:`~kdfiqa.distill.score_table.ScoreTable` does.
:class:`~kdfiqa.distill.Teacher` and :func:`load_target` resolve ``SCHEME:REST`` through the same
table, so ``kdfiqa distill --teacher SCHEME:REST`` and ``kdfiqa budget SCHEME:REST`` agree. Plugins
add schemes through the entry-point group ``kdfiqa.teachers`` (:data:`TEACHERS_GROUP`): each entry
point is a resolver, registered under the entry point's name as its scheme::

    [project.entry-points."kdfiqa.teachers"]
    hub = "my_package.teachers:resolve_hub"    # --teacher hub:some-model
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .errors import ConfigError, KdfiqaError, first_line
from .models.rebuild import load_model
from .models import create_model
from .models.model_file import build_model_file, is_model_file
from .models.model_folder import HUB_PREFIX, download_model_folder, is_model_folder, load_model_folder
from .models.registry import TIMM_PREFIX
from .registry import Registry

__all__ = ["load_target", "resolve_scheme", "TEACHER_SCHEMES", "TEACHERS_GROUP"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
TEACHERS_GROUP = "kdfiqa.teachers"
"""The entry-point group of plugin teacher sources: resolvers, registered under their scheme."""

Resolver = Callable[..., nn.Module]
"""``resolver(rest, **model_kwargs) -> nn.Module`` for a ``SCHEME:REST`` source."""

TEACHER_SCHEMES: Registry[Resolver] = Registry(
    "teacher scheme", listing="built in: timm, hf-hub; plugins add theirs (entry points kdfiqa.teachers)",
    group=TEACHERS_GROUP)
"""Scheme → resolver of ``SCHEME:REST`` sources (built-in ``timm``, then plugins of :data:`TEACHERS_GROUP`)."""


@TEACHER_SCHEMES.register(name=TIMM_PREFIX.rstrip(":"))
def _timm(name: str, **model_kwargs: Any) -> nn.Module:
    """``timm:NAME``: the timm model as a FIQA backbone with a quality head (``create_model``)."""
    return create_model(TIMM_PREFIX + name, **model_kwargs)


@TEACHER_SCHEMES.register(name=HUB_PREFIX.rstrip(":"))
def _hub(repo: str, **model_kwargs: Any) -> nn.Module:
    """``hf-hub:ORG/NAME[@REVISION]``: the model folder of that Hub repository (downloaded into the
    Hub cache); like a checkpoint, the folder builds its model itself (``model_kwargs`` are unused)."""
    return load_model_folder(download_model_folder(HUB_PREFIX + repo))


def resolve_scheme(target: str | os.PathLike, **model_kwargs: Any) -> nn.Module | None:
    """The module the registered scheme of a ``SCHEME:REST`` target resolves (see the module
    docstring), or ``None`` when ``target`` names no registered scheme. A resolver that fails or
    returns something else than an ``nn.Module`` is a one-line :class:`ConfigError`."""
    target = os.fspath(target)
    scheme, sep, rest = target.partition(":")
    if not sep or scheme not in TEACHER_SCHEMES:
        return None
    try:
        module = TEACHER_SCHEMES.get(scheme)(rest, **model_kwargs)
    except KdfiqaError:
        raise
    except Exception as exc:  # a resolver's own failure (a plugin's, or timm's)
        raise ConfigError(f"cannot build {target!r}: {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{target!r}: the {scheme!r} scheme returned {type(module).__name__}, not an nn.Module")
    return module


def _from_callable(spec: str) -> nn.Module:
    location, _, attr = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise ConfigError(f"target {spec!r}: file {location} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"target {spec!r}: importing {location} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise ConfigError(f"target {spec!r}: cannot import module {location!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"target {spec!r}: {location} has no callable named {attr!r}")
    try:
        model = factory()
    except Exception as exc:
        raise ConfigError(f"target {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"target {spec!r}: {attr}() returned {type(model).__name__}, not an nn.Module")
    return model


def load_target(target: str | os.PathLike, **model_kwargs: Any) -> nn.Module:
    """Build or load the model named by ``target`` (see the module docstring for the forms).

    ``model_kwargs`` go to :func:`kdfiqa.models.create_model` for registered names and model
    files, and to a scheme's resolver (e.g. ``pretrained=True``); a checkpoint, a model folder or a
    factory builds its model itself.
    """
    target = os.fspath(target)
    resolved = resolve_scheme(target, **model_kwargs)
    if resolved is not None:
        return resolved
    if target.endswith(CHECKPOINT_SUFFIXES):
        return load_model(target)
    if is_model_file(target):
        return build_model_file(target, **model_kwargs)
    if is_model_folder(target):
        return load_model_folder(target)
    if ":" in target:
        return _from_callable(target)
    if Path(target).is_file():
        return load_model(target)
    if Path(target).is_dir():
        inside = [name for name in ("best.pt", "last.pt") if (Path(target) / name).is_file()]
        hint = f"give {Path(target) / inside[0]}" if inside else "give a checkpoint file (*.pt)"
        raise ConfigError(f"{target}: is a folder, not a model or a checkpoint; {hint}, or a model folder "
                          "(model.safetensors and config.json)")
    return create_model(target, **model_kwargs)
