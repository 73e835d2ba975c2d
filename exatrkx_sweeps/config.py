"""Validation of a composed run config, before any work starts.

Every key of every group is checked against :data:`SCHEMA`: an unknown key, a wrong
type or an impossible value raises one :class:`ConfigError` whose message names the
key and what it accepts, e.g. ``gnn.iterations=0: must be an integer >= 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import one_line


class ConfigError(ValueError):
    """A config key has a wrong type or an impossible value."""


Check = tuple[Callable[[Any], bool], str]


def _int(lo=None, hi=None) -> Check:
    def ok(v):
        return (
            isinstance(v, int)
            and not isinstance(v, bool)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )

    bounds = (f" >= {lo}" if lo is not None else "") + (f" and <= {hi}" if hi is not None else "")
    return ok, f"an integer{bounds}"


def _num(lo=None, hi=None, lo_open=False) -> Check:
    def ok(v):
        if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    lo_txt = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
    return ok, f"a number{lo_txt}{'' if hi is None else f' and <= {hi}'}"


def _choice(*values) -> Check:
    return (lambda v: v in values), "one of " + ", ".join(map(str, values))


def _bool() -> Check:
    return (lambda v: isinstance(v, bool)), "true or false"


def _str() -> Check:
    return (lambda v: isinstance(v, str) and v != ""), "a non-empty string"


def _opt(check: Check) -> Check:
    return (lambda v: v is None or check[0](v)), f"null or {check[1]}"


def _axes() -> Check:
    return (
        lambda v: isinstance(v, list | tuple) and all(a in ("x", "y", "z") for a in v)
    ), "a list of x, y, z"


_POS = _num(0, lo_open=True)
_FRACTION = _num(0, 1)
_ACT = _choice("relu", "tanh", "silu", "gelu", "leaky_relu")
_MLP = {
    "hidden": _int(1),
    "layer_norm": _bool(),
    "activation": _ACT,
    "lr": _POS,
    "epochs": _int(0),
    "use_cells": _bool(),
}

SIMULATION: dict[str, Check] = {
    "mu": _POS,
    "hard_scatter": _bool(),
    "particles_per_vertex": _POS,
    "hard_scatter_particles": _num(0),
    "pt_min_gev": _POS,
    "eta_max": _num(0, 6, lo_open=True),
    "secondary_fraction": _FRACTION,
    "secondary_r_max_mm": _POS,
    "sigma_z_mm": _num(0),
    "sigma_xy_mm": _num(0),
    "noise_share": _num(0, 0.99),
    "multiple_scattering": _bool(),
    "energy_loss": _bool(),
    "step_mm": _num(0, 50, lo_open=True),
    "max_steps": _int(1),
}
DATA: dict[str, Check] = {
    "name": _str(),
    "source": _choice("simulate", "trackml"),
    "path": _opt(_str()),
    "detector": _opt(_str()),
    "seed": _int(0),
    "first_event": _int(0),
    "n_train": _int(0),
    "n_val": _int(0),
    "n_test": _opt(_int(0)),
    "pt_cut": _num(0),
    "noise_fraction": _FRACTION,
    "simulation": SIMULATION,
}
SCHEMA: dict[str, Any] = {
    "seed": _int(0),
    "study": _opt(_str()),  # a study file for the Optuna sweeper (python -m exatrkx_sweeps -m study=NAME)
    "data": DATA,
    "eval": {"data": DATA, "noise_fraction": _opt(_FRACTION), "pt_cut": _opt(_num(0))},
    "embedding": {
        **_MLP,
        "layers": _int(1),
        "out_dim": _int(1),
        "normalize": _bool(),
        "margin": _POS,
        "train_knn": _int(1),
        "random_ratio": _num(0),
        "pos_weight": _POS,
        "radius": _POS,
        "knn": _int(1),
    },
    "graph": {
        "method": _choice("radius", "module_map"),
        "backend": _choice("auto", "faiss", "kdtree", "torch", "faiss_gpu"),
        "module_map_margin": _num(0),
    },
    "filter": {
        **_MLP,
        "layers": _int(1),
        "batch_size": _int(1),
        "hard_ratio": _num(0),
        "random_ratio": _num(0),
        "pos_weight": _POS,
        "truth": _choice("pid", "module"),
        "cut": _FRACTION,
        "chunk_size": _int(1),
    },
    "gnn": {
        **_MLP,
        "model": _choice("interaction", "attention", "gcn"),
        "iterations": _int(1),
        "aggregation": _choice("sum", "max", "sum_max"),
        "mlp_layers": _int(1),
        "pos_weight": _POS,
        "truth": _choice("pid", "module"),
    },
    "tracks": {
        "edge_cut": _FRACTION,
        "min_track_hits": _int(1),
        "backend": _choice("auto", "scipy", "cugraph"),
        "resolve_junctions": _bool(),
        "junction_rounds": _int(0),
    },
    "augment": {
        "hough": _choice("none", "params", "votes"),
        "reflect": _axes(),
        "edge_weighting": _bool(),
        "edge_weight_p": _num(0),
    },
    "train": {
        "precision": _choice("32", "bf16", "16-mixed"),
        "checkpointing": _bool(),
        "device": (
            lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
            "auto, cpu or cuda[:N]",
        ),
        "threads": _opt(_int(1)),
    },
    "tracking": {
        "enabled": _bool(),
        "uri": _opt(_str()),
        "experiment": _str(),
        "run_name": _opt(_str()),
        "study": _opt(_str()),
    },
    "cache": {"enabled": _bool(), "dir": _opt(_str())},
}
_OPTIONAL_GROUPS = {"tracking", "cache", "eval", "hydra"}


def _check(node: Any, schema: Any, path: str) -> None:
    if isinstance(schema, dict):
        if node is None and path == "eval.data":
            return
        if not isinstance(node, Mapping):
            raise ConfigError(f"{path}: must be a group of keys ({', '.join(schema)}), got {node!r}.")
        for key, value in node.items():
            if key not in schema:
                raise ConfigError(f"{path}.{key}: unknown key; {path} takes {', '.join(sorted(schema))}.")
            _check(value, schema[key], f"{path}.{key}")
        return
    ok, allowed = schema
    if not ok(node):
        raise ConfigError(f"{path}={node!r}: must be {allowed}.")


def validate(cfg: Mapping) -> dict:
    """Check a resolved config (OmegaConf or plain dict); returns it as a plain dict."""
    from .data.dataset import _plain

    try:
        plain = _plain(cfg)
    except Exception as exc:  # an interpolation or a missing value (???)
        raise ConfigError(f"config: {one_line(exc)}") from None
    for key, value in plain.items():
        if key in _OPTIONAL_GROUPS and key not in SCHEMA:
            continue
        if key not in SCHEMA:
            raise ConfigError(f"{key}: unknown top-level key; the config takes {', '.join(sorted(SCHEMA))}.")
        _check(value, SCHEMA[key], key)
    for group in ("data", "embedding", "graph", "filter", "gnn", "tracks", "augment", "train"):
        if group not in plain:
            raise ConfigError(f"{group}: missing config group.")
    if plain["data"]["source"] == "trackml" and not plain["data"].get("path"):
        raise ConfigError("data.path: data=trackml needs the directory of your events (data.path=/dir).")
    ev = plain.get("eval") or {}
    if ev.get("data") and ev["data"]["source"] == "trackml" and not ev["data"].get("path"):
        raise ConfigError("eval.data.path: eval.data=trackml needs the directory of the test events.")
    if plain["train"]["precision"] == "16-mixed" and plain["train"]["device"] == "cpu":
        raise ConfigError("train.precision=16-mixed: needs a CUDA device; use train.precision=bf16 on CPU.")
    return plain
