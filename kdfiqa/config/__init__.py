"""Run configuration: typed sections filled from a recipe, a YAML file, flags and ``--set`` overrides.

* :mod:`~kdfiqa.config.schema`: the sections of a :class:`RunConfig` (``model``, ``data``, ``train``,
  ``loss``, ``distill``, ``ssar``), each option declared once with its rules, and
  :func:`resolve_config`, which overlays layers of settings on the defaults;
* :mod:`~kdfiqa.config.loader`: where layers come from (recipes, ``--config`` files, flags, ``--set``).

Importing it costs no torch.
"""

from __future__ import annotations

from .loader import (build_layers, list_recipes, load_config_file, load_recipe, load_stored_config, overrides_layer,
                     parse_override, recipe_path)
from .schema import (
    CALIBRATION_SETS,
    COMMANDS,
    HEAD_STARTS,
    PSEUDO_SETS,
    SECTIONS,
    SPLIT_METHODS,
    ConfigLayer,
    DataSection,
    DistillSection,
    LossSection,
    ModelSection,
    RunConfig,
    SSARSection,
    resolve_config,
)

__all__ = ["COMMANDS", "ModelSection", "DataSection", "LossSection", "DistillSection", "SSARSection", "RunConfig",
           "ConfigLayer", "SECTIONS", "SPLIT_METHODS", "CALIBRATION_SETS", "HEAD_STARTS", "PSEUDO_SETS",
           "resolve_config", "load_config_file", "parse_override", "overrides_layer", "list_recipes", "recipe_path",
           "load_recipe", "load_stored_config", "build_layers"]
