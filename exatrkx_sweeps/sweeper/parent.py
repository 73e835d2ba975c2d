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
from urllib.parse import urlencode

import optuna
from optuna.trial import TrialState

from ..dashboards import page
from ..dashboards.build import build
from ..dashboards.runs import DashboardError
from ..dashboards.study import optuna_figures
from ..locks import file_lock
from ..redaction import redact
from ..tracking.run import Run, open_parent
from ..tracking.store import resolve_uri
from . import optuna_compat as compat
from . import results
from .runner import Judged

PARENT_ATTR = "mlflow_parent_run_id"


class StudyParent:
    def __init__(self, run: Run, experiment: str, storage: str, study: optuna.Study):
        self.run = run
        self.experiment = experiment
        self.storage = storage
        self.study = study

    @classmethod
    def open(cls, tr: Mapping, study: optuna.Study, sweep_dir: str | Path, storage: str) -> StudyParent:
        experiment = tr.get("experiment", "exatrkx")
        objectives = zip(study.user_attrs.get("objectives") or [], study.directions, strict=False)
        # workers started together share the sweep directory: one of them creates the run
        with file_lock(Path(sweep_dir) / ".mlflow_parent.lock", remove=True):
            run = open_parent(
                resolve_uri(tr.get("uri")),
                experiment,
                sweep_dir,
                name=study.user_attrs.get("title") or study.study_name,
                tags={
                    "study": study.study_name,
                    "optuna_storage": redact(storage),
                    "kind": study.user_attrs.get("kind", "search"),
                    "objectives": ",".join(f"{m}:{d.name.lower()}" for m, d in objectives),
                    "description": study.user_attrs.get("description", ""),
                },
                run_id=study.user_attrs.get(PARENT_ATTR),  # read under the lock: another worker's run
                wait=float(tr.get("wait_s", 120)),  # a worker outlives a restarting server
            )
            if study.user_attrs.get(PARENT_ATTR) != run.run_id:
                study.set_user_attr(PARENT_ATTR, run.run_id)
        return cls(run, experiment, storage, study)

    def trial_finished(self, trial_id: int, judged: Judged) -> None:
        """Tag the trial's MLflow run with the state and values Optuna recorded; a run its
        job left RUNNING (the worker was killed) ends KILLED with the reason."""
        # the job set its run id in another process: read the storage's copy
        run_id = compat.fresh(self.study, trial_id).user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        tags = {"optuna.state": judged.state}
        if judged.values:
            tags["optuna.values"] = json.dumps(judged.values)
        if judged.reason:
            tags["optuna.reason"] = judged.reason[:5000]
        try:
            run = Run(self.run.uri, run_id)
            run.set_tags(tags)
            if judged.state == "FAIL" and run.client.get_run(run_id).info.status == "RUNNING":
                run.set_tags({"status_reason": judged.reason[:250]})
                run.finish("KILLED")
        except Exception:  # the job's run is gone (another store): nothing to tag
            pass

    def finish(
        self, study: optuna.Study, metrics: list[str], sweep_dir: str | Path, results_file: Path, table: str
    ) -> None:
        """Results file, trials table and the study's dashboard page (its runs' figures and
        Optuna's) on the parent run; FINISHED once no trial of the study is queued or running."""
        d = Path(sweep_dir)
        for name in (results_file, d / "trials.csv"):
            if Path(name).exists():
                self.run.log_file(name)
        self.run.log_text(table + "\n", "trials.txt")
        with tempfile.TemporaryDirectory() as tmp:
            self.run.log_file(self._dashboard(study, metrics, Path(tmp)))
        m: dict[str, float] = {f"n_{k.lower()}": v for k, v in results.counts(study).items()}
        front = [] if results.is_scan(study) else results.best(study)
        if len(metrics) == 1 and front:
            m[f"best_{metrics[0]}"] = front[0].value
        elif front:
            m["pareto_front_size"] = len(front)
        self.run.log_metrics(m)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self.run.finish()

    def _dashboard(self, study: optuna.Study, metrics: list[str], tmp: Path) -> Path:
        """The study's dashboard (as ``python -m exatrkx_sweeps.dashboards`` draws it from
        the runs in MLflow) followed by Optuna's figures of the study."""
        try:
            title, intro, sections = build(study.study_name, self.run.uri, self.experiment)
        except DashboardError as exc:  # no trial logged a run (a task without tracking)
            title, intro, sections = f"study {study.study_name}", f"<p class='note'>{exc}</p>", []
        sections += [(name.replace("_", " "), fig) for name, fig in optuna_figures(study, metrics).items()]
        return page.write(tmp / "dashboard.html", title, intro, sections)

    def pointers(self, study: optuna.Study) -> list[str]:
        """Where to look at the study: its parent run in the MLflow UI, its dashboard, and
        Optuna's own dashboard of the storage."""
        uri, name = self.run.uri, study.study_name
        exp = self.run.client.get_run(self.run.run_id).info.experiment_id
        query = urlencode({"workflowType": "machine_learning", "searchFilter": f"tags.study = '{name}'"})
        server = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        lines = [f"MLflow parent run {self.run.run_id} (experiment {self.experiment}):"]
        if server != uri:
            lines.append(f"  mlflow ui --backend-store-uri {redact(uri)}")
        lines += [
            f"  {server.rstrip('/')}/#/experiments/{exp}/runs?{query}",
            f"dashboard: python -m exatrkx_sweeps.dashboards {name} --tracking-uri {redact(uri)}",
            f"Optuna's dashboard: optuna-dashboard {redact(self.storage)}",
        ]
        return lines
