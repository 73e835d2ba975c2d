"""The Hydra callback that gives a multirun its MLflow parent run.

One parent run per multirun; jobs become its children (they find its id in the sweep
directory). A sweeper that keeps parent runs itself (the Optuna sweeper keeps one per
study, shared by its workers and reruns) says so with a class attribute
``owns_parent_run = True``; the callback then leaves the multirun to it.

Hydra builds its callbacks before the app validates the config, so MLflow and torch
(what ``run.py`` imports) are imported only when a multirun starts.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from .store import client, resolve_uri


def _sweeper_owns_parent(config: DictConfig) -> bool:
    target = (config.hydra.get("sweeper") or {}).get("_target_")
    if not target:
        return False
    try:
        return bool(getattr(get_class(str(target)), "owns_parent_run", False))
    except Exception:  # a sweeper that cannot be imported here: Hydra reports that itself
        return False


def _tracking(config: DictConfig) -> dict:
    return OmegaConf.to_container(config.get("tracking") or {}, resolve=True)


def _swept(overrides) -> list[str]:
    """The sweep overrides of a multirun (``a=1,2``), which name its parent run."""
    parser = OverridesParser.create()
    return [o.input_line for o in parser.parse_overrides(list(overrides)) if o.is_sweep_override()]


class ParentRunCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from .run import open_parent, parent_run_id, run_name

        tr = _tracking(config)
        if not tr.get("enabled", True) or _sweeper_owns_parent(config):
            return
        sweep_dir = config.hydra.sweep.dir
        if parent_run_id(sweep_dir):
            return
        study = tr.get("study")
        open_parent(
            resolve_uri(tr.get("uri")),
            tr.get("experiment", "exatrkx"),
            sweep_dir,
            name=study or f"grid {run_name(_swept(config.hydra.overrides.task))}",
            tags={"study": study or ""},
            wait=float(tr.get("wait_s", 120)),  # a sweep outlives a restarting server
        )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from .run import parent_run_id

        if _sweeper_owns_parent(config):
            return
        run_id = parent_run_id(config.hydra.sweep.dir)
        if run_id:
            client(resolve_uri(_tracking(config).get("uri"))).set_terminated(run_id, status="FINISHED")
