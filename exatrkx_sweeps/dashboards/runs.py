"""The runs of a study, read from MLflow into pandas.

A study's trials are child runs tagged ``study=<name>``; its parent run (tag
``role=parent``) carries the study's description, kind (scan or search) and objectives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ..tracking.store import client, resolve_uri

# params that describe bookkeeping, not the physics settings of a run
_BOOKKEEPING = ("tracking.", "cache.", "train.device", "train.threads", "study")


class DashboardError(RuntimeError):
    """A dashboard cannot be drawn; the message says why and what to do."""


@dataclass
class StudyRuns:
    study: str
    uri: str
    experiment: str
    experiment_id: str
    runs: pd.DataFrame  # finished trials: one row each, columns params.*, metrics.*, tags.*
    parent: dict[str, str] = field(default_factory=dict)  # the parent run's tags
    n_failed: int = 0

    @property
    def kind(self) -> str:
        return self.parent.get("kind", "search")

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, direction) pairs, from the parent's ``objectives`` tag."""
        text = self.parent.get("objectives") or "eff_tech_pt0.5:maximize"
        return [tuple(item.split(":", 1)) for item in text.split(",") if ":" in item]

    def swept(self) -> list[str]:
        """The parameters that vary among the runs (without the ``params.`` prefix)."""
        out = []
        for col in self.runs.columns:
            if not col.startswith("params.") or col[len("params.") :].startswith(_BOOKKEEPING):
                continue
            if self.runs[col].astype(str).nunique() > 1:
                out.append(col[len("params.") :])
        return out

    def values(self, param: str) -> pd.Series:
        """A parameter's values, as numbers where they all are numbers."""
        col = self.runs[f"params.{param}"]
        num = pd.to_numeric(col, errors="coerce")
        return num if num.notna().all() else col.astype(str)

    def metric(self, name: str) -> pd.Series:
        col = f"metrics.{name}"
        return self.runs[col] if col in self.runs else pd.Series(float("nan"), index=self.runs.index)


def frame(mlflow: MlflowClient, experiment_id: str, filter_string: str) -> pd.DataFrame:
    """Runs matching ``filter_string``: one row each, columns run_id, status, start_time,
    params.*, metrics.*, tags.* (as ``mlflow.search_runs`` gives them)."""
    rows, token = [], None
    while True:
        page = mlflow.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        for r in page:
            row = {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time}
            row.update({f"params.{k}": v for k, v in r.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            return pd.DataFrame(rows)


def load(study: str, tracking_uri: str | None = None, experiment: str = "exatrkx") -> StudyRuns:
    """The finished runs of ``study`` in ``experiment``; DashboardError if there are none."""
    uri = resolve_uri(tracking_uri, write=False)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise DashboardError(
            f"no MLflow store at {uri[len('sqlite:///') :]}: give the --tracking-uri your runs logged to."
        )
    exp = client(uri).get_experiment_by_name(experiment)
    if exp is None:
        raise DashboardError(
            f"no experiment {experiment!r} in {uri}: run a study first "
            f"(python -m exatrkx_sweeps -m study={study}) or give --tracking-uri / --experiment."
        )
    runs = frame(client(uri), exp.experiment_id, f"tags.study = '{study}'")
    if runs.empty:
        raise DashboardError(
            f"study {study!r} has no runs in experiment {experiment!r} of {uri}: "
            f"run it first (python -m exatrkx_sweeps -m study={study})."
        )
    role = runs.get("tags.role", pd.Series("", index=runs.index)).fillna("")
    parents = runs[role == "parent"]
    trials = runs[role != "parent"]
    finished = trials[trials.status == "FINISHED"].reset_index(drop=True)
    if finished.empty:
        raise DashboardError(
            f"study {study!r} has {len(trials)} trial run(s) in {uri}, none finished: "
            "nothing to draw yet (see their errors in the MLflow UI)."
        )
    parent = {}
    if not parents.empty:
        row = parents.sort_values("start_time").iloc[-1]
        parent = {
            c[len("tags.") :]: row[c] for c in parents.columns if c.startswith("tags.") and pd.notna(row[c])
        }
    return StudyRuns(
        study, uri, experiment, exp.experiment_id, finished, parent, int(len(trials) - len(finished))
    )
