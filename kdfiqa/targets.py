"""Turn a command-line TARGET into a model.

A TARGET is one of:

* a registered model name (``emo2_1m``, ``mobilenetv3_large_fiqa``; ``kdfiqa models`` lists them);
* ``timm:NAME``: any timm model, built with ``pretrained=False`` unless asked otherwise;
* ``path/to/file.py:factory`` or ``package.module:factory``: a callable returning an ``nn.Module``;
* a checkpoint written by kdfiqa (``*.pt``/``*.pth``).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError, KdfiqaError

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


def load_target(target: str, **model_kwargs: Any) -> nn.Module:
    """Build or load the model named by ``target`` (see the module docstring for the forms)."""
    from .models import create_model

    if target.endswith(CHECKPOINT_SUFFIXES):
        from .checkpoint import load_model

        return load_model(target)
    if ":" in target and not target.startswith("timm:"):
        return _from_callable(target)
    try:
        return create_model(target, **model_kwargs)
    except KdfiqaError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot build model {target!r}: {type(exc).__name__}: {exc}") from exc
