"""The Optuna internals the sweeper relies on, each behind one function (optuna >=5,<6).

Optuna's public API runs the trials of a study inside the process that asks for them
(``study.optimize``, or ``study.ask`` / ``study.tell``). This sweeper queues trials in a
shared storage and hands them to jobs in other processes and on other nodes, which
report to their own trial, and it fails the trials of workers that died. That needs a
handful of storage operations on a trial *by id* that the public API does not expose;
they are all here, with the reason for each, so that an Optuna upgrade is checked in
one file (the version cap in pyproject.toml makes that upgrade deliberate).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def _storage(study: optuna.Study) -> BaseStorage:
    # Study keeps its storage private; the operations below are public methods of the
    # storage (BaseStorage), reached through it.
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    # The storage's id of a trial (unique across studies). FrozenTrial and Trial keep it
    # private; the storage methods below take it, not the trial number.
    return trial._trial_id


def trial_id_of(study: optuna.Study, number: int) -> int:
    # A job knows its trial by number (hydra.sweeper.trial=N); the public API maps a
    # number to an id only through the cached trial list of this process.
    return _storage(study).get_trial_id_from_study_id_trial_number(study._study_id, number)


def handle(study: optuna.Study, trial_id: int) -> optuna.Trial:
    # A Trial object for a trial this process did not create with study.ask() (a queued
    # slot the sweeper claimed, or a job's own trial). Optuna documents the constructor
    # as internal; report(), should_prune() and suggest_*() work on it as on any trial.
    return optuna.Trial(study, trial_id)


def fresh(study: optuna.Study, trial_id: int) -> FrozenTrial:
    # The trial as the storage holds it now: study.trials may be a copy cached before
    # another process (the job, another worker) wrote its attributes.
    return _storage(study).get_trial(trial_id)


def claim(study: optuna.Study, trial: FrozenTrial) -> bool:
    """WAITING -> RUNNING for this queued trial; False when another worker took it."""
    # study.ask() pops the oldest WAITING trial and samples it at once; the sweeper must
    # choose which queued slot it runs (slots beyond the budget stay queued) and samples
    # with a per-trial seed afterwards. The storage makes this transition atomic.
    try:
        return _storage(study).set_trial_state_values(trial_id(trial), state=TrialState.RUNNING)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail(study: optuna.Study, trial_id: int) -> bool:
    """RUNNING -> FAIL for a trial whose worker died; False when it finished meanwhile."""
    # study.tell() checks and writes in two steps, so two workers reaping the same dead
    # trial can both pass its check; the storage's own transition fails for the second.
    try:
        return _storage(study).set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def set_system_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    # Heartbeats and budget slots are system attributes (not shown as results);
    # Trial.set_system_attr was removed in Optuna 3, the storage method remains.
    _storage(study).set_trial_system_attr(trial_id, key, value)


def set_user_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    # User attributes of a trial held by no Trial object in this process (a dead
    # worker's trial, or a finished job's metrics written by the sweeper).
    _storage(study).set_trial_user_attr(trial_id, key, value)
