"""The deployment config every kdfiqa model carries: how to rebuild it and how to feed it.

As timm attaches a ``pretrained_cfg`` to each model it builds, :func:`kdfiqa.models.create_model`
attaches a frozen :class:`DeployConfig` (``model.deploy_config``): the registry name and factory
keyword arguments that rebuild the network, the input size it is deployed at, the evaluation
transform spec (for :func:`kdfiqa.data.build_transform`), the input normalisation and the output
kind. Training sets the size and transform it was validated with::

    set_deploy_config(model, deploy_config(model).replace(input_size=(3, 64, 64),
                                                          eval_transform=val_views.spec))

:func:`kdfiqa.checkpoint.build_checkpoint` stores the config (``ckpt["model"]["deploy"]``),
:func:`kdfiqa.models.load_model` puts it back on the rebuilt model, and ``evaluate``,
``predict``, ``export``, ``budget`` and :class:`~kdfiqa.distill.Teacher` read it from there,
whichever path wrote the checkpoint.

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

__all__ = [
    "OUTPUT_KINDS",
    "NORMALIZATIONS",
    "DeployConfig",
    "attached_deploy_config",
    "deploy_config",
    "output_kind",
    "set_deploy_config",
]

OUTPUT_KINDS = ("sigmoid", "linear")
"""``sigmoid``: ``model(x)`` is a score in (0, 1) and ``forward_logits`` the value before it;
``linear``: ``model(x)`` is the regression output itself (equal to ``forward_logits``)."""

NORMALIZATIONS = ("imagenet", "symmetric", "none")
"""Input normalisations of :func:`kdfiqa.data.build_transform`."""

ATTRIBUTE = "deploy_config"
"""Where a model keeps its config."""

EVAL_ONLY_DROPPED = ("teacher_size", "teacher_normalize", "flip")
"""Transform keys of a training spec that an evaluation transform leaves out (the teacher's view,
random flips)."""


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


def _scaled_resize(resize: Any, old: list[int], new: list[int]) -> Any:
    """``resize`` (a short side, or [height, width]) scaled by the change of the crop from ``old`` to
    ``new`` ([height, width]): an int by the height ratio, a pair per side."""
    if isinstance(resize, int):
        return max(new[0], round(resize * new[0] / old[0]))
    return [max(n, round(r * n / o)) for r, n, o in zip(resize, new, old)]


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
    """Spec for :func:`kdfiqa.data.build_transform` that turns an image into the model's input;
    stored completed (preset expanded, ``size`` and ``normalize`` filled in, a training spec's
    ``teacher_size``, ``teacher_normalize`` and ``flip`` left out). Empty: resize to ``input_size``."""
    normalize: str = "imagenet"
    """Input normalisation, one of :data:`NORMALIZATIONS` (also the ``normalize`` of ``eval_transform``)."""
    output: str = "sigmoid"
    """Output kind, one of :data:`OUTPUT_KINDS`."""

    def __post_init__(self) -> None:
        where = f"deploy config of {self.name or 'model'}"
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"{where}: name {self.name!r} is not a string")
        object.__setattr__(self, "input_size", _size3(self.input_size, where))
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"{where}: normalize {self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"{where}: output {self.output!r} is not one of {', '.join(OUTPUT_KINDS)}")
        for name in ("kwargs", "eval_transform"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{where}: {name} must be a mapping with string keys, got {type(value).__name__}")
        transform = _eval_spec(self.eval_transform, self.input_size, self.normalize, where)
        object.__setattr__(self, "kwargs", _ReadOnly(self.kwargs))
        object.__setattr__(self, "eval_transform", _ReadOnly(transform))

    def replace(self, **changes: Any) -> "DeployConfig":
        """A copy with ``changes``. A new ``input_size`` without a new ``eval_transform`` resizes the
        transform to it (a resize before a crop, e.g. Resize(256) + CenterCrop(224), in proportion:
        Resize(512) + CenterCrop(448)); a new ``eval_transform`` that names its normalisation (itself or through its
        preset) without a new ``normalize`` sets it."""
        where = f"deploy config of {self.name or 'model'}"
        if "eval_transform" not in changes and ("input_size" in changes or "normalize" in changes):
            spec = dict(self.eval_transform)
            if "input_size" in changes and spec.get("mode") != "native":
                new_size = list(_size3(changes["input_size"], where)[1:])
                if spec.get("resize") is not None:  # Resize(r) + crop keeps its margin: r scales with the crop
                    spec["resize"] = _scaled_resize(spec["resize"], list(self.input_size[1:]), new_size)
                spec["size"] = new_size
                spec.pop("crop", None)
            if "normalize" in changes:
                spec["normalize"] = changes["normalize"]
            changes["eval_transform"] = spec
        elif "normalize" not in changes and isinstance(changes.get("eval_transform"), Mapping):
            named = _expanded(changes["eval_transform"], where).get("normalize")
            if named is not None:
                changes["normalize"] = named
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (JSON/YAML/``torch.save(weights_only)`` safe)."""
        return {
            "name": self.name,
            "kwargs": plain_values(self.kwargs),
            "input_size": list(self.input_size),
            "eval_transform": plain_values(self.eval_transform),
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


def _expanded(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of a transform spec with its preset's fields filled in (the spec's own keys win)."""
    from ..data.transforms import build_transform

    spec = dict(spec)
    if "preset" in spec:
        try:
            preset = build_transform({"preset": spec.pop("preset")}).spec
        except ConfigError as exc:
            raise ConfigError(f"{where}: eval_transform: {exc}") from None
        spec = {**preset, **spec}
    return spec


def _eval_spec(spec: Mapping[str, Any], input_size: tuple[int, int, int], normalize: str,
               where: str) -> dict[str, Any]:
    """``spec`` completed and checked: presets expanded, the size (unless native) and normalisation
    filled in from the config, validated by :func:`kdfiqa.data.build_transform`, the keys of
    :data:`EVAL_ONLY_DROPPED` left out. An empty spec resizes to ``input_size``."""
    from ..data.transforms import build_transform

    spec = _expanded(spec, where) or {"mode": "resize"}
    spec.setdefault("normalize", normalize)
    if spec.get("mode") != "native":
        spec.setdefault("size", list(input_size[1:]))
    try:
        resolved = build_transform(spec).spec
    except ConfigError as exc:
        raise ConfigError(f"{where}: eval_transform: {exc}") from None
    if resolved["normalize"] != normalize:
        raise ConfigError(f"{where}: eval_transform normalize {resolved['normalize']!r} differs from "
                          f"normalize {normalize!r}")
    return {k: v for k, v in resolved.items() if k not in EVAL_ONLY_DROPPED}


class _ReadOnly(Mapping):
    """A read-only view of a copied mapping, so a frozen config cannot be changed through it."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = {str(k): plain_values(v) for k, v in values.items()}

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._values[key])

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and plain_values(self) == plain_values(other)

    def __repr__(self) -> str:
        return repr(self._values)


def plain_values(value: Any) -> Any:
    """``value`` with every mapping a ``dict`` of string keys and every sequence a ``list``: what
    JSON, YAML and ``torch.load(weights_only=True)`` round-trip and compare equal."""
    if isinstance(value, Mapping):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(v) for v in value]
    return value


def output_kind(model: nn.Module) -> str:
    """``"linear"`` when the model's head has no output activation (``out_activation=None``), else
    ``"sigmoid"``."""
    head = getattr(model, "head", None)
    activation = getattr(head, "out_activation", "sigmoid")
    return "linear" if activation is None else "sigmoid"


def attached_deploy_config(model: nn.Module) -> DeployConfig | None:
    """The config ``model`` carries (attached by :func:`kdfiqa.models.create_model`,
    :func:`set_deploy_config` or :func:`kdfiqa.models.load_model`), else ``None``."""
    found = getattr(model, ATTRIBUTE, None)
    return found if isinstance(found, DeployConfig) else None


def deploy_config(model: nn.Module) -> DeployConfig:
    """``model``'s :class:`DeployConfig`: the one it carries, else one derived from what it exposes
    (``model_name``, ``model_kwargs``, ``default_input_size`` (default 224x224), its head's output
    activation)."""
    found = attached_deploy_config(model)
    if found is not None:
        return found
    size = getattr(model, "default_input_size", None) or (3, 224, 224)
    return DeployConfig(
        name=getattr(model, "model_name", None),
        kwargs=dict(getattr(model, "model_kwargs", None) or {}),
        input_size=tuple(size),
        output=output_kind(model),
    )


def set_deploy_config(model: nn.Module, config: DeployConfig) -> nn.Module:
    """Attach ``config`` to ``model`` (returned, for chaining).

    ``model.model_name`` and ``model.model_kwargs`` are set to the config's ``name`` and ``kwargs``
    too, for code that reads them. ``nn.Module`` attributes that are not modules, parameters or
    buffers are plain attributes, so none of this enters the state dict.
    """
    if not isinstance(config, DeployConfig):
        raise TypeError(f"expected a DeployConfig, got {type(config).__name__}")
    object.__setattr__(model, ATTRIBUTE, config)
    object.__setattr__(model, "model_name", config.name)
    object.__setattr__(model, "model_kwargs", dict(config.kwargs))
    return model
