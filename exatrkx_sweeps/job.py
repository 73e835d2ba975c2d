"""One job of ``python -m exatrkx_sweeps``, once its config is validated: the MLflow run,
the pipeline, the logged report and models, the summary, and how each failure ends.

Imported by ``__main__`` only after validation, so that a config error never waits for
torch, torch_geometric or MLflow to import.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import optuna
from hydra.types import RunMode

from . import pipeline
from .distributed import world_from_env
from .errors import ConfigError, Terminated, for_sweeper, one_line, stop_on_job_signals
from .export.bundle import save_stage
from .redaction import redact
from .stages.common import check_precision, resolve_device
from .tracking.artifacts import log_models, log_report
from .tracking.run import job_run, run_name

_EXPECTED_ERRORS = (ConfigError, ValueError, FileNotFoundError, RuntimeError)


def run_job(plain: dict, uri: str, link, hc):
    """Run the validated config ``plain``, logged to ``uri``; ``link``: its Optuna trial
    (or None), ``hc``: Hydra's config of this job. Returns the run's metrics."""
    stop_on_job_signals()
    world = world_from_env()
    if world.size > 1:  # the processes that train (srun's tasks, torchrun's ranks) as logged
        plain["train"]["devices"] = world.size
    if not world.main:  # another training process of this run: rank 0 logs and saves
        plain.setdefault("tracking", {})["enabled"] = False
        logging.getLogger().setLevel(logging.WARNING)
    log = logging.getLogger("exatrkx_sweeps")
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    sweep_dir = hc.sweep.dir if multirun else None
    tags = {"study": (plain.get("tracking") or {}).get("study") or "", "job": str(hc.job.get("num", 0))}
    if link is not None:
        tags.update(study=link.study_name, trial=str(link.number))
    plain.setdefault("tracking", {})
    plain["tracking"]["run_name"] = plain["tracking"].get("run_name") or (
        run_name(link.overrides.split(), link.number) if link else run_name(overrides)
    )
    try:
        # torch's own answer where devices.py could not tell without it; before the run exists
        train = plain["train"]
        check_precision(str(train["precision"]), resolve_device(str(train["device"])))
        with job_run(plain, sweep_dir, tags, stopped=(optuna.TrialPruned,)) as run:
            models = Path(hc.runtime.output_dir) / "models"
            callbacks = _callbacks(run, link, plain, models if world.main else None)
            if run and link:
                link.set_user_attr("mlflow_run_id", run.run_id)
            report = pipeline.run(plain, callbacks, progress=True)
            if report is None:  # not rank 0: trained its share, nothing to report
                return None
            if run:
                log_report(run, report, plain, overrides)
                if plain["tracking"].get("log_models", True):
                    log_models(run, models)
    except Terminated as exc:
        print(f"error: {exc}; the run is marked KILLED", file=sys.stderr)
        if link is not None:
            raise for_sweeper(exc) from None  # the sweeper fails the trial and queues it again
        sys.exit(143)
    except Exception as exc:
        if isinstance(exc, optuna.TrialPruned):
            print(f"trial {link.number if link else ''} pruned: {exc}", file=sys.stderr)
            raise  # the sweeper records PRUNED
        if isinstance(exc, _EXPECTED_ERRORS):
            print(f"error: {redact(one_line(exc))}", file=sys.stderr)
        else:
            log.exception("run failed")
        if link is not None:
            raise  # the sweeper records FAIL with this error and goes on
        if multirun:
            return math.nan  # another sweeper: marked FAILED in MLflow; the other jobs go on
        sys.exit(1)
    # through logging: Hydra shows it on the terminal and keeps it in the job's log file
    log.info("summary\n" + report.summary_table())
    if run:
        log.info(f"MLflow run {run.run_id}; open the UI with:  mlflow ui --backend-store-uri {redact(uri)}")
    return report.metrics


def _callbacks(run, link, cfg, models: Path | None):
    """Pipeline callbacks: MLflow training curves, the trial's intermediate values, and
    every fitted stage saved into ``models`` (what export reads; None: not saved)."""
    reporter = link.reporter(cfg) if link is not None and link.pruning else None

    def on_fitted(stage, settings, state):
        if models is not None:
            save_stage(models, stage, settings, state)

    if reporter is None:
        return pipeline.Callbacks(on_epoch=run.log_curve if run else None, on_fitted=on_fitted)

    def on_epoch(stage, epoch, metrics):
        if run:
            run.log_curve(stage, epoch, metrics)
        reporter.on_epoch(stage, epoch, metrics)

    return pipeline.Callbacks(
        on_epoch=on_epoch, on_stage=reporter.on_stage, on_event=reporter.on_event, on_fitted=on_fitted
    )
