"""MLflow tracking of runs and sweeps.

* :mod:`.store`: the tracking URI (a SQLite file at an absolute path by default, or an
  MLflow server), its checks, the client;
* :mod:`.run`: the run wrapper, the run of one job, parent runs of sweeps;
* :mod:`.artifacts`: what a finished pipeline run logs (metrics, tags, files, plots);
* :mod:`.callback`: the Hydra callback that gives a multirun its parent run.
"""
