"""The running job's link to its Optuna trial: intermediate values, pruning, attributes.

The sweeper writes the study's storage, name and pruner to ``.optuna_study.json`` in
the sweep directory and gives every job ``hydra.sweeper.trial=<number>``. A job (in the
sweeper's process, a joblib worker or a SLURM node) opens the same storage and reports
to its own trial, so the pruner compares it with the other trials as it runs.

Intermediate values (the study's ``pruner.intermediate`` list) map onto steps in list
order: ``graph/val_edge_eff`` takes one step after graph construction,
``gnn/val_edge_eff@epoch`` one step per GNN epoch, ``test/eff_tech_pt0.5@event`` one
step per test event (the Wilcoxon pruner's instances).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig

from . import optuna_compat as compat
from .storage import open_storage
from .study import make_pruner

CONTEXT_FILE = ".optuna_study.json"


def write_context(sweep_dir: str | Path, storage: str | None, study_name: str, pruner: Mapping) -> None:
    """The file through which jobs find their study. It holds the storage URL with its
    credentials (a job must open the storage), so only its owner may read it (0600)."""
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{CONTEXT_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"storage": storage, "study_name": study_name, "pruner": dict(pruner)}, f)
    tmp.replace(d / CONTEXT_FILE)


class TrialLink:
    """A job's handle on trial ``number`` of the study described in ``context``."""

    def __init__(self, context: Mapping[str, Any], number: int):
        self.number = int(number)
        self.study_name = str(context["study_name"])
        self.pruner_spec = dict(context.get("pruner") or {"name": "none"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(context.get("storage")),
                sampler=optuna.samplers.RandomSampler(),
                pruner=make_pruner(self.pruner_spec),
            )
        self.trial_id = compat.trial_id_of(self.study, self.number)
        self.trial = compat.handle(self.study, self.trial_id)
        # what this trial sets, as the sweeper printed it (its run's name)
        self.overrides = str(compat.fresh(self.study, self.trial_id).user_attrs.get("overrides", ""))
        self.pruning = self.pruner_spec.get("name", "none") != "none"

    @classmethod
    def from_hydra(cls) -> TrialLink | None:
        """The link of the current Hydra job, or None outside an Optuna sweep."""
        try:
            hc = HydraConfig.get()
        except Exception:
            return None
        number = hc.sweeper.get("trial")  # None under another sweeper, or outside a sweep
        if number is None:
            return None
        f = Path(hc.sweep.dir) / CONTEXT_FILE
        if not f.exists():
            return None
        return cls(json.loads(f.read_text()), int(number))

    def set_user_attr(self, key: str, value: Any) -> None:
        try:
            compat.set_user_attr(self.study, self.trial_id, key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed meanwhile by another worker (lost heartbeat): nothing to record

    def report(self, value: float, step: int, what: str = "") -> None:
        """Report an intermediate value; raise ``optuna.TrialPruned`` when the pruner says so."""
        if not self.pruning or value is None or not math.isfinite(float(value)):
            return
        try:
            self.trial.report(float(value), int(step))
            prune = self.trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        if prune:
            raise optuna.TrialPruned(f"pruned at step {step}: {what or 'value'}={float(value):.4g}")

    def reporter(self, cfg: Mapping[str, Any]) -> Reporter:
        return Reporter(self, self.pruner_spec.get("intermediate") or [], cfg)


class Reporter:
    """Maps the pipeline's callbacks onto the study's intermediate values and steps."""

    def __init__(self, link: TrialLink, intermediate: list[str], cfg: Mapping[str, Any]):
        self.link = link
        self.items: list[tuple[str, str, str, int]] = []  # stage, metric, per, base step
        base = 0
        for text in intermediate:
            name, _, per = str(text).partition("@")
            stage, _, metric = name.partition("/")
            self.items.append((stage, metric, per, base))
            base += self._size(stage, per, cfg)

    @staticmethod
    def _size(stage: str, per: str, cfg: Mapping[str, Any]) -> int:
        if per == "epoch":
            return int((cfg.get(stage) or {}).get("epochs", 1000))
        if per == "event":
            data = (cfg.get("eval") or {}).get("data") or cfg.get("data") or {}
            return int(data.get("n_test", 1000) or 1000)
        return 1

    def _report(self, stage: str, per: str, metrics: Mapping[str, float], index: int) -> None:
        for s, metric, p, base in self.items:
            if s == stage and p == per and metric in metrics:
                self.link.report(metrics[metric], base + index, f"{stage}/{metric}")

    def on_epoch(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        self._report(stage, "epoch", metrics, epoch)

    def on_stage(self, stage: str, metrics: Mapping[str, float]) -> None:
        self._report(stage, "", metrics, 0)

    def on_event(self, index: int, metrics: Mapping[str, float]) -> None:
        self._report("test", "event", metrics, index)
