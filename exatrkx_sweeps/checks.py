"""The vocabulary of config checks: a predicate and the words that say what it accepts.

``config.py`` builds the schema of a run from these, and dataclasses that double as
config groups (``SimulationConfig``) carry theirs in their fields' metadata, so that
every bound is written once. A failed check reads ``key=value: must be <accepts>.``
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple


class Check(NamedTuple):
    ok: Callable[[Any], bool]
    accepts: str  # completes "must be ...", e.g. "an integer >= 1"

    def message(self, key: str, value: Any) -> str:
        return f"{key}={value!r}: must be {self.accepts}."


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def ok(v):
        return (
            isinstance(v, int)
            and not isinstance(v, bool)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )

    bounds = (f" >= {lo}" if lo is not None else "") + (f" and <= {hi}" if hi is not None else "")
    return Check(ok, f"an integer{bounds}")


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def ok(v):
        if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    lo_txt = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
    return Check(ok, f"a number{lo_txt}{'' if hi is None else f' and <= {hi}'}")


POSITIVE = number(0, lo_open=True)
FRACTION = number(0, 1)


def choice(*values: Any) -> Check:
    return Check(lambda v: v in values, "one of " + ", ".join(map(str, values)))


def boolean() -> Check:
    return Check(lambda v: isinstance(v, bool), "true or false")


def text() -> Check:
    return Check(lambda v: isinstance(v, str) and v != "", "a non-empty string")


def optional(check: Check) -> Check:
    return Check(lambda v: v is None or check.ok(v), f"null or {check.accepts}")


def subset(values: tuple[str, ...]) -> Check:
    return Check(
        lambda v: isinstance(v, list | tuple) and all(a in values for a in v),
        f"a list of {', '.join(values)}",
    )


def like(default: Any) -> Check:
    """A check by the type of a default value (for arguments without a stated check)."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    if isinstance(default, str):
        return text()
    return Check(lambda v: True, "any value")


def field(default: Any, check: Check) -> Any:
    """A dataclass field whose value is checked by ``check`` (see :func:`check_fields`)."""
    return dataclasses.field(default=default, metadata={"check": check})


def field_checks(cls: type) -> dict[str, Check]:
    """The checks of a dataclass's fields (``like(default)`` where none is stated)."""
    return {f.name: f.metadata.get("check") or like(f.default) for f in dataclasses.fields(cls)}


def check_fields(obj: Any, prefix: str) -> None:
    """Raise ValueError (one line) for the first field of ``obj`` that fails its check."""
    for name, check in field_checks(type(obj)).items():
        value = getattr(obj, name)
        if not check.ok(value):
            raise ValueError(check.message(f"{prefix}.{name}", value))
