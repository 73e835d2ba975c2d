"""Code fingerprints: a hash of the source a stage runs, for its cache key.

:func:`fingerprint` hashes the source of the given modules and of every module they
import, transitively, within their own top-level package and ``exatrkx_sweeps``
(third-party libraries are left out: their versions are pinned by the environment,
not by this repository). Editing a model therefore changes the key of the stages that
run it and of nothing upstream, without anyone bumping a version by hand.

What is hashed is the code, not its text: the syntax tree without docstrings, so that
editing a comment or a docstring does not throw away a cached training (the full-scale
setting's takes over an hour). The tree is written as Python 3.11 writes it on every
later Python too, so that fitted stages carried to a machine with another interpreter
(``benchmarks/bench_pu200_gpu.py``: a GPU machine's Python 3.12) keep their keys.

Modules that only compute keys, store entries, lock files or report progress
(``_UNKEYED``) are left out of every closure: editing them changes no result, and they
are imported by the event store, so an edit would otherwise make every cached event and
fitted stage a miss.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from functools import cache
from types import ModuleType

_PACKAGE = __name__.split(".")[0]
_UNKEYED = frozenset(f"{_PACKAGE}.{m}" for m in ("fingerprint", "cache", "locks", "progress"))


@cache
def _source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


@cache
def _code(name: str) -> str:
    """The module's syntax tree without docstrings or comments (its source, if it does
    not parse)."""
    source = _source(name)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return _dump(tree)


def _dump(tree: ast.AST) -> str:
    """``ast.dump(tree)`` as Python 3.11 writes it, on 3.12 and 3.13 too: without the empty
    ``type_params`` that 3.12 gave every function and class, without the empty strings
    that 3.12's f-string parser puts in format specs, and with the empty fields that
    3.13 leaves out by default."""
    for node in ast.walk(tree):
        if getattr(node, "type_params", None) == []:
            del node.type_params
        if isinstance(node, ast.JoinedStr):
            node.values = [v for v in node.values if not (isinstance(v, ast.Constant) and v.value == "")]
    return ast.dump(tree, **({"show_empty": True} if sys.version_info >= (3, 13) else {}))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@cache
def _imports(name: str) -> frozenset[str]:
    """Modules that module ``name`` imports (by its source), within the followed packages."""
    spec = importlib.util.find_spec(name)
    is_package = bool(spec and spec.submodule_search_locations)
    package = name if is_package else name.rpartition(".")[0]
    roots = {_PACKAGE, name.split(".")[0]}
    found = set()
    for node in ast.walk(ast.parse(_source(name) or "")):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import name`: name is a submodule, or an attribute of pkg
            targets = [base] + [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in roots)
    return frozenset(found)


def closure(*modules: ModuleType | str) -> list[str]:
    """The given modules and everything they import within the followed packages, sorted
    (the unkeyed ones left out)."""
    todo = [m if isinstance(m, str) else m.__name__ for m in modules]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in _UNKEYED or not _is_module(name):
            continue
        seen.add(name)
        # a submodule's parent packages run too (their __init__)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(name))
    return sorted(seen)


def fingerprint(*modules: ModuleType | str) -> str:
    """Short hash of the code of ``modules`` and their import closure."""
    h = hashlib.sha256()
    for name in closure(*modules):
        h.update(name.encode())
        h.update(b"\0")
        h.update(_code(name).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
