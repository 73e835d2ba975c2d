"""The MLflow parent run of an Optuna study.

Its id is a user attribute of the study, so every worker, and every rerun that
continues the study, logs its trials under the same parent; the sweep directory's
parent file points the jobs at it (:func:`exatrkx_sweeps.tracking.open_parent`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..dashboards.study import optuna_figures
from ..tracking.run import Run, open_parent
from ..tracking.store import resolve_uri
from . import optuna_compat as compat
from . import results
from .runner import Judged
from .storage import redact

PARENT_ATTR = "mlflow_parent_run_id"


class StudyParent:
    def __init__(self, run: Run):
        self.run = run

    @classmethod
    def open(cls, tr: Mapping, study: optuna.Study, sweep_dir: str | Path, storage: str) -> StudyParent:
        run = open_parent(
            resolve_uri(tr.get("uri")),
            tr.get("experiment", "exatrkx"),
            sweep_dir,
            name=f"study {study.study_name}",
            tags={"study": study.study_name, "optuna_storage": redact(storage)},
            run_id=study.user_attrs.get(PARENT_ATTR),
        )
        if study.user_attrs.get(PARENT_ATTR) != run.run_id:
            study.set_user_attr(PARENT_ATTR, run.run_id)
        return cls(run)

    def trial_finished(self, trial: optuna.Trial, judged: Judged) -> None:
        """Tag the trial's MLflow run with the state and values Optuna recorded."""
        # the job set its run id in another process: read the storage's copy
        run_id = compat.fresh(trial.study, compat.trial_id(trial)).user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        tags = {"optuna.state": judged.state}
        if judged.values:
            tags["optuna.values"] = json.dumps(judged.values)
        if judged.reason:
            tags["optuna.reason"] = judged.reason[:5000]
        try:
            Run(self.run.uri, run_id).set_tags(tags)
        except Exception:  # the job's run is gone (another store): nothing to tag
            pass

    def finish(
        self, study: optuna.Study, metrics: list[str], sweep_dir: str | Path, results_file: Path, table: str
    ) -> None:
        """Results file, trials table and Optuna's figures on the parent run; FINISHED once
        no trial of the study is queued or running."""
        d = Path(sweep_dir)
        for name in (results_file, d / "trials.csv"):
            if Path(name).exists():
                self.run.log_file(name)
        self.run.log_text(table + "\n", "trials.txt")
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in optuna_figures(study, metrics).items():
                path = Path(tmp) / f"{name}.html"
                fig.write_html(path, include_plotlyjs="cdn")
                self.run.log_file(path, "optuna")
        front = results.best(study)
        m: dict[str, float] = {f"n_{k.lower()}": v for k, v in results.counts(study).items()}
        if len(metrics) == 1 and front:
            m[f"best_{metrics[0]}"] = front[0].value
        elif front:
            m["pareto_front_size"] = len(front)
        self.run.log_metrics(m)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self.run.finish()
