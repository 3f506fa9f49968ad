"""The deployment config every kdfiqa model carries: how to rebuild it and how to feed it.

As timm attaches a ``pretrained_cfg`` to each model it builds, :func:`kdfiqa.models.create_model`
attaches a frozen :class:`DeployConfig` (``model.deploy_config``): the registry name and factory
keyword arguments that rebuild the network, the evaluation transform spec (for
:func:`kdfiqa.data.build_transform`; the input size the model is deployed at and its input
normalisation are read from it) and the output kind. Training sets the transform it was validated
with::

    set_deploy_config(model, deploy_config(model).replace(eval_transform=val_views.spec))

:func:`kdfiqa.checkpoint.build_checkpoint` stores the config (``ckpt["model"]["deploy"]``),
:func:`kdfiqa.models.load_model` puts it back on the rebuilt model, and ``evaluate``,
``predict``, ``export``, ``budget`` and :class:`~kdfiqa.distill.Teacher` read it from there,
whichever path wrote the checkpoint.

The config holds plain values and a transform spec only (it round-trips through :meth:`DeployConfig.to_dict` /
:meth:`DeployConfig.from_dict`, which checkpoints and YAML use).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from ..data.transform_spec import TransformLike, TransformSpec, check_normalize
from ..errors import ConfigError
from ..size import Size, SizeLike

__all__ = [
    "OUTPUT_KINDS",
    "DeployConfig",
    "attached_deploy_config",
    "deploy_config",
    "output_kind",
    "set_deploy_config",
]

OUTPUT_KINDS = ("sigmoid", "linear")
"""``sigmoid``: ``model(x)`` is a score in (0, 1) and ``forward_logits`` the value before it;
``linear``: ``model(x)`` is the regression output itself (equal to ``forward_logits``)."""

ATTRIBUTE = "deploy_config"
"""Where a model keeps its config."""

DEFAULT_SIZE = Size(224, 224)
"""The deployment size of a config that names none."""

FIELDS = ("name", "kwargs", "input_size", "eval_transform", "normalize", "output")
"""The keys of :meth:`DeployConfig.to_dict` (and of the files earlier versions wrote)."""


def _frozen(value: Any) -> Any:
    """A hashable, immutable copy of nested plain values (dicts become sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True, init=False)
class DeployConfig:
    """How to rebuild a model and feed it images at deployment (see the module docstring).

    The evaluation transform is the one place the input size and normalisation live:
    :attr:`input_size` is its view's size and :attr:`normalize` its normalisation. The constructor's
    ``input_size`` and ``normalize`` fill what the transform leaves out (its own values win), and
    ``input_size`` is the deployment size of a ``native`` transform, which has none of its own.
    ``kwargs`` is a read-only mapping; :meth:`to_dict` gives plain values.
    """

    name: str | None
    """Registry name (``create_model(name, **kwargs)`` rebuilds the network); ``None`` for a model
    built by hand."""
    kwargs: Mapping[str, Any]
    """Factory keyword arguments, without ``pretrained`` (the weights come from the checkpoint)."""
    eval_transform: TransformSpec
    """The transform (a :class:`~kdfiqa.data.transform_spec.TransformSpec`, also a read-only mapping
    for :func:`kdfiqa.data.build_transform`) that turns an image into the model's input: completed
    (preset expanded, ``size`` and ``normalize`` filled in) and without a training spec's
    ``teacher_size``, ``teacher_normalize`` and ``flip``."""
    output: str
    """Output kind, one of :data:`OUTPUT_KINDS`."""
    native_size: Size | None
    """The size a ``native`` transform is deployed at (budget checks, export); ``None`` otherwise."""

    def __init__(self, name: str | None, kwargs: Mapping[str, Any] | None = None,
                 input_size: SizeLike | None = None, eval_transform: TransformLike | None = None,
                 normalize: str | None = None, output: str = "sigmoid") -> None:
        where = f"deploy config of {name or 'model'}"
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: name {name!r} is not a string")
        if output not in OUTPUT_KINDS:
            raise ConfigError(f"{where}: output {output!r} is not one of {', '.join(OUTPUT_KINDS)}")
        kwargs = {} if kwargs is None else kwargs
        for key, value in (("kwargs", kwargs), ("eval_transform", eval_transform or {})):
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{where}: {key} must be a mapping with string keys, got {type(value).__name__}")
        size = DEFAULT_SIZE if input_size is None else Size.parse(input_size, f"{where}: input_size", rgb=True)
        if normalize is not None:
            check_normalize(normalize, f"{where}: normalize")
        try:
            spec = TransformSpec.parse(eval_transform or {"mode": "resize"}).for_evaluation().completed(size, normalize)
        except ConfigError as exc:
            raise ConfigError(f"{where}: eval_transform: {exc}") from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kwargs", _ReadOnly(kwargs))
        object.__setattr__(self, "eval_transform", spec)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "native_size", size if spec.mode == "native" else None)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model is deployed at, its evaluation view's: budget checks and export use it."""
        return (self.eval_transform.size or self.native_size or DEFAULT_SIZE).chw

    @property
    def normalize(self) -> str:
        """The input normalisation, the evaluation transform's (a
        :data:`~kdfiqa.data.transform_spec.NORMALIZATIONS` name)."""
        return self.eval_transform.normalize or "imagenet"

    def replace(self, **changes: Any) -> "DeployConfig":
        """A copy with ``changes`` (of :data:`FIELDS`).

        Without a new ``eval_transform``, a new ``input_size`` moves the transform to it by
        :meth:`TransformSpec.rescaled <kdfiqa.data.transform_spec.TransformSpec.rescaled>` (the rule
        a config's ``--input`` follows too: Resize(256) + CenterCrop(224) becomes Resize(512) +
        CenterCrop(448) at 448), and a new ``normalize`` sets the transform's. A new
        ``eval_transform`` brings the size and normalisation it names; the given (else the current)
        ones fill what it leaves out.
        """
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise TypeError(f"DeployConfig.replace got unknown field(s) {', '.join(unknown)}")
        where = f"deploy config of {self.name or 'model'}"
        spec: TransformLike = changes.get("eval_transform", self.eval_transform)
        size: SizeLike = changes.get("input_size", self.input_size)
        normalize = changes.get("normalize")
        if "eval_transform" not in changes:
            if "input_size" in changes and self.eval_transform.mode != "native":
                new = Size.parse(size, f"{where}: input_size", rgb=True)
                spec = self.eval_transform.rescaled(Size.parse(self.input_size), new)
            if normalize is not None:
                spec = dataclasses.replace(spec, normalize=check_normalize(normalize, f"{where}: normalize"))
        return DeployConfig(changes.get("name", self.name), changes.get("kwargs", self.kwargs), size, spec,
                            normalize or self.normalize, changes.get("output", self.output))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (JSON/YAML/``torch.save(weights_only)`` safe). ``input_size`` and
        ``normalize`` are written beside the transform they are read from, as earlier versions wrote
        them, so those read the file too."""
        return {
            "name": self.name,
            "kwargs": plain_values(self.kwargs),
            "input_size": list(self.input_size),
            "eval_transform": self.eval_transform.to_dict(),
            "normalize": self.normalize,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "deploy config") -> "DeployConfig":
        """Rebuild a config from :meth:`to_dict` output, of this version or an earlier one (whose
        stored ``input_size`` and ``normalize`` fill what its transform leaves out, the transform's
        own winning); a bad or unknown field is one :class:`~kdfiqa.errors.ConfigError` naming
        ``source``."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: the deploy config must be a mapping, got {type(values).__name__}")
        unknown = sorted(set(map(str, values)) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown deploy field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
        if "name" not in values:
            raise ConfigError(f"{source}: malformed deploy config (no name)")
        try:
            return cls(**dict(values))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def __hash__(self) -> int:
        return hash((self.name, _frozen(self.kwargs), self.eval_transform, self.output, self.native_size))


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
