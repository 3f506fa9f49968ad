"""Model folders: a trained model as a person and the Hugging Face Hub read it (the layout timm's
``push_to_hf_hub`` writes).

A model folder holds three files::

    model.safetensors   the weights (safetensors: tensors only, no pickle)
    config.json         how to rebuild and feed the model, and what it costs
    README.md           the model card (:mod:`kdfiqa.models.model_card`)

``config.json`` is a JSON object with the fields

``format``          :data:`FORMAT`, the tag this module reads.
``kdfiqa_version``  the kdfiqa release that wrote the folder.
``architecture``    the registered model name (as timm's ``architecture``), equal to ``deploy.name``.
``deploy``          the :class:`~kdfiqa.models.deploy.DeployConfig` as ``to_dict()``: registered name,
                    factory kwargs, input size, evaluation transform, normalisation, output kind.
``cost``            FLOPs (fvcore convention) and parameters at each deployment size:
                    ``[{"input_size", "flops", "gflops", "params"}]``.
``budget``          the budget verdict at those sizes, ``{"name", "max_gflops", "max_params", "fits"}``,
                    or ``null`` when the folder was written without a budget.
``metrics``         ``{"validation": {...}, "test": {...}}`` where known (either may be missing).
``license``         the licence identifier of the weights (the card's ``license`` too).

:func:`write_model_folder` writes one from a model or a kdfiqa checkpoint, each file atomically
(:mod:`kdfiqa.atomic_write`). :func:`load_model_folder` reads it back safely: the weights through
safetensors, ``config.json`` checked field by field and the network rebuilt through the same
allow-listed path as a checkpoint (:func:`kdfiqa.models.rebuild.build_model_spec`). Upload a folder
as it is with ``huggingface_hub.upload_folder``; ``hf-hub:ORG/NAME`` targets download one
(:func:`download_model_folder`) and load it the same way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from torch import nn

from .. import __version__
from ..atomic_write import atomic_path, write_atomic
from ..budget.core import measure
from ..budget.limits import Budget
from ..budget.presets import DEFAULT_BUDGET, NO_BUDGET, as_budget
from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, ConfigError, first_line, named_first_line, spelled
from .deploy import DeployConfig, deploy_config, plain_values, set_deploy_config
from .model_card import model_card
from .rebuild import build_model_spec, load_model
from .registry import restorable_kwargs

__all__ = ["FORMAT", "WEIGHTS", "CONFIG", "CARD", "HUB_PREFIX", "ModelFolder", "is_model_folder",
           "write_model_folder", "read_model_folder", "load_model_folder", "load_folder_weights",
           "download_model_folder"]

FORMAT = "kdfiqa.model_folder.v1"
"""The format tag of ``config.json``."""
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
"""The files of a model folder."""
HUB_PREFIX = "hf-hub:"
"""Targets naming a Hub repository: ``hf-hub:ORG/NAME`` (``@REVISION`` optional)."""
MAX_CONFIG_BYTES = 1 << 20
"""The largest ``config.json`` read (a deploy config is a few hundred bytes)."""
FIELDS = ("format", "kdfiqa_version", "architecture", "deploy", "cost", "budget", "metrics", "license")
"""The fields of ``config.json``."""

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ModelFolder:
    """What a folder's ``config.json`` says, checked (see the module docstring)."""

    path: Path
    deploy: Mapping[str, Any]
    """The stored deploy config as plain values (validated when the model is rebuilt)."""
    cost: list[dict[str, Any]]
    budget: dict[str, Any] | None
    metrics: dict[str, Any]
    license: str
    kdfiqa_version: str


def is_model_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding ``config.json`` and ``model.safetensors``."""
    folder = Path(path)
    return folder.is_dir() and (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


# ----------------------------------------------------------------------------------------- writing


def _source_model(source: nn.Module | PathLike, weights: str) -> tuple[nn.Module, Mapping[str, Any]]:
    """The model to write and the checkpoint it came from (``{}`` for a model given as it is)."""
    if isinstance(source, nn.Module):
        return source, {}
    path = Path(source)
    if is_model_folder(path):
        raise ConfigError(f"{path}: is a model folder already; copy it, or give the checkpoint it was written from")
    return load_model(path, weights=weights), load_checkpoint(path)  # type: ignore[arg-type]


def _checked_spec(model: nn.Module) -> DeployConfig:
    """``model``'s deploy config, refused unless a folder of it can be rebuilt."""
    config = deploy_config(model)
    if config.name is None:
        raise ConfigError(f"a {type(model).__name__} built outside the registry has no registered name to rebuild it "
                          "from; a model folder needs a model made by kdfiqa.create_model (or a kdfiqa checkpoint)")
    refused = sorted(set(config.kwargs) - restorable_kwargs(config.name))
    if refused:
        raise ConfigError(f"model {config.name!r}: its argument(s) {', '.join(refused)} cannot be replayed from a "
                          f"saved model; build it without them to write a model folder")
    return config


def _costs(model: nn.Module, config: DeployConfig, budget: Budget | None) -> tuple[list[dict[str, Any]],
                                                                                  dict[str, Any] | None]:
    """FLOPs and parameters at the deployment size(s) (the budget's, or the model's own where that
    is larger, :meth:`~kdfiqa.budget.Budget.sizes_for`), and the budget verdict there."""
    sizes = budget.sizes_for(config.input_size) if budget is not None else [config.input_size]
    reports = [measure(model, size) for size in sizes]
    verdict = None if budget is None else {
        "name": budget.name, "max_gflops": budget.max_gflops, "max_params": budget.max_params,
        "fits": all(budget.fits(report) for report in reports)}
    return [report.as_dict() for report in reports], verdict


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (a metric of a collapsed model) as ``None``: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_model_folder(
    model_or_checkpoint: nn.Module | PathLike,
    out_dir: PathLike,
    *,
    budget: Budget | str | None = DEFAULT_BUDGET,
    weights: Literal["auto", "model", "ema"] = "auto",
    test_metrics: Mapping[str, float] | None = None,
    license: str = "apache-2.0",
    data_note: str | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model folder (see the module docstring) to ``out_dir`` and return it.

    ``model_or_checkpoint`` is a model made by :func:`kdfiqa.models.create_model` (or rebuilt from a
    checkpoint), or the path of a kdfiqa checkpoint, whose ``weights`` (as in
    :func:`~kdfiqa.checkpoint.load_weights`: the EMA weights where it has them), run configuration
    (teacher, recipe, data) and validation metrics go into the folder and its card. ``budget`` (a
    :class:`~kdfiqa.budget.Budget`, a registered name, or ``None``) is checked at the deployment
    size; the verdict is recorded, not enforced. ``test_metrics`` (optional) are the card's test
    results, ``license`` its licence identifier, ``data_note`` what it says about the training data,
    ``title`` its heading (default: the folder's name). Without ``overwrite`` a folder that holds any
    of the three files is refused; each file is written atomically.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; give a folder for the model folder")
    taken = [name for name in (WEIGHTS, CONFIG, CARD) if (out / name).exists()]
    if taken and not overwrite:
        raise ConfigError(f"{out}: already holds {', '.join(taken)}; pass {spelled('--overwrite', 'overwrite=True')} "
                          "or choose another folder")
    model, ckpt = _source_model(model_or_checkpoint, weights)
    config = _checked_spec(model)
    chosen = None if budget is None or budget == NO_BUDGET.name else as_budget(budget)
    cost, verdict = _costs(model, config, chosen)
    metrics = {key: _finite(plain_values(dict(value))) for key, value in
               (("validation", ckpt.get("metrics")), ("test", test_metrics)) if value}
    values = {"format": FORMAT, "kdfiqa_version": __version__, "architecture": config.name,
              "deploy": config.to_dict(), "cost": cost, "budget": _finite(verdict), "metrics": metrics,
              "license": license}
    text = json.dumps(values, indent=2, allow_nan=False) + "\n"
    card = model_card(values, ckpt.get("config") or {}, title=title or out.resolve().name, data_note=data_note)
    with atomic_path(out / WEIGHTS) as tmp:
        from safetensors.torch import save_model

        save_model(model, str(tmp), metadata={"format": "pt", "kdfiqa": FORMAT})
    write_atomic(out / CONFIG, text)
    write_atomic(out / CARD, card)
    return out


# ----------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: {size:,} bytes, more than a model folder's config.json holds "
                                  f"({MAX_CONFIG_BYTES:,}); the file is not one, use another copy")
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); use another copy") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({named_first_line(exc)})") from None


def _field(values: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: Path,
           default: Any = None) -> Any:
    """``values[key]``, refused unless it is a ``kind`` (or missing, then ``default``)."""
    value = values.get(key, default)
    if value is not default and not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CheckpointError(f"{where}: field {key!r} must be a {names}, got {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_cost(entries: list, where: Path) -> list[dict[str, Any]]:
    for i, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and set(entry) == {"input_size", "flops", "gflops", "params"}
              and all(_is_number(entry[k]) for k in ("flops", "gflops", "params")))
        if not ok:
            raise CheckpointError(f"{where}: cost[{i}] must be {{input_size, flops, gflops, params}} of numbers")
    return entries


def _checked_metrics(metrics: dict, where: Path) -> dict[str, Any]:
    for split, values in metrics.items():
        if split not in ("validation", "test") or not isinstance(values, dict):
            raise CheckpointError(f"{where}: metrics.{split}: expected 'validation' and 'test' mappings of numbers")
    return metrics


def read_model_folder(path: PathLike) -> ModelFolder:
    """Read and check a model folder's ``config.json`` (see the module docstring); every fault is
    one :class:`~kdfiqa.errors.CheckpointError` line naming the file and the field."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such model folder")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: not a model folder (no {' or '.join(missing)}); give a folder written by "
                              "kdfiqa (write_model_folder) or a checkpoint file")
    where = folder / CONFIG
    values = _read_json(where)
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: must be a JSON object, got {type(values).__name__}")
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {', '.join(unknown)}; a model folder's config.json "
                              f"holds {', '.join(FIELDS)}")
    if values.get("format") != FORMAT:
        raise CheckpointError(f"{where}: format {values.get('format')!r} (written by kdfiqa "
                              f"{values.get('kdfiqa_version', '?')}) is not {FORMAT!r}, the one kdfiqa {__version__} "
                              "reads; use the kdfiqa release that wrote it")
    deploy = _field(values, "deploy", dict, where)
    if deploy is None:
        raise CheckpointError(f"{where}: field 'deploy' is required (the model's name, kwargs and input)")
    architecture = _field(values, "architecture", str, where)
    if architecture is not None and architecture != deploy.get("name"):
        raise CheckpointError(f"{where}: architecture {architecture!r} differs from deploy.name "
                              f"{deploy.get('name')!r}; the file was altered, use another copy")
    budget = _field(values, "budget", dict, where)
    if budget is not None and not isinstance(budget.get("fits"), bool):
        raise CheckpointError(f"{where}: budget.fits must be true or false")
    return ModelFolder(
        path=folder, deploy=deploy, cost=_checked_cost(_field(values, "cost", list, where, []), where),
        budget=budget, metrics=_checked_metrics(_field(values, "metrics", dict, where, {}), where),
        license=_field(values, "license", str, where, ""),
        kdfiqa_version=_field(values, "kdfiqa_version", str, where, "?"))


def _fill(model: nn.Module, folder: Path, what: str) -> None:
    """Load ``folder``'s safetensors weights into ``model`` (strictly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_safetensors

    try:
        load_safetensors(model, folder / WEIGHTS, strict=True, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS}: unreadable or damaged safetensors file "
                              f"({named_first_line(exc)}); use another copy") from None
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{folder / WEIGHTS}: the weights do not fit {what} ({detail})") from None


def load_model_folder(path: PathLike) -> nn.Module:
    """The model a model folder holds, rebuilt through the registry (only allow-listed kwargs, no
    download), with its weights and deploy config, in eval mode."""
    spec = read_model_folder(path)
    where = f"{spec.path} holds model {spec.deploy.get('name')!r} (kdfiqa {spec.kdfiqa_version})"
    model, config = build_model_spec(spec.deploy.get("name"), spec.deploy.get("kwargs"), spec.deploy,
                                     where=where, deploy_source=f"{spec.path / CONFIG}: deploy")
    _fill(model, spec.path, f"model {config.name!r}")
    set_deploy_config(model, config)
    return model.eval()


def load_folder_weights(model: nn.Module, path: PathLike) -> ModelFolder:
    """Load a model folder's weights into ``model`` (strictly; a folder of another registered model
    is refused) and return its checked config. The model keeps its own deploy config."""
    spec = read_model_folder(path)
    held, name = spec.deploy.get("name"), deploy_config(model).name
    if name is not None and held != name:
        raise CheckpointError(f"{spec.path} holds model {held!r}, not {name!r}; pass a matching model")
    _fill(model, spec.path, f"model {name or type(model).__name__!r}")
    return spec


def download_model_folder(target: str) -> Path:
    """The local copy of the Hub repository a ``hf-hub:ORG/NAME[@REVISION]`` target names (only the
    three files of a model folder are fetched, through ``huggingface_hub.snapshot_download`` and its
    cache)."""
    repo, _, revision = target[len(HUB_PREFIX):].partition("@") if target.startswith(HUB_PREFIX) else (target, "", "")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"{target!r}: name a Hub repository as hf-hub:ORG/NAME (optionally @REVISION)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"{target}: Hub targets need huggingface_hub: pip install 'kdfiqa[hub]'") from None
    try:
        folder = snapshot_download(repo_id=repo, revision=revision or None, allow_patterns=[WEIGHTS, CONFIG, CARD])
    except Exception as exc:  # network, authentication and missing-repository errors of huggingface_hub
        raise ConfigError(f"{target}: cannot download {repo} ({type(exc).__name__}: {first_line(exc)}); check the "
                          "name and the network, or download the folder and give its path") from None
    return Path(folder)
