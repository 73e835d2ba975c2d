"""The Hydra side of the Optuna sweeper: study file + command line -> Runner -> launcher.

The search logic lives in :mod:`exatrkx_sweeps.sweeper`; this class only turns Hydra's
arguments and launcher into what the runner needs, and reports at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from exatrkx_sweeps.errors import Terminated, TrackingError, raise_terminated
from exatrkx_sweeps.redaction import redact, redact_logs
from exatrkx_sweeps.report import unknown_metric

# Hydra imports every plugin whenever it composes a config. Where optuna is absent (a GPU
# node with only what benchmarks/bench_pu200_gpu.py needs) this one still loads, so that
# Hydra does not warn that it is "incompatible or buggy"; only a sweep with it fails.
try:
    from exatrkx_sweeps.sweeper import bridge, results, study
    from exatrkx_sweeps.sweeper.runner import Outcome, Runner, SweepError
    from exatrkx_sweeps.sweeper.storage import StorageError, resolve
except ModuleNotFoundError as exc:
    if exc.name != "optuna":
        raise
    _NO_OPTUNA = True
else:
    _NO_OPTUNA = False

log = logging.getLogger("exatrkx_sweeps.sweeper")

# keys of hydra.sweeper that override the study file's
_STUDY_KEYS = ("study_name", "storage", "n_trials", "max_failures", "max_retry", "objectives", "kind")


class OptunaSweeper(Sweeper):
    # the study keeps its MLflow parent run (shared by workers and reruns): the multirun
    # callback of exatrkx_sweeps.tracking leaves it to the sweeper
    owns_parent_run = True

    def __init__(self, **conf: Any) -> None:
        super().__init__()
        self.conf = {k: v for k, v in conf.items() if k != "_target_"}
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if _NO_OPTUNA:
            sys.exit("error: hydra/sweeper=optuna needs optuna, which this Python lacks: pip install -e .")
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ----------------------------------------------------------------------------
    def _spec(self, arguments: list[str], sweep_dir: Path) -> study.StudySpec:
        conf = self.conf
        params = OmegaConf.to_container(conf.get("params"), resolve=True) if conf.get("params") else {}
        extra = [f"{k}={study._text(v)}" for k, v in (params or {}).items()]
        settings = {k: conf.get(k) for k in _STUDY_KEYS if conf.get(k) is not None}
        if "objectives" in settings and not isinstance(settings["objectives"], str):
            settings["objectives"] = OmegaConf.to_container(settings["objectives"], resolve=True)
        # a command-line grid is its sweep directory's study: rerunning into the same directory
        # (hydra.sweep.dir=...) resumes it, a new directory starts afresh
        default_name = "multirun:" + str(sweep_dir.resolve()).replace(" ", "_")
        return study.load(conf.get("study"), [*extra, *arguments], default_name, settings=settings)

    def _launch(self, jobs: list[list[str]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(jobs)
        valid = []
        for i, job in enumerate(jobs):
            try:
                self.validate_batch_is_legal([job])
                valid.append(i)
            except Exception as exc:  # a config that cannot be composed: that trial fails, not the sweep
                outcomes[i] = Outcome(error=exc)
        if valid:
            rets = self.launcher.launch([jobs[i] for i in valid], initial_job_idx=self.job_idx)
            self.job_idx += len(valid)
            for i, r in zip(valid, rets, strict=True):
                if r.status == JobStatus.COMPLETED:
                    outcomes[i] = Outcome(value=r._return_value)
                else:
                    err = r._return_value
                    outcomes[i] = Outcome(
                        error=err if isinstance(err, BaseException) else RuntimeError(str(err))
                    )
        return outcomes  # type: ignore[return-value]

    # ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        # SIGTERM (a SLURM time limit, a kill) fails the running trials and queues them again
        signal.signal(signal.SIGTERM, raise_terminated)
        redact_logs()  # Hydra's launcher logs every job's overrides, URIs included
        try:
            return self._sweep(arguments)
        except (study.StudyError, StorageError, SweepError, TrackingError) as exc:
            message = f"error: {exc}"
        except Terminated as exc:
            message = f"error: {exc}; the running trials are queued again for the next run"
        # one line and a failing exit code (Hydra would add lines to an exception)
        print(redact(message), file=sys.stderr)
        sys.exit(1)

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        cfg = self.config
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        spec = self._spec(list(arguments), sweep_dir)
        if {"data", "gnn", "tracks"} <= set(cfg):  # the pipeline: its metric names are known
            bad = unknown_metric(spec.metric_names)
            if bad:
                raise study.StudyError(f"objectives: {bad}.")
        url = resolve(spec.storage)
        tracking = _tracking_section(cfg)
        _hide_secrets(cfg)
        runner = Runner(
            spec,
            self._launch,
            storage=url,
            n_jobs=batch_size(self.conf.get("n_jobs"), cfg.hydra.get("launcher") or {}),
            seed=self.conf.get("seed"),
            heartbeat_interval=float(self.conf.get("heartbeat_interval") or 10),
            grace_period=float(self.conf.get("grace_period") or 60),
            poll_interval=float(self.conf.get("poll_interval") or 2),
            job_overrides=lambda n: [f"hydra.sweeper.trial={n}", f"hydra.sweep.subdir=trial-{n}"],
            log=log.info,
        )
        if spec.scan:
            what = f"a scan of {len(spec.params)} parameters, metrics {', '.join(spec.metric_names)}"
        else:
            sampler = "grid" if spec.grid else spec.sampler["name"]
            objectives = ", ".join(f"{m} ({d})" for m, d in spec.objectives)
            what = f"{sampler}, {len(spec.params)} searched parameters, objectives {objectives}"
        log.info(f"study {spec.name} ({what}), storage {redact(url)}")
        optuna_study = runner.open()
        bridge.write_context(sweep_dir, url, spec.name, spec.pruner)
        parent = None
        if tracking is not None:
            # imported here: Hydra imports this module to discover plugins in every app,
            # and only tracked sweeps need MLflow
            from exatrkx_sweeps.sweeper.parent import StudyParent

            parent = StudyParent.open(tracking, optuna_study, sweep_dir, url)
            runner.on_finished = parent.trial_finished
        error: BaseException | None = None
        try:
            runner.run()
            n = results.counts(optuna_study)
            if not n.get("COMPLETE") and n.get("FAIL"):
                last = next((j.reason for _, j in reversed(runner.finished) if j.state == "FAIL"), "")
                error = SweepError(f"no trial completed ({n['FAIL']} failed). Last error: {last}")
        except SweepError as exc:
            error = exc
        finally:
            path = results.write(optuna_study, spec.metric_names, url, sweep_dir)
            table = results.table(optuna_study, spec.metric_names)
            print(table)
            n = results.counts(optuna_study)
            log.info(
                f"study {spec.name}: "
                + ", ".join(f"{v} {k}" for k, v in sorted(n.items()))
                + f"; results in {path}"
            )
            if parent is not None:
                try:
                    parent.finish(optuna_study, spec.metric_names, sweep_dir, path, table)
                    print("\n".join(parent.pointers(optuna_study)))
                except TrackingError as exc:  # the results are in the sweep directory all the same
                    print(f"warning: the study's MLflow parent run was not updated: {exc}", file=sys.stderr)
        if error is not None:
            raise error
        return None


def _hide_secrets(cfg: DictConfig) -> None:
    """Credentials out of what Hydra saves for this sweep and its jobs (multirun.yaml,
    each job's hydra.yaml): the storage URL and the recorded overrides. Jobs find the
    storage in the sweep's context file (0600); their own overrides keep real values."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        if isinstance(cfg.hydra.sweeper.get("storage"), str):
            cfg.hydra.sweeper.storage = redact(cfg.hydra.sweeper.storage)
        for kind in ("hydra", "task"):
            cfg.hydra.overrides[kind] = [redact(o) for o in cfg.hydra.overrides[kind]]


def batch_size(n_jobs: Any, launcher: Any) -> int:
    """Trials launched together: ``hydra.sweeper.n_jobs``, else the launcher's ``n_jobs``
    (joblib; negative: all cores) or ``array_parallelism`` (submitit), else 1."""
    if n_jobs:
        return int(n_jobs)
    for key in ("n_jobs", "array_parallelism"):
        n = launcher.get(key)
        if n is not None:
            return (os.cpu_count() or 1) if int(n) < 0 else max(1, int(n))
    return 1


def _tracking_section(cfg: DictConfig) -> dict | None:
    """The task's MLflow settings, when the task logs to MLflow."""
    if "tracking" not in cfg:
        return None
    tr = OmegaConf.to_container(cfg.tracking, resolve=True)
    if not isinstance(tr, dict) or not tr.get("enabled", True):
        return None
    return tr
