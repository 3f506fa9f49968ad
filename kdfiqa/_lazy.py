"""Public names imported on first use (PEP 562): a package's ``__getattr__`` and ``__dir__``.

``kdfiqa`` and ``kdfiqa.engine`` list where each public name lives; importing the package costs
nothing, and ``from kdfiqa import Trainer`` imports what ``Trainer`` needs then. This keeps
``kdfiqa --help`` free of torch, timm, fvcore and scipy.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Mapping, MutableMapping, Sequence

__all__ = ["lazy_exports"]


def lazy_exports(package: str, namespace: MutableMapping[str, Any], exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, names)`` for ``package`` whose module globals are ``namespace``.

    ``exports`` maps a relative sub-module (``".budget"``) to the public names it defines. An
    attribute is looked up there on first access (or, for any other public name, imported as a
    sub-module) and kept in ``namespace``; ``names`` is the sorted list of public names.
    """
    module_of = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> Any:
        if name in module_of:
            value = getattr(importlib.import_module(module_of[name], package), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return getattr_, dir_, sorted(module_of)
