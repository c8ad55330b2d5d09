"""Name → object registries for models and datasets, open to other packages through entry points.

Modelled on torchvision's ``models/_api.py``: a decorator registers a class under a name, duplicates
are refused, and a lookup of an unknown name fails with the list of valid ones.

Plugins use the ecosystem's convention (pytest's ``pytest11``): a package declares, in its ``pyproject.toml``,

    [project.entry-points."dgmbench.models"]
    made = "dgmbench_made"          # a module whose import runs @register_model("made")

and the registry loads every entry point of its group on the first lookup (not at import, so ``--help`` and
the in-tree registrations stay cheap). An in-tree entry may be *declared* rather than registered: its name, the
module whose import registers it, and the static metadata ``dgmbench list`` shows (:meth:`Registry.declare`), so
listing imports no torch and no model; the module is imported on the first :meth:`Registry.get` of that name
(tests/test_startup.py checks each declaration against what the loaded entry declares). Each entry records its
*source*: ``dgmbench`` for the in-tree ones, the distribution's name for a plugin, ``file <path>`` for a dataset
declared in a grid. A plugin that registers a taken (or declared) name is refused with both sources named; a plugin
that fails to import is reported in one log line naming it and the error (kept in :attr:`Registry.plugin_errors`),
and everything else keeps working.
"""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
BUILTIN = "dgmbench"  # the source of every in-tree entry

log = logging.getLogger("dgmbench.plugins")


class UnknownNameError(KeyError):
    """A name that is not registered. ``str()`` is a complete, user-facing message."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class NameClashError(ValueError):
    """A name registered twice; the message names both sources."""


@dataclass(frozen=True)
class Declared:
    """An in-tree entry known before its module is imported."""

    module: str  # e.g. "dgmbench.models.vae"; importing it runs the decorator that registers the entry
    meta: dict[str, Any]  # what `dgmbench list` shows, e.g. {"likelihood": "bound", "description": "..."}


def _module_of(obj) -> str | None:
    return getattr(getattr(obj, "loader", obj), "__module__", None)


def _package_of(obj) -> str | None:
    """The distribution that defines ``obj`` (a class, a function, or a spec holding a ``loader``), if not dgmbench."""
    top = (_module_of(obj) or "").split(".")[0]  # a DatasetSpec belongs to the module of its loader function
    if top in ("", BUILTIN, "__main__", "builtins"):
        return None
    from importlib.metadata import packages_distributions

    return (packages_distributions().get(top) or [top])[0]


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None,
                 describe: Callable[[T], dict[str, Any]] | None = None):
        self.kind = kind  # "model" or "dataset", used in error messages
        self.entry_point_group = entry_point_group  # e.g. "dgmbench.models"; None = no plugins
        self.describe = describe  # an entry → the metadata a declaration gives without importing it (meta())
        self._entries: dict[str, T] = {}
        self._declared: dict[str, Declared] = {}  # in-tree entries by module path; kept after they load
        self._sources: dict[str, str] = {}
        self._current_source = BUILTIN  # who is registering right now (a plugin while its entry point loads)
        self._plugins_loaded = False
        self.plugin_errors: list[str] = []  # one line per plugin that failed to load

    # --- registering -------------------------------------------------------------------------------------
    def register(self, name: str, *, source: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            src = source or self._current_source
            if src == BUILTIN:  # e.g. a plugin imported directly, before any lookup loaded its entry point
                src = _package_of(obj) or BUILTIN
            declared = self._declared.get(name)
            if declared is not None and name not in self._entries and _module_of(obj) == declared.module:
                src = BUILTIN  # the declared module filling its own entry (even when a plugin imported it)
            elif name in self._entries or declared is not None:
                raise NameClashError(
                    f"{self.kind} {name!r} from {src} clashes: {name!r} is already registered, from "
                    f"{self._sources[name]}; one of them must be renamed"
                )
            self._entries[name] = obj
            self._sources[name] = src
            return obj

        return decorator

    def declare(self, name: str, module: str, **meta: Any) -> None:
        """Make an in-tree entry known by name and ``meta`` alone; ``module`` registers it when first looked up."""
        if name in self._sources:
            raise NameClashError(f"{self.kind} {name!r} is declared twice")
        self._declared[name] = Declared(module, meta)
        self._sources[name] = BUILTIN

    def unregister(self, name: str) -> None:
        """Remove an entry (a grid's file dataset re-declared with other settings; tests)."""
        self._entries.pop(name, None)
        self._declared.pop(name, None)
        self._sources.pop(name, None)

    @contextmanager
    def registering_as(self, source: str):
        """Attribute every registration inside the block to ``source`` (a plugin's distribution name)."""
        previous, self._current_source = self._current_source, source
        try:
            yield
        finally:
            self._current_source = previous

    # --- plugins -----------------------------------------------------------------------------------------
    def use_entry_points(self, group: str) -> None:
        """Load the entry points of ``group`` on the first lookup (call once the in-tree entries exist)."""
        self.entry_point_group = group
        self._plugins_loaded = False

    def load_plugins(self, *, reload: bool = False) -> None:
        """Import every entry point of the group once; failures become one line each, never an exception."""
        if self.entry_point_group is None or (self._plugins_loaded and not reload):
            return
        self._plugins_loaded = True  # before loading: a plugin's own registrations look names up
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=self.entry_point_group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            source = dist.name if dist is not None else ep.value
            try:
                with self.registering_as(source):
                    ep.load()  # importing the module runs its @register_model / @register_dataset
            except Exception as err:  # any error in third-party code must not take dgmbench down
                msg = (f"{self.kind} plugin {ep.name!r} ({source}: {ep.value}) failed to load and is skipped: "
                       f"{type(err).__name__}: {err}".replace("\n", " "))
                self.plugin_errors.append(msg)
                log.warning(msg)

    # --- looking up --------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The entry; a declared one's module is imported on its first lookup."""
        self._check_known(name)
        if name not in self._entries:
            module = self._declared[name].module
            importlib.import_module(module)
            if name not in self._entries:
                raise RuntimeError(f"{module} is declared to register {self.kind} {name!r} but did not")
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        """What ``describe`` says of the entry, from its declaration while its module is not imported."""
        self._check_known(name)
        if name in self._entries and self.describe is not None:
            return self.describe(self._entries[name])
        if name in self._declared:
            return dict(self._declared[name].meta)
        raise TypeError(f"the {self.kind} registry has no describe function")

    def declared(self, name: str) -> dict[str, Any] | None:
        """The static metadata declared for an in-tree entry (None for a registered one); see meta()."""
        declared = self._declared.get(name)
        return dict(declared.meta) if declared is not None else None

    def source(self, name: str) -> str:
        """Where ``name`` comes from: ``dgmbench``, a plugin's distribution name, or ``file <path>``."""
        self._check_known(name)
        return self._sources[name]

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._sources)  # registered and declared

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._sources

    def _check_known(self, name: str) -> None:
        if name not in self:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
