"""Validation of a composed run config, before any work starts.

Every key of every group is checked against :func:`schema`: an unknown key, a wrong
type or an impossible value raises one :class:`ConfigError` whose message names the
key and what it accepts, e.g. ``gnn.iterations=0: must be an integer >= 1``.

The allowed choices come from the packages that own them (activations and
aggregations from ``models/``, GNN architectures from their registry, methods and
backends from ``stages/``, Hough modes and axes from ``augment/``, devices and
precisions from ``devices.py``), the simulation's keys from ``SimulationConfig``, and a
GNN architecture's settings from its constructor, so each is written once. Nothing
here imports torch: a config error comes back in about a second.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from . import checks, devices
from .augment import HOUGH_MODES, REFLECT_AXES
from .data import SOURCES, TRAINING_TRUTH
from .data.simulate import SimulationConfig
from .data.trackml import TrackMLFormatError, list_events
from .devices import PRECISIONS, check_device, check_precision, resolve_precision
from .errors import ConfigError, one_line
from .models import ACTIVATIONS, AGGREGATIONS, GNN_MODEL_INPUTS, GNN_MODELS
from .registry import check_arguments
from .stages import BEND_MODELS, GNN_TRAINING_KEYS, GRAPH_METHODS, NEIGHBOUR_BACKENDS, TRACK_BACKENDS

__all__ = ["ConfigError", "plain", "schema", "validate"]

log = logging.getLogger(__name__)

Schema = dict[str, Any]  # key -> Check, or key -> nested Schema


def plain(cfg: Any) -> Any:
    """A plain (dict / list / scalar) copy of a config, OmegaConf containers resolved."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [plain(v) for v in cfg]
    return cfg


def _network(**extra: checks.Check) -> Schema:
    """Keys every trained network's group has."""
    return {
        "hidden": checks.integer(1),
        "layer_norm": checks.boolean(),
        "activation": checks.choice(*ACTIVATIONS),
        "lr": checks.POSITIVE,
        "epochs": checks.integer(0),
        "use_cells": checks.boolean(),
        **extra,
    }


# checks of GNN model settings by name; a model's other settings are checked by the
# type of their default value
_MODEL_SETTINGS = {
    "hidden": checks.integer(1),
    "iterations": checks.integer(1),
    "mlp_layers": checks.integer(1),
    "layer_norm": checks.boolean(),
    "activation": checks.choice(*ACTIVATIONS),
    "aggregation": checks.choice(*AGGREGATIONS),
}


def _gnn(group: Mapping[str, Any]) -> Schema:
    """The gnn group's schema: the stage's training keys and the chosen model's settings."""
    if not isinstance(group, Mapping) or "model" not in group:
        raise ConfigError(f"gnn.model: missing; choose gnn={'|'.join(GNN_MODELS.names())}.")
    settings = GNN_MODELS.arguments(group["model"], GNN_MODEL_INPUTS)
    model_settings = {k: v for k, v in group.items() if k not in GNN_TRAINING_KEYS}
    check_arguments(settings, model_settings, "gnn", f"gnn.model={group['model']}")
    return {
        "model": checks.choice(*GNN_MODELS.names()),
        "use_cells": checks.boolean(),
        "lr": checks.POSITIVE,
        "epochs": checks.integer(0),
        "pos_weight": checks.POSITIVE,
        "truth": checks.choice(*TRAINING_TRUTH),
        **{k: _MODEL_SETTINGS.get(k) or checks.like(d) for k, d in settings.items()},
    }


def _data() -> Schema:
    return {
        "name": checks.text(),
        "source": checks.choice(*SOURCES),
        "path": checks.optional(checks.text()),
        "detector": checks.optional(checks.text()),
        "seed": checks.integer(0),
        "first_event": checks.integer(0),
        "n_train": checks.integer(0),
        "n_val": checks.integer(0),
        "n_test": checks.optional(checks.integer(0)),
        "pt_cut": checks.number(0),
        "noise_fraction": checks.FRACTION,
        "simulation": checks.field_checks(SimulationConfig),
    }


def schema(cfg: Mapping[str, Any]) -> Schema:
    """The schema of a run config (the gnn group's depends on the chosen model)."""
    return {
        "seed": checks.integer(0),
        "study": checks.optional(checks.text()),  # -m study=NAME: a study file for the Optuna sweeper
        "data": _data(),
        "eval": {
            "data": _data(),
            "noise_fraction": checks.optional(checks.FRACTION),
            "pt_cut": checks.optional(checks.number(0)),
            "precision": checks.choice(*PRECISIONS),
        },
        "embedding": _network(
            layers=checks.integer(1),
            out_dim=checks.integer(1),
            normalize=checks.boolean(),
            margin=checks.POSITIVE,
            train_knn=checks.integer(1),
            random_ratio=checks.number(0),
            sub_events=checks.integer(1, 64),
            pos_weight=checks.POSITIVE,
            radius=checks.POSITIVE,
            knn=checks.integer(1),
        ),
        "graph": {
            "method": checks.choice(*GRAPH_METHODS),
            "backend": checks.choice(*NEIGHBOUR_BACKENDS),
            "module_map_margin": checks.number(0),
        },
        "filter": _network(
            layers=checks.integer(1),
            batch_size=checks.integer(1),
            hard_ratio=checks.number(0),
            random_ratio=checks.number(0),
            pos_weight=checks.POSITIVE,
            truth=checks.choice(*TRAINING_TRUTH),
            cut=checks.FRACTION,
            chunk_size=checks.integer(1),
        ),
        "gnn": _gnn(cfg.get("gnn")),
        "tracks": {
            "edge_cut": checks.FRACTION,
            "min_track_hits": checks.integer(1),
            "backend": checks.choice(*TRACK_BACKENDS),
            "resolve_junctions": checks.boolean(),
            "junction_rounds": checks.integer(0),
            "bend_weight": checks.boolean(),
            "bend_model": checks.choice(*BEND_MODELS),
            "bend_sigma_curvature": checks.POSITIVE,
            "bend_sigma_phi": checks.POSITIVE,
            "bend_sigma_theta": checks.POSITIVE,
            "stitch": checks.boolean(),
            "stitch_max_cost": checks.POSITIVE,
        },
        "augment": {
            "hough": checks.choice(*HOUGH_MODES),
            "triplets": checks.boolean(),
            "reflect": checks.subset(REFLECT_AXES),
            "edge_weighting": checks.boolean(),
            "edge_weight_p": checks.number(0),
        },
        "train": {
            "precision": checks.choice(*PRECISIONS),
            "checkpointing": checks.boolean(),
            "device": checks.text(),  # checked with the precision by check_device below
            "threads": checks.optional(checks.integer(1)),
            "events_per_step": checks.integer(1),
            "sectors": checks.integer(1, 64),
            "sector_halo": checks.number(0),
            "devices": checks.integer(1),
        },
        "tracking": {
            "enabled": checks.boolean(),
            "uri": checks.optional(checks.text()),
            "experiment": checks.text(),
            "run_name": checks.optional(checks.text()),
            "study": checks.optional(checks.text()),
            "system_metrics": checks.boolean(),
            "log_models": checks.boolean(),
            "system_metrics_interval": checks.number(0.1),
            "wait_s": checks.number(0),
        },
        "cache": {"enabled": checks.boolean(), "dir": checks.optional(checks.text())},
    }


_OPTIONAL_GROUPS = {"tracking", "cache", "eval", "hydra"}
_REQUIRED_GROUPS = ("data", "embedding", "graph", "filter", "gnn", "tracks", "augment", "train")


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
    if not schema.ok(node):
        raise ConfigError(schema.message(path, node))


def validate(cfg: Mapping) -> dict:
    """Check a resolved config (OmegaConf or plain dict); returns it as a plain dict."""
    try:
        cfg = plain(cfg)
    except Exception as exc:  # an interpolation or a missing value (???)
        raise ConfigError(f"config: {one_line(exc)}") from None
    for group in _REQUIRED_GROUPS:
        if group not in cfg:
            raise ConfigError(f"{group}: missing config group.")
    for group in ("train", "eval"):  # train.precision=32 on a command line is the number 32
        value = (cfg.get(group) or {}).get("precision")
        if isinstance(value, int) and not isinstance(value, bool):
            cfg[group]["precision"] = str(value)
    full = schema(cfg)
    for key, value in cfg.items():
        if key in _OPTIONAL_GROUPS and key not in full:
            continue
        if key not in full:
            raise ConfigError(f"{key}: unknown top-level key; the config takes {', '.join(sorted(full))}.")
        _check(value, full[key], key)
    kind = check_device(cfg["train"]["device"], cfg["train"]["precision"])
    check_precision(str((cfg.get("eval") or {}).get("precision") or "32"), kind, key="eval.precision")
    warn_if_emulated(cfg["train"]["precision"], kind)
    warn_if_emulated((cfg.get("eval") or {}).get("precision"), kind, key="eval.precision")
    resolve_precisions(cfg, kind)
    _check_events(cfg)
    return cfg


def warn_if_emulated(precision: Any, device_type: str, key: str = "train.precision") -> bool:
    """Logs one warning (and returns True) when ``key`` asks for bf16 on a CPU without
    bf16 units: it runs, but emulated, several times slower than fp32 (docs/pu200.md,
    "Which CPU"). Here, not in devices.py, which the network stages' cache keys
    hash (fingerprint.py): a message must not throw away a trained model."""
    if str(precision) != "bf16" or device_type != "cpu" or devices.cpu_has_bf16():
        return False
    log.warning(
        f"{key}=bf16: this CPU has no bf16 units (AVX-512 BF16 or AMX) and emulates bf16, several "
        f"times slower than fp32; use {key}=auto (bf16 only where the CPU has them) or {key}=32."
    )
    return True


def resolve_precisions(cfg: dict, device_type: str, cuda_bf16: bool = False) -> None:
    """``train.precision`` and ``eval.precision`` of ``auto`` made bf16 or 32 for the
    device (devices.resolve_precision), in place, so that runs log and key what ran."""
    cfg["train"]["precision"] = resolve_precision(cfg["train"]["precision"], device_type, cuda_bf16)
    if cfg.get("eval") and cfg["eval"].get("precision") is not None:
        cfg["eval"]["precision"] = resolve_precision(cfg["eval"]["precision"], device_type, cuda_bf16)


def _check_events(cfg: Mapping[str, Any]) -> None:
    """The events a run asks for exist: training events, test events (of ``eval.data``
    when given), and for TrackML data a directory that holds enough of them."""
    data = cfg["data"]
    test_key, test = (
        ("eval.data", cfg["eval"]["data"]) if (cfg.get("eval") or {}).get("data") else ("data", data)
    )
    if data["n_train"] < 1:
        raise ConfigError("data.n_train=0: the pipeline needs training events; give data.n_train >= 1.")
    if test.get("n_test") == 0:
        raise ConfigError(f"{test_key}.n_test=0: no test events; give {test_key}.n_test >= 1.")
    for key, group, splits in (("data", data, ("train", "val", "test")), (test_key, test, ("test",))):
        if group.get("detector") and not Path(group["detector"]).exists():
            raise ConfigError(f"{key}.detector={group['detector']}: no such file.")
        if group["source"] != "trackml":
            continue
        if not group.get("path"):
            raise ConfigError(
                f"{key}.path: {key}=trackml needs the directory of the events ({key}.path=/dir)."
            )
        try:
            n = len(list_events(group["path"]))
        except TrackMLFormatError as exc:
            raise ConfigError(f"{key}.path={group['path']}: {one_line(exc).split(': ', 1)[-1]}") from None
        asked = sum(int(group.get(f"n_{s}") or 0) for s in splits)
        if asked > n or (key == "data" and test_key == "data" and group.get("n_test") is None and asked >= n):
            raise ConfigError(
                f"{key}.path={group['path']} holds {n} events; {key} asks for "
                + "/".join(f"{group.get(f'n_{s}')}" for s in splits)
                + f" {'/'.join(splits)} events: lower {', '.join(f'{key}.n_{s}' for s in splits)}."
            )
