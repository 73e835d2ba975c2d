"""Hydra composition errors as one line, before Hydra runs.

Hydra reports a misspelled key, an unknown config option or an override it cannot parse
over several lines, with its internals (``Key 'iteratons' is not in struct``). The app
composes the command line once first (each sweep at its first value) and turns such an
error into one line that names the key or option and what it accepts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import one_line

# command-line flags after which Hydra prints or inspects instead of running
_INSPECT = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")


class _Unparsable(ValueError):
    """An override Hydra's grammar rejects; the message names it."""


def _first_values(overrides: list[str]) -> list[str]:
    """The overrides with each sweep replaced by its first value (an interval by its
    lower bound), so that one composition checks keys, options and values."""
    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            (o,) = parser.parse_overrides([text])
        except HydraException as exc:
            raise _Unparsable(f"{text}: not valid override syntax ({one_line(exc)}).") from None
        if not o.is_sweep_override():
            out.append(o.input_line)
        elif isinstance(o.value(), IntervalSweep):
            out.append(f"{o.get_key_element()}={o.value().start}")
        else:
            out.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
    return out


def _keys(node: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, Mapping):
            out += _keys(v, f"{prefix}{k}.")
    return out


def composition_error(argv: list[str], config_module: str = "exatrkx_sweeps.conf") -> str | None:
    """One line saying why Hydra would fail to compose ``argv`` (None when it would not,
    or when Hydra is only asked to print help or a config)."""
    if any(
        a in _INSPECT or a.startswith(("--cfg=", "--config-name", "-cn", "--config-path", "-cp"))
        for a in argv
    ):
        return None
    try:
        firsts = _first_values([a for a in argv if not a.startswith("-")])
    except _Unparsable as exc:
        return str(exc)
    with initialize_config_module(config_module, version_base=None):
        try:
            compose("config", overrides=firsts, return_hydra_config=True)
            return None
        except (HydraException, OmegaConfBaseException) as exc:
            return _explain(str(exc), compose("config", return_hydra_config=True))


def _explain(message: str, defaults) -> str:
    missing = re.search(r"Could not find '([^']+)/([^']+)'", message)
    if missing:
        group, option = missing.groups()
        listed = message.split(f"Available options in '{group}':", 1)[-1].split("Config search path")[0]
        options = [x.strip() for x in listed.splitlines() if x.strip()]
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={option}: no such option{hint}; {group} takes {', '.join(options)}."
    key = re.search(r"Could not override '([^']+)'", message) or re.search(r"full_key: (\S+)", message)
    if key:
        name = key.group(1)
        known = _keys(OmegaConf.to_container(defaults, resolve=False))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{name}: no such key; {hint}(a new key takes a +: +{name}=...)."
    return one_line(Exception(message))
