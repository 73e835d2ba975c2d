"""``hydra/sweeper=optuna``: the settings of exatrkx-sweeps' Optuna sweeper.

What to search lives in study files (``study=NAME``); these keys override a study file
for one command (``hydra.sweeper.n_trials=40``) or tune the worker.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.exatrkx_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # a study file: NAME (./studies or the packaged ones) or a path; null: the command-line grid.
    # Defaults to the app's top-level `study` key (study=NAME), where the app has one.
    study: Any = "${oc.select:study,null}"
    study_name: Any = None  # default: the study file's name (or the sweep directory for a command-line grid)
    storage: Any = None  # default: sqlite at $EXATRKX_OPTUNA_DB or ~/.exatrkx/optuna.db
    n_trials: Any = None  # total number of trials (a rerun runs only the missing ones)
    max_failures: Any = None
    max_retry: Any = None
    objectives: Any = None  # e.g. {purity: maximize}; default: the study file's, else eff_tech_pt0.5
    kind: Any = None  # scan (every point once, curves) or search; default: the study file's, else
    # scan for a command-line grid
    n_jobs: Any = None  # trials launched together; null: the launcher's n_jobs, else 1
    seed: Any = None  # base of the per-trial sampler seed; default: the study file's sampler seed, else 0
    heartbeat_interval: float = 10.0  # s between heartbeats of a running trial
    grace_period: float = 60.0  # s without heartbeat after which a trial's worker counts as dead
    poll_interval: float = 2.0  # s between looks at other workers' trials
    params: dict[str, Any] = field(default_factory=dict)  # extra search space, key: override value
    trial: Any = None  # set by the sweeper for each job: its trial number


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="exatrkx_sweeps"
)
