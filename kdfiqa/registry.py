"""A name → value table with helpful errors: the one registry behind kdfiqa's models, losses and budgets.

::

    LOSSES = Registry("loss", plural="losses")

    @LOSSES.register                      # under the object's own __name__
    class Wing(nn.Module): ...

    LOSSES.register(MSELoss, name="mse")  # or under a name of your choice
    LOSSES.get("wingg")   # ConfigError: unknown loss 'wingg' (did you mean Wing?); known losses: Wing, mse
    LOSSES.list("w*")     # ["Wing"]

Names are unique (registering one twice is a ``ValueError``, a programming error); looking up an
unknown one is a one-line :class:`~kdfiqa.errors.ConfigError` (a user's error) with the closest names
(:mod:`difflib`). The module imports nothing heavy, so command-line parsers can list names cheaply.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar, overload

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to values (factories, classes, budgets ...) of one ``kind``.

    Args:
        kind: what the names name, for messages (``"model"``, ``"loss"``, ``"budget"``).
        plural: its plural (default ``kind + "s"``).
        listing: what an unknown-name error says after the hints, instead of listing every name
            (e.g. "`kdfiqa models` lists them").
    """

    def __init__(self, kind: str, *, plural: str | None = None, listing: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.listing = listing
        self._entries: dict[str, T] = {}

    @overload
    def register(self, value: T, *, name: str | None = None) -> T: ...

    @overload
    def register(self, value: None = None, *, name: str | None = None) -> Callable[[T], T]: ...

    def register(self, value: T | None = None, *, name: str | None = None) -> Any:
        """Register ``value`` under ``name`` (default: its ``__name__``) and return it.

        Usable as a call, as a bare decorator (``@reg.register``) or with a name
        (``@reg.register(name="x")``). A name already taken is a ``ValueError``.
        """

        def decorate(item: T) -> T:
            key = name or getattr(item, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.kind} needs a name to be registered under")
            if key in self._entries:
                raise ValueError(f"a {self.kind} named {key!r} is already registered")
            self._entries[key] = item
            return item

        return decorate if value is None else decorate(value)

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its value (for plugins replacing an entry, and tests)."""
        value = self.get(name)
        del self._entries[name]
        return value

    def get(self, name: str) -> T:
        """The value registered as ``name``; a :class:`ConfigError` with close names otherwise."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise self.unknown(name)

    def unknown(self, name: Any, candidates: Iterable[str] | None = None) -> ConfigError:
        """The error for a name that is not registered: "unknown KIND 'name' (did you mean ...?);
        known KINDs: ...". ``candidates`` replaces this registry's names as the pool of hints."""
        names = sorted(self._entries if candidates is None else candidates)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        listing = self.listing or f"known {self.plural}: {', '.join(names) or 'none'}"
        return ConfigError(f"unknown {self.kind} {name!r}{hint}; {listing}")

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the shell-style ``pattern`` (:func:`fnmatch.fnmatchcase`)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} {self.plural})"
