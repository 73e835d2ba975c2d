"""MLflow runs: the run wrapper, the run of one job, and parent runs of sweeps.

A multirun or a study has one parent run; each job is a child of it, also when jobs
run in other processes: the parent's id is written to the sweep directory
(:data:`PARENT_FILE`), where every job finds it. :func:`open_parent` is the one way to
create a parent run or take an existing one up again.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy
import psutil
import torch
from mlflow.entities import Metric, Param, RunTag

from .. import __version__
from ..errors import Terminated, TrackingError
from ..redaction import redact
from .store import check_reachable, client, experiment_id, resolve_uri

PARENT_FILE = ".mlflow_parent_run"
# what MLflow's client says when the server or database is gone (after its retries), or
# died while it answered (the body cut short: requests reads it after urllib3's retries)
_NO_ANSWER = (
    "Max retries exceeded",
    "Connection refused",
    "Connection reset",
    "Connection aborted",
    "Connection broken",
    "RemoteDisconnected",
    "timed out",
    "OperationalError",
)
# a tag with a fresh token on every run this package creates: a creation whose answer was
# lost is found again by it instead of being repeated (and a repeat is deleted)
TOKEN_TAG = "creation_token"


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


# where a run is logged and cached, not what it computes: never params (they would be
# axes in MLflow's comparisons and its parallel coordinates)
BOOKKEEPING = ("tracking.", "cache.", "study")


def run_params(cfg: Mapping) -> dict[str, str]:
    """The run's settings as MLflow params: every key but the bookkeeping ones."""
    return {k: v for k, v in flatten(cfg).items() if not k.startswith(BOOKKEEPING)}


def run_name(overrides: list[str], trial: int | None = None) -> str:
    """A run's name from what it changed: ``gnn.iterations=6 filter.cut=0.1``, ``default``
    for none, ``trial 3: ...`` for a trial (bookkeeping overrides left out)."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", *BOOKKEEPING))]
    text = " ".join(shown) or "default"
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"trial {trial}: {text}" if trial is not None else text


def provenance_tags() -> dict[str, str]:
    tags = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "host": platform.node(),
        "exatrkx_sweeps": __version__,
    }
    for pkg in ("torch_geometric", "mlflow", "optuna", "hydra"):
        try:
            tags[pkg] = __import__(pkg).__version__
        except Exception:
            pass
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            tags["git_commit"] = commit.stdout.strip()
    except Exception:
        pass
    return tags


class Run:
    """One MLflow run: a job of a sweep, a single run, or a sweep's parent."""

    def __init__(self, uri: str, run_id: str, wait: float = 0.0):
        self.uri = uri
        self.run_id = run_id
        self.wait = wait  # seconds each call waits for a store that stopped answering
        self.client = client(uri)

    @classmethod
    def create(
        cls,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        parent_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> Run:
        check_reachable(uri, wait=wait)  # wait: a job of a sweep outlives a restarting server
        mlflow = client(uri)
        exp_id = answered(uri, experiment_id, mlflow, uri, experiment, wait=wait)
        token = uuid.uuid4().hex
        all_tags = {**(tags or {}), TOKEN_TAG: token}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id

        def mine() -> list:
            return mlflow.search_runs([exp_id], f"tags.{TOKEN_TAG} = '{token}'", max_results=10)

        attempts = 0

        def create():
            # an attempt whose answer was lost (the server died as it answered) may have
            # created the run: take that one rather than a second
            nonlocal attempts
            found = mine() if attempts else []
            attempts += 1
            return found[0] if found else mlflow.create_run(exp_id, run_name=run_name, tags=all_tags)

        run_id = answered(uri, create, wait=wait).info.run_id
        # MLflow's client repeats a request whose answer was lost: a run created twice
        for other in answered(uri, mine, wait=wait):
            if other.info.run_id != run_id:
                answered(uri, mlflow.delete_run, other.info.run_id, wait=wait)
        return cls(uri, run_id, wait=wait)

    # -- logging
    def _call(self, method: str, *args, **kwargs):
        """``self.client.<method>(...)``; a server or database that stopped answering
        (after MLflow's own retries) is waited for (``self.wait``), then one
        TrackingError naming it."""
        return answered(self.uri, getattr(self.client, method), *args, wait=self.wait, **kwargs)

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and v == v]
        for i in range(0, len(items), 1000):
            self._call("log_batch", self.run_id, metrics=items[i : i + 1000])

    def log_curve(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        self.log_metrics({f"{stage}/{k}": v for k, v in metrics.items()}, step=epoch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("log_batch", self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        self._call("log_text", self.run_id, text, name)

    def log_file(self, path: str | Path, directory: str | None = None) -> None:
        self._call("log_artifact", self.run_id, str(path), directory)

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", self.run_id, status=status)

    def fail(self, error: BaseException | str) -> None:
        msg = redact(str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}")
        try:
            self.set_tags(
                {"error": msg[:5000], "status_reason": msg.splitlines()[0][:250] if msg else "failed"}
            )
        finally:
            self.finish("FAILED")


def parent_run_id(sweep_dir: str | Path) -> str | None:
    f = Path(sweep_dir) / PARENT_FILE
    return f.read_text().strip() if f.exists() else None


def open_parent(
    uri: str,
    experiment: str,
    sweep_dir: str | Path,
    name: str,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    wait: float = 0.0,
) -> Run:
    """The parent run of a sweep: ``run_id`` taken up again (RUNNING) when it still
    exists in this store, else a new one; its id is written to the sweep directory.
    ``wait``: seconds each call waits for a store that stopped answering."""
    run = None
    if run_id:
        check_reachable(uri, wait=wait)
        try:
            answered(uri, client(uri).update_run, run_id, status="RUNNING", wait=wait)
            run = Run(uri, run_id, wait=wait)
        except TrackingError:
            raise
        except Exception:  # deleted, or another tracking store than before
            run = None
    if run is None:
        all_tags = {
            "role": "parent",
            "sweep_dir": str(Path(sweep_dir).resolve()),
            **(tags or {}),
            **provenance_tags(),
        }
        run = Run.create(uri, experiment, run_name=name, tags=all_tags, wait=wait)
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    # atomically: a trial of another worker reading it mid-write would see no parent
    tmp = d / f"{PARENT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(run.run_id)
    tmp.replace(d / PARENT_FILE)
    return run


def answered(uri: str, call, *args, wait: float = 0.0, **kwargs):
    """``call(...)`` on the store at ``uri``. A server or database that stopped answering
    (after MLflow's own retries), or died as it answered, is waited for up to ``wait``
    seconds and the call made again (a job of a sweep outlives a server's restart:
    ``tracking.wait_s``); then one TrackingError naming it. Every call given here is
    safe to repeat: MLflow ignores a param, tag or metric logged again unchanged."""
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            reason = next((s for s in _NO_ANSWER if s in text), None)
            if reason is None:
                raise
            left = deadline - time.monotonic()
            if left > 0:
                if not told:
                    print(
                        f"warning: tracking.uri={redact(uri)}: no answer ({reason}); waiting up "
                        f"to {left:.0f} s (tracking.wait_s) to make the call again.",
                        file=sys.stderr,
                    )
                    told = True
                time.sleep(min(1.0, left))
                try:
                    check_reachable(uri, wait=max(0.0, deadline - time.monotonic()))
                    continue
                except TrackingError:
                    pass
            raise TrackingError(
                f"tracking.uri={redact(uri)}: the tracking store stopped answering ({reason}, "
                f"after MLflow's retries: MLFLOW_HTTP_REQUEST_MAX_RETRIES"
                + (f", and {wait:.0f} s of tracking.wait_s" if wait else "")
                + ")."
            ) from None


def reap_orphans(uri: str, experiment: str, wait: float = 0.0) -> list[str]:
    """End as KILLED the runs of this host still RUNNING whose process is gone (killed
    outright, SIGKILL: nothing could close them). Parent runs are left to their sweeps."""
    mlflow = client(uri)
    exp = answered(uri, mlflow.get_experiment_by_name, experiment, wait=wait)
    if exp is None:
        return []
    host = platform.node()
    running = answered(
        uri,
        mlflow.search_runs,
        [exp.experiment_id],
        f"attributes.status = 'RUNNING' and tags.host = '{host}'",
        max_results=1000,
        wait=wait,
    )
    reaped = []
    for r in running:
        pid = r.data.tags.get("pid")
        if (
            r.data.tags.get("role") == "parent"
            or not (pid and pid.isdigit())
            or _alive(int(pid), r.info.start_time)
        ):
            continue
        reason = f"its process (pid {pid} on {host}) ended without closing the run: killed"
        answered(uri, mlflow.log_batch, r.info.run_id, tags=[RunTag("status_reason", reason)], wait=wait)
        answered(uri, mlflow.set_terminated, r.info.run_id, status="KILLED", wait=wait)
        reaped.append(r.info.run_id)
    return reaped


def _alive(pid: int, started_ms: int) -> bool:
    """Whether ``pid`` is the process that started a run at ``started_ms`` (not a reuse)."""
    try:
        return psutil.Process(pid).create_time() * 1000 <= started_ms + 1000
    except psutil.Error:
        return False


@contextmanager
def job_run(
    cfg: Mapping,
    sweep_dir: str | None,
    tags: Mapping[str, str] | None = None,
    stopped: tuple[type[BaseException], ...] = (),
) -> Iterator[Run | None]:
    """The MLflow run of one job: created before the pipeline starts (params logged),
    FINISHED at the end, FAILED with its error if the block raises, KILLED with the
    reason if it raises one of ``stopped`` (a trial stopped by its pruner) or the process
    is terminated (:class:`~exatrkx_sweeps.errors.Terminated`). None when
    ``tracking.enabled`` is false. Runs of this host orphaned by a killed process are
    closed first."""
    tr = cfg.get("tracking") or {}
    if not tr.get("enabled", True):
        yield None
        return
    uri, experiment = resolve_uri(tr.get("uri")), tr.get("experiment", "exatrkx")
    # a job of a sweep waits for a restarting server, at its start and at every call
    wait = float(tr.get("wait_s", 120)) if sweep_dir else 0.0
    run = Run.create(
        uri,
        experiment,
        run_name=tr.get("run_name"),
        parent_id=parent_run_id(sweep_dir) if sweep_dir else None,
        tags={**provenance_tags(), "pid": str(os.getpid()), **(tags or {})},
        wait=wait,
    )
    reap_orphans(uri, experiment, wait=wait)  # this run's own process is alive: it stays
    run.log_params(run_params(cfg))
    monitor = _system_metrics(run, tr)
    try:
        yield run
    except (*stopped, Terminated, KeyboardInterrupt) as exc:
        with _store_lost(run):
            run.set_tags({"status_reason": redact(str(exc))[:250] or type(exc).__name__})
            run.finish("KILLED")
        raise
    except BaseException as exc:
        with _store_lost(run):
            run.fail(exc)
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    run.finish()


@contextmanager
def _store_lost(run: Run) -> Iterator[None]:
    """Ending a failed run where the store may be gone with it: one warning line, and the
    run's own error goes on (the next run on this host closes it, reap_orphans)."""
    try:
        yield
    except TrackingError as exc:
        print(f"warning: run {run.run_id} could not be closed: {exc}", file=sys.stderr)


def _system_metrics(run: Run, tr: Mapping):
    """MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) as time
    series of the run when ``tracking.system_metrics`` is on, sampled every
    ``tracking.system_metrics_interval`` seconds; None when off."""
    if not tr.get("system_metrics"):
        return None
    # the monitor behind mlflow.start_run(log_system_metrics=True), for a run made by a client
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=float(tr.get("system_metrics_interval", 10)), tracking_uri=run.uri
    )
    monitor.start()
    return monitor
