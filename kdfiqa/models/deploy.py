"""The deployment config every kdfiqa model carries: how to rebuild it and how to feed it.

As timm attaches a ``pretrained_cfg`` to each model it builds, :func:`kdfiqa.models.create_model`
attaches a frozen :class:`DeployConfig` (``model.deploy_config``): the registry name and factory
keyword arguments that rebuild the network, the input size it is deployed at, the evaluation
transform spec (for :func:`kdfiqa.data.build_transform`), the input normalisation and the output
kind. Training sets the size and transform it was validated with; checkpoints store the config
(``ckpt["model"]["deploy"]``), and ``evaluate``, ``predict``, ``export``, ``budget`` and
:class:`~kdfiqa.distill.Teacher` read it back, whichever path wrote the checkpoint.

The config holds plain values only (it round-trips through :meth:`DeployConfig.to_dict` /
:meth:`DeployConfig.from_dict`, which checkpoints and YAML use).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from ..errors import ConfigError

__all__ = ["OUTPUT_KINDS", "NORMALIZATIONS", "DeployConfig", "deploy_config", "set_deploy_config"]

OUTPUT_KINDS = ("sigmoid", "linear")
"""``sigmoid``: ``model(x)`` is a score in (0, 1) and ``forward_logits`` the value before it;
``linear``: ``model(x)`` is the regression output itself (equal to ``forward_logits``)."""

NORMALIZATIONS = ("imagenet", "symmetric", "none")
"""Input normalisations of :func:`kdfiqa.data.build_transform`."""

ATTRIBUTE = "deploy_config"
"""Where a model keeps its config."""


def _frozen(value: Any) -> Any:
    """A hashable, immutable copy of nested plain values (dicts become sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _size3(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (3, value, value)
    value = tuple(value) if isinstance(value, (list, tuple)) else value
    if isinstance(value, tuple) and len(value) == 2:
        value = (3, *value)
    if not (isinstance(value, tuple) and len(value) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)):
        raise ConfigError(f"{where}: input_size {value!r} is not (channels, height, width) of positive ints")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class DeployConfig:
    """How to rebuild a model and feed it images at deployment (see the module docstring).

    ``kwargs`` and ``eval_transform`` are read-only mappings; :meth:`to_dict` gives plain dicts.
    """

    name: str | None
    """Registry name (``create_model(name, **kwargs)`` rebuilds the network); ``None`` for a model
    built by hand."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Factory keyword arguments, without ``pretrained`` (the weights come from the checkpoint)."""
    input_size: tuple[int, int, int] = (3, 224, 224)
    """(C, H, W) the model is deployed at: budget checks and export use it."""
    eval_transform: Mapping[str, Any] = field(default_factory=dict)
    """Spec for :func:`kdfiqa.data.build_transform` that turns an image into the model's input."""
    normalize: str = "imagenet"
    """Input normalisation, one of :data:`NORMALIZATIONS` (also the ``normalize`` of ``eval_transform``)."""
    output: str = "sigmoid"
    """Output kind, one of :data:`OUTPUT_KINDS`."""

    def __post_init__(self) -> None:
        where = f"deploy config of {self.name or 'model'}"
        object.__setattr__(self, "input_size", _size3(self.input_size, where))
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"{where}: normalize {self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"{where}: output {self.output!r} is not one of {', '.join(OUTPUT_KINDS)}")
        if not isinstance(self.kwargs, Mapping) or not isinstance(self.eval_transform, Mapping):
            raise ConfigError(f"{where}: kwargs and eval_transform must be mappings")
        transform = dict(self.eval_transform) or {"mode": "resize", "size": list(self.input_size[1:])}
        transform.setdefault("normalize", self.normalize)
        if transform["normalize"] != self.normalize:
            raise ConfigError(f"{where}: eval_transform normalize {transform['normalize']!r} differs from "
                              f"normalize {self.normalize!r}")
        object.__setattr__(self, "kwargs", _ReadOnly(self.kwargs))
        object.__setattr__(self, "eval_transform", _ReadOnly(transform))

    def replace(self, **changes: Any) -> "DeployConfig":
        """A copy with ``changes`` (a new ``input_size`` without a new ``eval_transform`` resizes to it)."""
        if "input_size" in changes and "eval_transform" not in changes:
            size = _size3(changes["input_size"], f"deploy config of {self.name or 'model'}")
            spec = dict(self.eval_transform)
            if spec.get("mode") != "native":
                spec["size"] = list(size[1:])
                spec.pop("crop", None)
            changes["eval_transform"] = spec
        if "normalize" in changes and "eval_transform" not in changes:
            changes["eval_transform"] = {**self.eval_transform, "normalize": changes["normalize"]}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (JSON/YAML/``torch.save(weights_only)`` safe)."""
        return {
            "name": self.name,
            "kwargs": _plain(self.kwargs),
            "input_size": list(self.input_size),
            "eval_transform": _plain(self.eval_transform),
            "normalize": self.normalize,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "deploy config") -> "DeployConfig":
        """Rebuild a config from :meth:`to_dict` output; a bad or unknown field is one
        :class:`~kdfiqa.errors.ConfigError` naming ``source``."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: the deploy config must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, values)) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown deploy field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**dict(values))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: malformed deploy config ({exc})") from None

    def __hash__(self) -> int:
        return hash((self.name, _frozen(self.kwargs), self.input_size, _frozen(self.eval_transform),
                     self.normalize, self.output))


class _ReadOnly(Mapping):
    """A read-only view of a copied mapping, so a frozen config cannot be changed through it."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = {str(k): _plain(v) for k, v in values.items()}

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._values[key])

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and _plain(self) == _plain(other)

    def __repr__(self) -> str:
        return repr(self._values)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _output_kind(model: nn.Module) -> str:
    head = getattr(model, "head", None)
    activation = getattr(head, "out_activation", "sigmoid")
    return "linear" if activation is None else "sigmoid"


def deploy_config(model: nn.Module) -> DeployConfig:
    """``model``'s :class:`DeployConfig`: the one it carries, else one derived from what it exposes
    (``model_name``, ``model_kwargs``, ``default_input_size``, its head's output activation)."""
    found = getattr(model, ATTRIBUTE, None)
    if isinstance(found, DeployConfig):
        return found
    size = getattr(model, "default_input_size", None) or (3, 224, 224)
    return DeployConfig(
        name=getattr(model, "model_name", None),
        kwargs=dict(getattr(model, "model_kwargs", None) or {}),
        input_size=tuple(size),
        output=_output_kind(model),
    )


def set_deploy_config(model: nn.Module, config: DeployConfig) -> nn.Module:
    """Attach ``config`` to ``model`` (returned, for chaining). ``nn.Module`` attributes that are not
    modules, parameters or buffers are plain attributes, so the config never enters the state dict."""
    if not isinstance(config, DeployConfig):
        raise TypeError(f"expected a DeployConfig, got {type(config).__name__}")
    object.__setattr__(model, ATTRIBUTE, config)
    return model
