"""MLflow: runs, params, metrics, artifacts.

* Store: ``tracking.uri``; by default a SQLite file at an absolute path
  (``$EXATRKX_MLFLOW_DB`` or ``~/.exatrkx/mlflow.db``) with artifacts beside it, so it
  never moves with Hydra's job directory. ``http(s)://`` points at an MLflow server
  (checked for reachability before anything runs).
* A multirun (or a study) gets a parent run, created by :class:`ParentRunCallback` and
  recorded in the sweep directory; each job is a child run of it, also when jobs run
  in other processes.
* Each run logs: the flattened resolved config as params; the run report as metrics;
  training curves with steps; tags (git commit, device, package versions, cache hits,
  study and trial); artifacts (resolved config, overrides, metrics JSON, efficiency vs
  pT and vs eta as Plotly HTML). A run that raises is marked FAILED with its error.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARENT_FILE = ".mlflow_parent_run"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says why and what to do."""


def default_db_path() -> Path:
    env = os.environ.get("EXATRKX_MLFLOW_DB")
    return Path(env).expanduser().resolve() if env else (Path.home() / ".exatrkx" / "mlflow.db")


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use: an absolute sqlite:// URI by default."""
    if not uri:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :]).expanduser()
        if not path.is_absolute():
            path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://", "file:", "postgresql", "mysql")):
        return uri
    path = Path(uri).expanduser().resolve()  # a bare path: a SQLite file
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """One clear error if an MLflow server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(
                    f"tracking.uri={uri}: the MLflow server answered HTTP {r.status} on /health."
                )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking.uri={uri}: no MLflow server answers ({reason}). Start one (mlflow server --port ...) "
            "or drop tracking.uri to use the local SQLite store."
        ) from None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        artifact_location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another worker
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


def provenance_tags() -> dict[str, str]:
    import numpy
    import torch

    tags = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "host": platform.node(),
    }
    for pkg in ("torch_geometric", "mlflow", "optuna", "hydra"):
        try:
            tags[pkg] = __import__(pkg).__version__
        except Exception:
            pass
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            tags["git_commit"] = commit.stdout.strip()
    except Exception:
        pass
    from . import __version__

    tags["exatrkx_sweeps"] = __version__
    return tags


class Run:
    """One MLflow run (a job of a study / multirun, or a single run)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        check_reachable(uri)
        self.uri = uri
        self.client = _client(uri)
        self.experiment_id = experiment_id(self.client, uri, experiment)
        all_tags = dict(tags or {})
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id

    # -- logging
    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and v == v]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_curve(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        self.log_metrics({f"{stage}/{k}": v for k, v in metrics.items()}, step=epoch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_file(self, path: str | Path, directory: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), directory)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def fail(self, error: BaseException | str) -> None:
        msg = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
        try:
            self.set_tags(
                {"error": msg[:5000], "status_reason": msg.splitlines()[0][:250] if msg else "failed"}
            )
        finally:
            self.finish("FAILED")


def log_report(run: Run, report, cfg: Mapping, overrides: list[str]) -> None:
    """Metrics, tags and artifacts of a finished pipeline run."""
    import yaml

    run.log_metrics(report.metrics)
    run.set_tags(
        {
            "device": report.info.get("device"),
            "train_data": report.info.get("train_data"),
            "test_data": report.info.get("test_data"),
            "cache_hits": ",".join(k for k, v in report.cache_hits.items() if v) or "none",
            **{f"cache.{k}": v for k, v in report.cache_hits.items()},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
        (tmp / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
        (tmp / "metrics.json").write_text(json.dumps(report.metrics, indent=2, sort_keys=True))
        (tmp / "summary.txt").write_text(report.summary_table() + "\n")
        for p in tmp.iterdir():
            run.log_file(p)
        from .dashboards.figures import efficiency_figures

        for name, fig in efficiency_figures(report).items():
            path = tmp / f"{name}.html"
            fig.write_html(path, include_plotlyjs="cdn")
            run.log_file(path, "plots")


# ---------------------------------------------------------------- multirun ----


def parent_run_id(sweep_dir: str | Path) -> str | None:
    f = Path(sweep_dir) / PARENT_FILE
    return f.read_text().strip() if f.exists() else None


def create_parent(
    cfg: Mapping, sweep_dir: str | Path, name: str | None = None, tags: dict | None = None
) -> Run:
    tr = cfg.get("tracking") or {}
    run = Run(
        resolve_uri(tr.get("uri")),
        tr.get("experiment", "exatrkx"),
        run_name=name,
        tags={
            "sweep_dir": str(Path(sweep_dir).resolve()),
            "role": "parent",
            **(tags or {}),
            **provenance_tags(),
        },
    )
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / PARENT_FILE).write_text(run.run_id)
    return run


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


def _optuna_sweep(config) -> bool:
    """Whether the Optuna sweeper (which keeps one parent run per study) runs this multirun."""
    target = str((config.hydra.get("sweeper") or {}).get("_target_", ""))
    return "exatrkx_optuna_sweeper" in target


class ParentRunCallback(Callback):  # type: ignore[misc]
    """Hydra callback: one MLflow parent run per multirun; jobs become its children."""

    def on_multirun_start(self, config, **kwargs) -> None:
        if not (config.get("tracking") or {}).get("enabled", True) or _optuna_sweep(config):
            return
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(config, resolve=False)
        sweep_dir = config.hydra.sweep.dir
        if parent_run_id(sweep_dir):
            return
        study = (cfg.get("tracking") or {}).get("study")
        create_parent(
            cfg, sweep_dir, name=study or f"multirun {Path(sweep_dir).name}", tags={"study": study or ""}
        )

    def on_multirun_end(self, config, **kwargs) -> None:
        if _optuna_sweep(config):
            return  # the sweeper closes the study's parent run when no trial is left
        sweep_dir = config.hydra.sweep.dir
        run_id = parent_run_id(sweep_dir)
        if not run_id:
            return
        tr = config.get("tracking") or {}
        client = _client(resolve_uri(tr.get("uri")))
        client.set_terminated(run_id, status="FINISHED")


@contextmanager
def job_run(cfg: Mapping, overrides: list[str], sweep_dir: str | None, tags: dict | None = None):
    """The MLflow run of one job: created before the pipeline starts, FAILED if it raises."""
    tr = cfg.get("tracking") or {}
    if not tr.get("enabled", True):
        yield None
        return
    parent = parent_run_id(sweep_dir) if sweep_dir else None
    run = Run(
        resolve_uri(tr.get("uri")),
        tr.get("experiment", "exatrkx"),
        run_name=tr.get("run_name"),
        parent_id=parent,
        tags={**provenance_tags(), **(tags or {})},
    )
    run.log_params(flatten(cfg))
    try:
        yield run
    except BaseException as exc:
        if type(exc).__name__ == "TrialPruned":  # stopped by the Optuna pruner: not an error
            run.set_tags({"optuna.state": "PRUNED", "status_reason": str(exc)[:250] or "pruned"})
            run.finish("KILLED")
        else:
            run.fail(exc)
        raise
    run.finish()


# ------------------------------------------------------------------- studies ----


class StudyParent:
    """The MLflow parent run of an Optuna study. Its id is a user attribute of the study,
    so every worker, and every rerun that continues the study, logs its trials under the
    same parent; the sweep directory's parent file points the jobs at it."""

    def __init__(self, uri: str, run_id: str):
        self.uri = uri
        self.run_id = run_id
        self.client = _client(uri)

    @classmethod
    def open(cls, tr: Mapping, study, sweep_dir: str | Path, storage: str) -> StudyParent:
        from .sweeper.storage import redact

        uri = resolve_uri(tr.get("uri"))
        check_reachable(uri)
        client = _client(uri)
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id:
            try:
                client.update_run(run_id, status="RUNNING")
            except Exception:  # deleted, or another tracking store than before
                run_id = None
        if not run_id:
            run = Run(
                uri,
                tr.get("experiment", "exatrkx"),
                run_name=f"study {study.study_name}",
                tags={
                    "role": "parent",
                    "study": study.study_name,
                    "optuna_storage": redact(storage),
                    "sweep_dir": str(Path(sweep_dir).resolve()),
                    **provenance_tags(),
                },
            )
            run_id = run.run_id
            study.set_user_attr("mlflow_parent_run_id", run_id)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(sweep_dir) / PARENT_FILE).write_text(run_id)
        return cls(uri, run_id)

    def trial_finished(self, trial, judged) -> None:
        """Tag the trial's MLflow run with the state and values Optuna recorded."""
        # the job set it in another process; Trial.user_attrs is the trial's copy from when
        # the worker took it, so read the storage's
        attrs = trial.study._storage.get_trial(trial._trial_id).user_attrs
        run_id = attrs.get("mlflow_run_id")
        if not run_id:
            return
        tags = {"optuna.state": judged.state}
        if judged.values:
            tags["optuna.values"] = json.dumps(judged.values)
        if judged.reason:
            tags["optuna.reason"] = judged.reason[:5000]
        try:
            from mlflow.entities import RunTag

            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        except Exception:
            pass

    def finish(
        self, study, metrics: list[str], sweep_dir: str | Path, results_file: Path, table: str
    ) -> None:
        """Results file, trials table and Optuna's figures on the parent run; FINISHED once
        no trial of the study is queued or running."""
        from optuna.trial import TrialState

        from .sweeper import results

        d = Path(sweep_dir)
        for name in (results_file, d / "trials.csv"):
            if Path(name).exists():
                self.client.log_artifact(self.run_id, str(name))
        self.client.log_text(self.run_id, table + "\n", "trials.txt")
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in results.figures(study, metrics).items():
                path = Path(tmp) / f"{name}.html"
                fig.write_html(path, include_plotlyjs="cdn")
                self.client.log_artifact(self.run_id, str(path), "optuna")
        front = results.best(study)
        m: dict[str, float] = {f"n_{k.lower()}": v for k, v in results.counts(study).items()}
        if len(metrics) == 1 and front:
            m[f"best_{metrics[0]}"] = front[0].value
        elif front:
            m["pareto_front_size"] = len(front)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in m.items()])
        pending = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if not pending:
            self.client.set_terminated(self.run_id, status="FINISHED")
