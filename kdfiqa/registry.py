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

Plugins
-------
A registry made with an entry-point ``group`` also holds what installed distributions declare in that
group (:mod:`importlib.metadata`; in a plugin's ``pyproject.toml``::

    [project.entry-points."kdfiqa.losses"]
    wing = "my_package.losses:Wing"

). They are loaded lazily, once: the first time a name is not found (:meth:`Registry.get`, ``in``)
or the names are listed (:meth:`Registry.list`, iteration, ``len``), so a run that names only
built-ins never imports a plugin. Each entry point's object is handed to the registry's ``adopt``
callable with the entry point's name (by default it is registered under that name). A plugin that
fails to import or to register, or that registers a name kdfiqa already has, is a one-line
:class:`PluginError` naming its distribution and entry point.
"""

from __future__ import annotations

import difflib
import fnmatch
from importlib import metadata
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar, overload

from .errors import ConfigError, KdfiqaError, first_line

__all__ = ["Registry", "PluginError"]

T = TypeVar("T")


class PluginError(ConfigError):
    """An installed plugin (an entry point of a kdfiqa group) that cannot be used."""


def _entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    """The installed entry points of ``group``."""
    try:
        return metadata.entry_points(group=group)
    except TypeError:  # Python 3.9: a dict of every group
        return metadata.entry_points().get(group, ())


def _distribution(entry: metadata.EntryPoint) -> str | None:
    dist = getattr(entry, "dist", None)  # Python 3.10+
    return None if dist is None else dist.name


def _plugin_where(entry: metadata.EntryPoint) -> str:
    """"plugin DIST (entry point GROUP: NAME = VALUE)": how messages name an entry point."""
    return (f"plugin {_distribution(entry) or 'of unknown distribution'} "
            f"(entry point {entry.group}: {entry.name} = {entry.value})")


def _uninstall_hint(entry: metadata.EntryPoint) -> str:
    dist = _distribution(entry)
    return f"pip uninstall {dist}" if dist else "uninstall it"


class Registry(Generic[T]):
    """Names mapped to values (factories, classes, budgets ...) of one ``kind``.

    Args:
        kind: what the names name, for messages (``"model"``, ``"loss"``, ``"budget"``).
        plural: its plural (default ``kind + "s"``).
        listing: what an unknown-name error says after the hints, instead of listing every name
            (e.g. "`kdfiqa models` lists them").
        group: the entry-point group whose plugins this registry loads (see the module docstring);
            ``None``: no plugins.
        adopt: ``adopt(name, obj)`` registers an entry point's loaded object ``obj`` (default:
            :meth:`register` it under the entry point's ``name``).
    """

    def __init__(
        self,
        kind: str,
        *,
        plural: str | None = None,
        listing: str | None = None,
        group: str | None = None,
        adopt: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.listing = listing
        self.group = group
        self._adopt = adopt or (lambda name, obj: self.register(obj, name=name))
        self._entries: dict[str, T] = {}
        self._plugins_loaded = group is None
        self._loading: metadata.EntryPoint | None = None  # the entry point being loaded

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
            if key in self._entries and self._loading is not None:
                raise PluginError(
                    f"{_plugin_where(self._loading)}: registers {self.kind} {key!r}, which kdfiqa already "
                    f"has; rename it in the plugin (or {_uninstall_hint(self._loading)})")
            if key in self._entries:
                raise ValueError(f"a {self.kind} named {key!r} is already registered")
            self._entries[key] = item
            return item

        return decorate if value is None else decorate(value)

    def load_plugins(self) -> None:
        """Register the objects of this registry's entry-point group, once (a no-op without a group
        or after the first call). Raises a one-line :class:`PluginError` for a plugin that fails to
        import or to register; the plugins loaded before it stay registered."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in _entry_points(self.group):
            self._loading = entry
            try:
                self._adopt(entry.name, entry.load())
            except PluginError:
                raise
            except Exception as exc:  # the plugin's own code: anything may go wrong in it
                reason = str(exc) if isinstance(exc, KdfiqaError) else f"{type(exc).__name__}: {first_line(exc)}"
                raise PluginError(f"{_plugin_where(entry)} failed to load: {reason}; fix the plugin or "
                                  f"{_uninstall_hint(entry)}") from None
            finally:
                self._loading = None

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its value (for plugins replacing an entry, and tests)."""
        value = self.get(name)
        del self._entries[name]
        return value

    def get(self, name: str) -> T:
        """The value registered as ``name``; a :class:`ConfigError` with close names otherwise."""
        if name in self:
            return self._entries[name]
        raise self.unknown(name)

    def unknown(self, name: Any, candidates: Iterable[str] | None = None) -> ConfigError:
        """The error for a name that is not registered: "unknown KIND 'name' (did you mean ...?);
        known KINDs: ...". ``candidates`` replaces this registry's names as the pool of hints."""
        names = self.list() if candidates is None else sorted(candidates)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        listing = self.listing or f"known {self.plural}: {', '.join(names) or 'none'}"
        return ConfigError(f"unknown {self.kind} {name!r}{hint}; {listing}")

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the shell-style ``pattern`` (:func:`fnmatch.fnmatchcase`), plugins'
        included."""
        self.load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._entries:
            self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} {self.plural})"
