"""Named implementations of one concept, chosen by a config key (``gnn.model``).

A module adds an implementation with ``@REGISTRY.register("name")``; the config schema
and the stage look it up by name, so adding one touches only its own module and its
config file. ``discover`` names a package whose modules are imported on the first
lookup, so the shipped implementations register themselves without a central list.

Config validation must not import torch (a config error is answered in about a second),
so :meth:`Registry.arguments` reads a shipped entry's constructor from its source
(``ast``) without importing it; an entry registered in this process (a plugin module
imported by the user) is inspected directly.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, discover: str | None = None):
        self.key = key  # the config key that names an entry, for error messages
        self._discover = discover
        self._loaded = discover is None
        self._source: dict[str, dict[str, Any]] | None = None  # _declared(), read once
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
        if self._loaded:
            return
        package = importlib.import_module(self._discover)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._discover}.{info.name}")
        self._loaded = True

    def names(self) -> tuple[str, ...]:
        """Every entry's name, without importing the entries' modules."""
        return tuple(sorted(set(self._entries) | set(self._declared())))

    def arguments(self, name: str, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
        """:func:`arguments` of entry ``name``, read from its source when its module is
        not imported yet (ConfigError naming the choices when there is no such entry)."""
        if name in self._entries:
            return arguments(self._entries[name], fixed)
        declared = self._declared()
        if name not in declared:
            raise ConfigError(f"{self.key}={name!r}: must be one of {', '.join(self.names())}.")
        return {k: v for k, v in declared[name].items() if k not in fixed}

    def _declared(self) -> dict[str, dict[str, Any]]:
        """name -> constructor arguments of the classes registered in the discover
        package's modules, parsed from their source."""
        if self._discover is None or self._discover not in sys.modules:
            return {}
        if self._source is not None:  # the shipped modules' source does not change in a process
            return self._source
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(Path(sys.modules[self._discover].__path__[0]).glob("*.py")):
            for node in ast.parse(path.read_text(), str(path)).body:
                name = _registered_name(node)
                if name is not None:
                    out[name] = _constructor_arguments(node, path)
        self._source = out
        return out

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


def _registered_name(node: ast.stmt) -> str | None:
    """The name in a class's ``@SOMETHING.register("name")`` decorator, if it has one."""
    if not isinstance(node, ast.ClassDef):
        return None
    for deco in node.decorator_list:
        if (
            isinstance(deco, ast.Call)
            and isinstance(deco.func, ast.Attribute)
            and deco.func.attr == "register"
            and deco.args
            and isinstance(deco.args[0], ast.Constant)
        ):
            return str(deco.args[0].value)
    return None


def _constructor_arguments(node: ast.ClassDef, path: Path) -> dict[str, Any]:
    """:func:`arguments` of a class from its ``__init__``'s source: defaults must be
    literals (what a config file can hold)."""
    init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    if init is None:
        raise TypeError(f"{path.name}: {node.name} has no __init__ of its own to read its settings from.")
    a = init.args
    if a.vararg or a.kwarg:
        raise TypeError(f"{node.name} takes *args/**kwargs: a misspelled setting would be ignored.")
    positional = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(positional, defaults, strict=True))[1:]  # not self
    pairs += list(zip(a.kwonlyargs, [d or inspect.Parameter.empty for d in a.kw_defaults], strict=True))
    out = {}
    for arg, default in pairs:
        try:
            out[arg.arg] = default if default is inspect.Parameter.empty else ast.literal_eval(default)
        except ValueError:
            raise TypeError(f"{node.name}({arg.arg}=...): a setting's default must be a literal.") from None
    return out


def check_arguments(accepted: Mapping[str, Any], given: Mapping[str, Any], group: str, what: str) -> None:
    """One ConfigError for a setting not among ``accepted`` (what :func:`arguments`
    gives), or a required one missing."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]}: not a setting of {what}; it takes {', '.join(sorted(accepted))}."
        )
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in given]
    if missing:
        raise ConfigError(f"{group}.{missing[0]}: {what} needs it (no default).")
