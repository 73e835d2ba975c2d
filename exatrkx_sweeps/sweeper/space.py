"""Search spaces in Hydra's override syntax, as Optuna distributions.

=============================  ==========================================  ==========
override value                 distribution                                enumerable
=============================  ==========================================  ==========
``4,6,8`` / ``choice(4,6,8)``  categorical (values as written)             yes
``range(2,9,2)``               integer (or float) with that step           yes
``interval(0.1,0.3)``          float in [0.1, 0.3]                         no
``tag(log,interval(a,b))``     float on a log scale                        no
``tag(int,interval(a,b))``     integer in [a, b] (``log`` may be added)    no
``0.2``                        not searched: a fixed override of every trial
=============================  ==========================================  ==========

A space whose every parameter is enumerable is a grid (:func:`grid_points`). Values go
back to the job as override strings written exactly as the user wrote them (so a
choice of config groups or of lists works as in Hydra's basic sweeper).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..errors import one_line


class SpaceError(ValueError):
    """A search-space entry cannot be turned into an Optuna distribution."""


_OPTUNA_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched override: its key (as Hydra writes it) and its distribution."""

    key: str
    distribution: BaseDistribution
    values: tuple[Any, ...] | None = None  # the enumerable values (grid), else None
    texts: tuple[str, ...] | None = None  # each value as the user wrote it

    @property
    def enumerable(self) -> bool:
        return self.values is not None

    def override(self, value: Any) -> str:
        """``key=value`` for the job, with the user's spelling of a listed value."""
        if self.texts is not None and self.values is not None:
            for v, text in zip(self.values, self.texts, strict=True):
                if v == value and type(v) is type(value):
                    return f"{self.key}={text}"
        if isinstance(value, float):
            return f"{self.key}={value!r}"
        return f"{self.key}={value}"

    def suggest(self, trial) -> Any:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.key, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.key, d.low, d.high, step=d.step, log=d.log)


def _parser():
    return OverridesParser.create()


def _param(override) -> Param:
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        values = list(override.sweep_iterator())
        texts = tuple(override.sweep_string_iterator())
        if not all(isinstance(v, _OPTUNA_SCALARS) for v in values):
            values = list(texts)  # lists / dicts: Optuna stores the text, the job gets the text
        if len(set(map(repr, values))) != len(values):
            raise SpaceError(f"{key}: the choice {', '.join(texts)} lists a value twice.")
        return Param(key, CategoricalDistribution(values), tuple(values), texts)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SpaceError(f"{key}=range({value.start},{value.stop},{value.step}) is empty.")
        texts = tuple(override.sweep_string_iterator())
        if all(isinstance(v, int) for v in values):
            dist = IntDistribution(values[0], values[-1], step=abs(int(value.step or 1)))
            if values[0] > values[-1]:
                dist = IntDistribution(values[-1], values[0], step=abs(int(value.step or 1)))
            return Param(key, dist, tuple(values), texts)
        return Param(key, CategoricalDistribution(values), tuple(values), texts)
    if isinstance(value, IntervalSweep):
        lo, hi = value.start, value.end
        if lo is None or hi is None or not lo < hi:
            raise SpaceError(f"{key}: interval({lo}, {hi}) needs a lower bound below the upper bound.")
        log = "log" in value.tags
        if log and lo <= 0:
            raise SpaceError(f"{key}: a log interval needs a positive lower bound, got {lo}.")
        if "int" in value.tags:
            if lo != int(lo) or hi != int(hi):
                raise SpaceError(f"{key}: tag(int, interval({lo}, {hi})) needs integer bounds.")
            return Param(key, IntDistribution(int(lo), int(hi), log=log))
        return Param(key, FloatDistribution(float(lo), float(hi), log=log))
    raise SpaceError(f"{key}: {override.input_line} is not a choice, range or interval sweep.")


def parse(entries: Iterable[str] | Mapping[str, Any]) -> tuple[list[Param], list[str]]:
    """Split overrides (``key=value`` strings, or a key -> value mapping as in a study file)
    into searched parameters and fixed overrides. A later entry for the same key wins."""
    if isinstance(entries, Mapping):
        lines = [f"{k}={_text(v)}" for k, v in entries.items()]
    else:
        lines = list(entries)
    try:
        overrides = _parser().parse_overrides(lines)
    except Exception as exc:
        raise SpaceError(f"cannot parse the search space: {one_line(exc)}") from None
    params: dict[str, Param] = {}
    fixed: dict[str, str] = {}
    for o in overrides:
        key = o.get_key_element()
        params.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            params[key] = _param(o)
        else:
            fixed[key] = o.input_line
    return list(params.values()), list(fixed.values())


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list | tuple):  # a YAML list in a study file: the choices
        return ",".join(_text(x) for x in v)
    return str(v)


def is_grid(params: list[Param]) -> bool:
    return all(p.enumerable for p in params)


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every point of an enumerable space, in a fixed order (the last key varies fastest)."""
    if not is_grid(params):
        raise SpaceError("only a space of choices and ranges is a grid; intervals are not enumerable.")
    keys = [p.key for p in params]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(p.values for p in params))]


def overrides_for(params: list[Param], values: Mapping[str, Any]) -> list[str]:
    return [p.override(values[p.key]) for p in params]
