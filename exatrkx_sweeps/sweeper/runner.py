"""The sweep loop of one worker: take queued trials, launch them, record their outcome.

A trial's life (every step a write to the shared storage, so that workers and jobs in
other processes or on other nodes agree):

    queue      the worker that creates the study (or raises n_trials) adds one WAITING
               trial per budget slot; a grid point's values are fixed in it
    claim      a worker takes a WAITING trial of this run's budget: WAITING -> RUNNING in
               one storage transition, then samples the free parameters (per-trial seed)
    heartbeat  while the job runs, the worker stamps the trial every heartbeat_interval
    report     the job opens the study by name and reports intermediate values to its own
               trial (bridge.py); the pruner may stop it
    finish     the job's metrics (or error) come back through the launcher: COMPLETE with
               the objectives, FAIL with the reason, or PRUNED
    retry      a RUNNING trial silent for grace_period is failed by whichever worker sees
               it, and queued again with the same values (up to max_retry); so is a
               trial whose own job was stopped (a SLURM time limit, scancel)

How the promises are kept:

* **n_trials is a total.** The study holds exactly one queued (WAITING) trial per
  budgeted slot, created once by the worker that creates the study (or that raises
  ``n_trials`` on a rerun). Workers only ever *pop* queued trials; they never create
  unbudgeted ones. Rerunning a finished study finds nothing queued and stops; a
  rerun after a crash runs only what is left.
* **A grid runs every point once.** Each grid point is a queued trial with its values
  fixed; popping is an atomic WAITING -> RUNNING transition in the storage, so two
  workers can never take the same point.
* **Dead workers.** Every worker writes a heartbeat (a trial attribute, so that SQLite,
  journal files and PostgreSQL all work the same way) for the trials it runs. A RUNNING
  trial whose heartbeat is older than ``grace_period`` is failed by whichever worker
  sees it, and queued again with the same values up to ``max_retry`` times (Optuna's
  ``failed_trial`` / ``retry_history`` attributes record the lineage).
* **Failures.** A job that raises is FAIL with its error as ``fail_reason``; a NaN or
  missing objective is FAIL too; ``optuna.TrialPruned`` is PRUNED. The sweep goes on
  until more than ``max_failures`` trials of this worker failed.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..errors import JobTerminated, Terminated, one_line
from . import optuna_compat as compat
from .space import grid_points, overrides_for
from .storage import claim_lock, open_storage
from .study import StudySpec, make_pruner, make_sampler

SLOT = "exatrkx:slot"
HEARTBEAT = "exatrkx:heartbeat"
BUDGET = "exatrkx:n_trials"
REASON = "fail_reason"


class SweepError(RuntimeError):
    """The sweep stopped (failure budget spent, incompatible study); the message says why."""


@dataclass
class Outcome:
    """What a launched job gave back: a return value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None


@dataclass
class Judged:
    state: str  # COMPLETE, FAIL, PRUNED
    values: list[float] | None
    reason: str
    metrics: dict[str, float]
    fatal: bool = False  # every trial would fail the same way (an objective the task never reports)


def judge(outcome: Outcome, objectives: Sequence[str]) -> Judged:
    """The trial state and objective values for what a job gave back."""
    if outcome.error is not None:
        if isinstance(outcome.error, optuna.TrialPruned):
            return Judged("PRUNED", None, str(outcome.error) or "pruned", {})
        return Judged("FAIL", None, one_line(outcome.error, with_type=True), {})
    v = outcome.value
    metrics: dict[str, float] = {}
    if isinstance(v, Mapping):
        for k, x in v.items():
            if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
                metrics[str(k)] = float(x)
        missing = [m for m in objectives if m not in v]
        if missing:
            shown = ", ".join(sorted(map(str, v))[:12])
            reason = f"objective {missing[0]!r} is not among the job's metrics ({shown}, ...)"
            return Judged("FAIL", None, reason, metrics, fatal=True)
        raw = [v[m] for m in objectives]
    elif isinstance(v, int | float) and not isinstance(v, bool):
        raw = [v]
    elif isinstance(v, Sequence) and not isinstance(v, str):
        raw = list(v)
    else:
        return Judged("FAIL", None, f"the job returned {type(v).__name__}, not metrics", metrics)
    if len(raw) != len(objectives):
        return Judged(
            "FAIL", None, f"the job returned {len(raw)} values for {len(objectives)} objectives", metrics
        )
    values = []
    for name, x in zip(objectives, raw, strict=True):
        try:
            x = float(x)
        except (TypeError, ValueError):
            return Judged("FAIL", None, f"objective {name} is {x!r}, not a number", metrics)
        if not math.isfinite(x):
            return Judged("FAIL", None, f"objective {name} is {x}", metrics)
        values.append(x)
    return Judged("COMPLETE", values, "", metrics)


class Runner:
    """One worker of a study. ``launch(list of override lists) -> list of Outcome``."""

    def __init__(
        self,
        spec: StudySpec,
        launch: Callable[[list[list[str]]], list[Outcome]],
        storage: str | None = None,
        n_jobs: int = 1,
        seed: int | None = None,
        heartbeat_interval: float = 10.0,
        grace_period: float = 60.0,
        poll_interval: float = 1.0,
        job_overrides: Callable[[int], list[str]] | None = None,
        on_finished: Callable[[int, Judged], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.spec = spec
        self.launch = launch
        self.url = storage if storage is not None else spec.storage
        self.n_jobs = max(1, int(n_jobs))
        # base of the per-trial sampler seeds: the argument, else the study file's sampler seed
        self.seed = int(seed if seed is not None else spec.sampler.get("seed") or 0)
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.poll_interval = float(poll_interval)
        self.job_overrides = job_overrides or (lambda number: [])
        self.on_finished = on_finished
        self.log = log
        self.failures = 0
        self.n_target = 0
        self.finished: list[tuple[int, Judged]] = []
        self._active: set[int] = set()
        self._lock = threading.Lock()
        self.study = None

    # ------------------------------------------------------------------ study --
    def open(self):
        """Create the study (and its queued slots) or join it; returns the Optuna study."""

        storage = open_storage(self.url)
        spec = self.spec
        sampler = make_sampler(spec.sampler, spec.grid, self.seed)
        pruner = make_pruner(spec.pruner)
        created = False
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=spec.name,
                directions=spec.directions,
                sampler=sampler,
                pruner=pruner,
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
            have = [d.name.lower() for d in study.directions]
            if have != spec.directions:
                raise SweepError(
                    f"study {spec.name!r} already exists in the storage with directions {have}, not "
                    f"{spec.directions}; give this search another name (hydra.sweeper.study_name=...)."
                ) from None
        self.study = study
        if created:
            study.set_user_attr("objectives", spec.metric_names)
            study.set_user_attr("kind", spec.kind)
            study.set_user_attr("title", spec.title or spec.name)
            with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(spec.metric_names)  # Optuna's dashboard names its axes
            if spec.description:
                study.set_user_attr("description", spec.description)
        else:
            self._wait_for_budget()
        with claim_lock(self.url):
            self._ensure_slots()
        return study

    def _target(self) -> tuple[int, list[dict] | None]:
        spec = self.spec
        if spec.grid:
            points = grid_points(spec.params)
            n = len(points) if spec.n_trials is None else min(spec.n_trials, len(points))
            if spec.n_trials is not None and spec.n_trials > len(points):
                self.log(
                    f"n_trials={spec.n_trials} is more than the {len(points)} grid points: running each once."
                )
            return n, points
        return int(spec.n_trials), None

    def _wait_for_budget(self, timeout: float = 30.0) -> None:
        """A worker that joins a study being created waits until its slots are queued."""
        t0 = time.time()
        while BUDGET not in self.study.user_attrs and time.time() - t0 < timeout:
            time.sleep(0.2)

    def _ensure_slots(self) -> None:

        study = self.study
        n, points = self._target()
        self.n_target = n
        have = {t.system_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
        missing = [i for i in range(n) if i not in have]
        for i in missing:
            attrs: dict[str, Any] = {SLOT: i}
            if points is not None:
                attrs["fixed_params"] = points[i]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs))
        if int(study.user_attrs.get(BUDGET, -1)) < n:
            study.set_user_attr(BUDGET, n)
        if missing and len(missing) < n:
            done = n - len(missing)
            self.log(f"study {self.spec.name}: {done} of {n} trials exist; queued the other {len(missing)}.")

    # --------------------------------------------------------------- trials --
    def _pop(self):

        study = self.study
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if t.system_attrs.get(SLOT, -1) >= self.n_target:
                continue  # queued by an earlier run with a larger n_trials: not in this run's total
            tid = compat.trial_id(t)
            with claim_lock(self.url):
                if compat.fresh(study, tid).state != TrialState.WAITING or not compat.claim(study, t):
                    continue
            with self._lock:
                self._active.add(tid)
            compat.set_system_attr(study, tid, HEARTBEAT, time.time())
            # a per-trial seed: reproducible, and parallel workers never propose the same point
            study.sampler = make_sampler(self.spec.sampler, self.spec.grid, self.seed * 100003 + t.number)
            trial = compat.handle(study, tid)
            try:
                values = {p.key: p.suggest(trial) for p in self.spec.params}
            except Exception as exc:
                self._tell(
                    trial,
                    Judged("FAIL", None, f"cannot suggest parameters: {one_line(exc, with_type=True)}", {}),
                )
                continue
            return trial, values
        return None

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_interval):
            with self._lock:
                ids = list(self._active)
            for trial_id in ids:
                try:
                    compat.set_system_attr(self.study, trial_id, HEARTBEAT, time.time())
                except Exception:  # finished meanwhile, or a transient storage error: next beat
                    pass

    def reap_stale(self) -> list[int]:
        """Fail RUNNING trials whose worker stopped beating; queue them again (max_retry)."""

        study = self.study
        now = time.time()
        failed = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            tid = compat.trial_id(t)
            if tid in self._active:
                continue
            last = t.system_attrs.get(HEARTBEAT)
            if last is None:
                last = t.datetime_start.timestamp() if t.datetime_start else now
            silent = now - float(last)
            if silent <= self.grace_period:
                continue
            try:
                compat.set_user_attr(
                    study,
                    tid,
                    REASON,
                    f"worker died: no heartbeat for {silent:.0f} s (grace period {self.grace_period:.0f} s)",
                )
            except Exception:  # finished meanwhile
                continue
            if not compat.fail(study, tid):
                continue  # another worker got there first
            failed.append(t.number)
            if self.on_finished:  # e.g. end the trial's MLflow run, which its dead job left RUNNING
                self.on_finished(
                    tid, Judged("FAIL", None, f"worker died: no heartbeat for {silent:.0f} s", {})
                )
            self._retry(compat.fresh(study, tid), "worker died")
        return failed

    def _retry(self, frozen, why: str) -> None:
        """Queue a failed trial again with the same values (Optuna's retry attributes)."""

        history = [*frozen.system_attrs.get("retry_history", []), frozen.number]
        if len(history) > self.spec.max_retry:
            self.log(f"trial {frozen.number}: {why}; not retried (max_retry={self.spec.max_retry} reached).")
            return
        attrs = {
            "failed_trial": history[0],
            "retry_history": history,
            "fixed_params": {**frozen.system_attrs.get("fixed_params", {}), **frozen.params},
        }
        if SLOT in frozen.system_attrs:
            attrs[SLOT] = frozen.system_attrs[SLOT]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs))
        self.log(
            f"trial {frozen.number}: {why}; queued again (retry {len(history)} of {self.spec.max_retry})."
        )

    def _tell(self, trial, judged: Judged) -> None:

        tid = compat.trial_id(trial)
        try:
            for k, v in judged.metrics.items():
                compat.set_user_attr(self.study, tid, k, v)
            if judged.reason:
                key = "prune_reason" if judged.state == "PRUNED" else REASON
                compat.set_user_attr(self.study, tid, key, judged.reason[:2000])
            state = getattr(TrialState, judged.state)
            self.study.tell(
                trial, values=judged.values if state == TrialState.COMPLETE else None, state=state
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            self.log(f"trial {trial.number} was already finished by another worker (heartbeat lost?).")
        finally:
            with self._lock:
                self._active.discard(tid)
        self.finished.append((trial.number, judged))
        if judged.state == "FAIL":
            self.failures += 1
        if self.on_finished:
            self.on_finished(tid, judged)

    # ----------------------------------------------------------------- loop --
    def run(self) -> None:
        """Run trials until none is queued or running (or the failure budget is spent)."""

        if self.study is None:
            self.open()
        spec = self.spec
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), daemon=True, name="optuna-heartbeat")
        beat.start()
        waited = False
        try:
            while True:
                self.reap_stale()
                if spec.max_failures is not None and self.failures > spec.max_failures:
                    last = next((j.reason for _, j in reversed(self.finished) if j.state == "FAIL"), "")
                    raise SweepError(
                        f"stopped: {self.failures} trials failed, more than "
                        f"max_failures={spec.max_failures}. Last error: {last}"
                    )
                batch = []
                while len(batch) < self.n_jobs:
                    popped = self._pop()
                    if popped is None:
                        break
                    batch.append(popped)
                if not batch:
                    running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if not running:
                        return
                    if not waited:
                        self.log(
                            f"waiting for {len(running)} trial(s) of other workers "
                            f"(a dead worker's trial is retried after {self.grace_period:.0f} s)"
                        )
                        waited = True
                    time.sleep(self.poll_interval)
                    continue
                waited = False
                self._run_batch(batch)
        finally:
            stop.set()

    def _run_batch(self, batch) -> None:
        jobs = []
        for trial, values in batch:
            searched = overrides_for(self.spec.params, values)
            self.log(f"trial {trial.number}: {' '.join(searched) or '(no searched parameters)'}")
            compat.set_user_attr(self.study, compat.trial_id(trial), "overrides", " ".join(searched))
            jobs.append([*self.spec.fixed, *searched, *self.job_overrides(trial.number)])
        try:
            outcomes = self.launch(jobs)
        except KeyboardInterrupt:
            for trial, _ in batch:
                self._tell(trial, Judged("FAIL", None, "interrupted (KeyboardInterrupt)", {}))
            raise
        except Terminated as exc:  # a time limit or a kill: the trial is not at fault, run it again
            for trial, _ in batch:
                self._tell(trial, Judged("FAIL", None, str(exc), {}))
                self._retry(compat.fresh(self.study, compat.trial_id(trial)), str(exc))
            raise
        except Exception as exc:  # the launcher lost its workers (a killed process, a lost node)
            for trial, _ in batch:
                self._tell(
                    trial, Judged("FAIL", None, f"launcher failed: {one_line(exc, with_type=True)}", {})
                )
                self._retry(compat.fresh(self.study, compat.trial_id(trial)), "launcher failed")
            return
        fatal = None
        for (trial, _), outcome in zip(batch, outcomes, strict=True):
            judged = judge(outcome, self.spec.metric_names)
            self._tell(trial, judged)
            if isinstance(outcome.error, JobTerminated):  # its SLURM job was stopped: run it again
                self._retry(compat.fresh(self.study, compat.trial_id(trial)), str(outcome.error))
            fatal = fatal or (judged.reason if judged.fatal else None)
            value = (
                ", ".join(f"{m}={v:.4g}" for m, v in zip(self.spec.metric_names, judged.values, strict=True))
                if judged.values
                else judged.reason
            )
            self.log(f"trial {trial.number}: {judged.state} {value}")
        if fatal:
            raise SweepError(
                f"stopped: {fatal}. Fix the study's objectives (metric names of the run report)."
            )
