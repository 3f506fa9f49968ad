"""Turn a TARGET string into a model: the one resolver behind ``kdfiqa budget``, ``export``,
``predict``, ``evaluate`` and :class:`~kdfiqa.distill.Teacher`.

A TARGET is one of:

* a registered model name (``emo2_1m``, ``mobilenetv3_large_fiqa``; ``kdfiqa models`` lists them);
* ``timm:NAME``: any timm model, built with ``pretrained=False`` unless asked otherwise;
* ``path/to/file.py:factory`` or ``package.module:factory``: a callable returning an ``nn.Module``;
* a model file (``*.yaml``/``*.yml``/``*.json``, as ``kdfiqa search --out`` writes): a registered name,
  its keyword arguments and input size (:mod:`kdfiqa.models.model_file`);
* a checkpoint written by kdfiqa (``*.pt``/``*.pth``/``*.ckpt``, or any other existing file), rebuilt
  by :func:`kdfiqa.models.load_model` with its deploy config.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from torch import nn

from .models.rebuild import load_model
from .errors import ConfigError, KdfiqaError
from .models import create_model
from .models.model_file import build_model_file, is_model_file
from .models.registry import TIMM_PREFIX

__all__ = ["load_target"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


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

    ``model_kwargs`` go to :func:`kdfiqa.models.create_model` for registered names, ``timm:NAME``
    and model files (e.g. ``pretrained=True``); a checkpoint or a factory builds its model itself.
    """
    target = os.fspath(target)
    if target.endswith(CHECKPOINT_SUFFIXES):
        return load_model(target)
    if is_model_file(target):
        return build_model_file(target, **model_kwargs)
    if ":" in target and not target.startswith(TIMM_PREFIX):
        return _from_callable(target)
    if Path(target).is_file():
        return load_model(target)
    if Path(target).is_dir():
        inside = [name for name in ("best.pt", "last.pt") if (Path(target) / name).is_file()]
        hint = f"give {Path(target) / inside[0]}" if inside else "give a checkpoint file (*.pt)"
        raise ConfigError(f"{target}: is a folder, not a model or a checkpoint; {hint}")
    try:
        return create_model(target, **model_kwargs)
    except KdfiqaError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot build model {target!r}: {type(exc).__name__}: {exc}") from exc
