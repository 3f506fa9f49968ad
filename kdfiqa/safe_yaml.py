"""Bounded YAML: the one reader of run configs, recipes, ``--set`` values and model files.

A config is small, so anything large is a mistake or an attack: the text is capped at
:data:`MAX_YAML_BYTES`, the values (aliases expanded) at :data:`MAX_YAML_NODES`, and a key given twice
in one mapping is refused instead of silently keeping the last. Every fault is one
:class:`~kdfiqa.errors.ConfigError` naming the source and line.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_NODES", "safe_yaml", "key_lines"]


def key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Fill ``out`` with each dotted key under ``node`` (``"train.lr"``) and its 1-based line."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            key_lines(value_node, key + ".", out)


MAX_YAML_BYTES = 1 << 20
"""The largest config text read (1 MiB): a run config is a few hundred lines."""
MAX_YAML_NODES = 100_000
"""The most values a config may hold once its aliases are expanded (a "billion laughs" file of nested
aliases would otherwise expand exponentially)."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], source: str) -> int:
    """How many nodes ``node`` stands for with every alias expanded (memoised per node, so shared
    aliases cost nothing to count); a node that contains itself is refused."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to a value containing it")
    open_nodes.add(key)
    children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                else node.value if isinstance(node, yaml.SequenceNode) else [])
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes, source)
        if size > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES:,} values once its YAML aliases are expanded; "
                              "a run config holds a few hundred: write the values out")
    open_nodes.discard(key)
    sizes[key] = size
    return size


def _refuse_repeated_keys(node: yaml.Node, source: str) -> None:
    """A key given twice in one mapping is refused (YAML would keep the last silently)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ConfigError(f"{source}:{key.start_mark.line + 1}: key {key.value!r} is given twice "
                                          f"(first on line {seen[key.value]}); keep one")
                    seen[key.value] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def safe_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """``(values, node)`` of the YAML ``text``, bounded: at most :data:`MAX_YAML_BYTES` and
    :data:`MAX_YAML_NODES` values with aliases expanded; any fault is one :class:`ConfigError`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_YAML_BYTES >> 20} MiB; a run config is a few hundred lines")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _expanded_size(node, {}, set(), source)
            _refuse_repeated_keys(node, source)
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    return values, node
