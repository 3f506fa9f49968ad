"""Rebuilding the model a checkpoint or a model folder holds: the one place a stored model spec turns
into a network (:func:`build_model_spec`).

The stored spec (registry name, factory kwargs, deploy config) is replayed only within the model's
allow-list (:func:`kdfiqa.models.restorable_kwargs`), with ``pretrained`` off: the weights come from
the file, and nothing is downloaded or opened on the file's say-so. A file written before the deploy
config existed gets the rebuilt model's own, at its run configuration's size and evaluation transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ..checkpoint import PathLike, checkpoint_summary, fill_weights, load_checkpoint
from ..errors import CheckpointError, ConfigError, KdfiqaError
from .deploy import DeployConfig, deploy_config, set_deploy_config
from .registry import create_model, restorable_kwargs

__all__ = ["build_model_spec", "load_model", "stored_model_spec"]


def _replayed_kwargs(where: str, kwargs: Any, name: str) -> dict[str, Any]:
    """The stored factory kwargs, ``pretrained`` forced off, refused unless
    :func:`~kdfiqa.models.restorable_kwargs` allows every one."""
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"{where}: model kwargs must be a mapping with string keys, "
                              f"got {type(kwargs).__name__}")
    try:
        allowed = restorable_kwargs(name)
    except KdfiqaError as exc:
        raise CheckpointError(f"{where}, which cannot be built here: {exc}") from None
    refused = sorted(set(kwargs) - allowed - {"pretrained"})
    if refused:
        raise CheckpointError(
            f"{where}: refused to replay model argument(s) {', '.join(refused)}; a saved model may set "
            f"only {', '.join(sorted(allowed)) or 'none'} for {name!r}")
    if "pretrained" in kwargs:  # files of older releases: the weights come from the file
        kwargs = {**kwargs, "pretrained": False}
    return dict(kwargs)


def _stored_deploy(where: str, stored: Any, source: str, name: str,
                   kwargs: Mapping[str, Any]) -> DeployConfig | None:
    """The stored deploy config (``source`` names it) validated, or ``None`` for a file written
    before it existed."""
    if stored is None:
        return None
    try:
        config = DeployConfig.from_dict(stored, source=source)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if config.name != name or config.kwargs != {k: v for k, v in kwargs.items() if k != "pretrained"}:
        raise CheckpointError(f"{where}, but its deploy config ({source}) describes {config.name!r} "
                              f"{dict(config.kwargs)}; the file was altered, use another copy")
    return config


def build_model_spec(name: Any, kwargs: Any, deploy: Any, *, where: str,
                     deploy_source: str) -> tuple[nn.Module, DeployConfig | None]:
    """The one path from a stored model spec to a network, shared by checkpoints and model folders
    (:mod:`kdfiqa.models.model_folder`): the registry ``name`` built with the stored ``kwargs`` that
    :func:`~kdfiqa.models.restorable_kwargs` allows (``pretrained`` off; any other is refused with
    one line, before anything is built), and the stored ``deploy`` config (named ``deploy_source``
    in messages) checked to describe the same model. Returns the untrained network and the
    validated deploy config (``None`` when none was stored). ``where`` says what holds the spec
    ("FILE holds model 'x' ..."); every failure is one :class:`~kdfiqa.errors.CheckpointError` line.
    """
    if not isinstance(name, str):
        raise CheckpointError(f"{where}: model name must be a string, got {type(name).__name__}")
    kwargs = _replayed_kwargs(where, kwargs, name)
    config = _stored_deploy(where, deploy, deploy_source, name, kwargs)
    try:
        model = create_model(name, **kwargs)
    except KdfiqaError as exc:  # out of bounds, or refused by the factory (create_model says which)
        raise CheckpointError(f"{where}, which cannot be built here: {exc}") from None
    return model, config


def _legacy_deploy(path: Path, ckpt: Mapping[str, Any], model: nn.Module) -> DeployConfig:
    """For a file without ``model.deploy``: ``model``'s own config at the run configuration's
    ``model.input`` size and with its ``data.eval_transform``, where the file has them."""
    config = ckpt.get("config")

    def section(key: str) -> Mapping[str, Any]:
        value = config.get(key) if isinstance(config, Mapping) else None
        return value if isinstance(value, Mapping) else {}

    changes: dict[str, Any] = {}
    spec = section("data").get("eval_transform")
    if spec is not None:
        changes["eval_transform"] = {"preset": spec} if isinstance(spec, str) else spec
    size = section("model").get("input") or (spec.get("size") if isinstance(spec, Mapping) else None)
    if size is not None:
        changes["input_size"] = size
    try:
        return deploy_config(model).replace(**changes)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: config.model.input / config.data.eval_transform: {exc}") from None


def stored_model_spec(path: PathLike) -> tuple[str, dict[str, Any]]:
    """The registry name and the allow-listed factory kwargs of the model the checkpoint at ``path``
    holds (as :func:`load_model` replays them; any other stored kwarg is refused with one line): what
    retraining a checkpoint's model (self-training) builds, rather than its stored run config's raw
    ``model.kwargs``."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    name = _stored_name(path, ckpt)
    return name, _replayed_kwargs(checkpoint_summary(path, ckpt), ckpt["model"].get("kwargs"), name)


def _stored_name(path: Path, ckpt: Mapping[str, Any]) -> str:
    name = ckpt["model"].get("name")
    if not name:
        raise CheckpointError(
            f"{path} holds weights of a model built outside the registry (no model name); build "
            "the model yourself and use kdfiqa.checkpoint.load_weights(model, path)"
        )
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: model name must be a string, got {type(name).__name__}")
    return name


def load_model(
    path: PathLike,
    *,
    expected_name: str | None = None,
    weights: Literal["auto", "model", "ema"] = "auto",
) -> nn.Module:
    """Rebuild the model a checkpoint holds through the registry, load its weights, set eval mode.

    ``expected_name`` (optional) refuses a checkpoint made for another model. The stored kwargs are
    replayed only when :func:`kdfiqa.models.restorable_kwargs` allows each of them, with
    ``pretrained=False``: the weights come from the file, nothing is downloaded or opened. The
    model gets the file's deploy config back (see the module docstring for older files).
    ``weights`` is as in :func:`load_weights`. Every failure, a constructor rejecting the stored
    values included, is one :class:`~kdfiqa.errors.CheckpointError` line.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    name = _stored_name(path, ckpt)
    if expected_name is not None and name != expected_name:
        raise CheckpointError(f"{checkpoint_summary(path, ckpt)}, not {expected_name!r}")
    model, deploy = build_model_spec(name, ckpt["model"].get("kwargs"), ckpt["model"].get("deploy"),
                                     where=checkpoint_summary(path, ckpt), deploy_source=f"{path}: model.deploy")
    fill_weights(model, path, ckpt, weights)
    set_deploy_config(model, deploy or _legacy_deploy(path, ckpt, model))
    return model.eval()
