"""Named implementations of one concept, chosen by a config key (``gnn.model``).

A module adds an implementation with ``@REGISTRY.register("name")``; the config schema
and the stage look it up by name, so adding one touches only its own module and its
config file. ``discover`` names a package whose modules are imported on the first
lookup, so the shipped implementations register themselves without a central list.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, discover: str | None = None):
        self.key = key  # the config key that names an entry, for error messages
        self._discover = discover
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            known = self._entries.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"{self.key}: {name!r} is registered twice ({known} and {obj}).")
            self._entries[name] = obj
            return obj

        return add

    def _load(self) -> None:
        if self._discover is None:
            return
        package = importlib.import_module(self._discover)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._discover}.{info.name}")
        self._discover = None

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._entries))

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise ConfigError(f"{self.key}={name!r}: must be one of {', '.join(self.names())}.")
        return self._entries[name]


def arguments(cls: type, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that a config may set, with their defaults
    (``inspect.Parameter.empty`` when required), leaving out the ``fixed`` ones that the
    caller supplies."""
    out = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{cls.__name__} takes *args/**kwargs: a misspelled setting would be ignored.")
        if p.name not in fixed:
            out[p.name] = p.default
    return out


def check_arguments(cls: type, given: Mapping[str, Any], group: str, what: str, fixed=()) -> None:
    """One ConfigError for a setting that ``cls`` does not take, or a required one missing."""
    accepted = arguments(cls, fixed)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]}: not a setting of {what}; it takes {', '.join(sorted(accepted))}."
        )
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in given]
    if missing:
        raise ConfigError(f"{group}.{missing[0]}: {what} needs it (no default).")
