"""``python -m exatrkx_sweeps [-m] key=value ...``: run the pipeline, log it to MLflow.

One run trains (or takes from the stage cache) every stage on the configured data,
tests it, prints a summary table and logs everything to MLflow. ``-m`` with comma
lists runs a grid (each job a child of one parent MLflow run). ``eval.data=NAME``
(a data config, e.g. ``trackml``) tests on other data: it is shorthand for Hydra's
``data@eval.data=NAME``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import pipeline
from .composition import composition_error
from .config import validate
from .errors import ConfigError, Terminated, TrackingError, one_line, raise_terminated
from .export.bundle import save_stage
from .redaction import redact, redact_logs
from .sweeper import study
from .sweeper.bridge import TrialLink
from .tracking.artifacts import log_models, log_report
from .tracking.run import job_run, run_name
from .tracking.store import check_reachable, resolve_uri

_CONF = Path(__file__).parent / "conf"
# --help lists the study files (conf/hydra/help/exatrkx.yaml), the shipped ones and ./studies/
OmegaConf.register_new_resolver(
    "exatrkx_studies", lambda: ", ".join(study.available([Path.cwd() / "studies"]))
)
_EXPECTED_ERRORS = (ConfigError, ValueError, FileNotFoundError, RuntimeError)


def _rewrite_argv(argv: list[str]) -> list[str]:
    """eval.data=NAME -> data@eval.data=NAME when NAME is a data config."""
    names = {p.stem for p in (_CONF / "data").glob("*.yaml")}
    out = []
    for a in argv:
        m = re.fullmatch(r"eval\.data=(\w+)", a)
        out.append(f"data@eval.data={m.group(1)}" if m and m.group(1) in names else a)
    return out


@hydra.main(config_path="conf", config_name="config", version_base=None)
def app(cfg: DictConfig):
    hc = HydraConfig.get()
    _redact_saved_configs(hc)
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    log = logging.getLogger("exatrkx_sweeps")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it loaded
    link = _trial_link(log) if multirun else None
    try:
        plain = validate(cfg)
        uri = resolve_uri((plain.get("tracking") or {}).get("uri"))
        if (plain.get("tracking") or {}).get("enabled", True):
            check_reachable(uri)
    except (ConfigError, TrackingError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        if link is not None:
            raise  # the sweeper records this trial FAIL with the message
        if multirun:
            return math.nan
        sys.exit(2)
    if plain.get("study") and not multirun:
        print(
            f"warning: study={plain['study']} runs a study only with -m "
            f"(python -m exatrkx_sweeps -m study={plain['study']}); this is one ordinary run.",
            file=sys.stderr,
        )
    sweep_dir = hc.sweep.dir if multirun else None
    tags = {"study": (plain.get("tracking") or {}).get("study") or "", "job": str(hc.job.get("num", 0))}
    if link is not None:
        tags.update(study=link.study_name, trial=str(link.number))
    plain.setdefault("tracking", {})
    plain["tracking"]["run_name"] = plain["tracking"].get("run_name") or (
        run_name(link.overrides.split(), link.number) if link else run_name(overrides)
    )
    try:
        with job_run(plain, sweep_dir, tags, stopped=(optuna.TrialPruned,)) as run:
            models = Path(hc.runtime.output_dir) / "models"
            callbacks = _callbacks(run, link, plain, models)
            if run and link:
                link.set_user_attr("mlflow_run_id", run.run_id)
            report = pipeline.run(plain, callbacks, progress=True)
            if run:
                log_report(run, report, plain, overrides)
                if plain["tracking"].get("log_models", True):
                    log_models(run, models)
    except Terminated as exc:
        print(f"error: {exc}; the run is marked KILLED", file=sys.stderr)
        if link is not None:
            raise  # the sweeper fails the trial and queues it again
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


def _redact_saved_configs(hc) -> None:
    """Hydra saves the job's config, its own config and the overrides in the job's
    output folder before the job starts; a URI with credentials there is rewritten with
    them hidden (the job itself keeps the real value in memory)."""
    if not hc.output_subdir:
        return
    folder = Path(hc.runtime.output_dir) / hc.output_subdir
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        path = folder / name
        if path.is_file():
            text = path.read_text()
            if redact(text) != text:
                path.write_text(redact(text))


def _trial_link(log):
    """The job's Optuna trial when the Optuna sweeper launched it (else None)."""
    try:
        return TrialLink.from_hydra()
    except Exception as exc:  # pruning and trial attributes are lost, the run itself goes on
        log.warning(f"cannot reach this job's Optuna trial ({one_line(exc)}); running without pruning")
        return None


def _callbacks(run, link, cfg, models: Path):
    """Pipeline callbacks: MLflow training curves, the trial's intermediate values, and
    every fitted stage saved into ``models`` (what export reads)."""
    reporter = link.reporter(cfg) if link is not None and link.pruning else None

    def on_fitted(stage, settings, state):
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


def _completed_study_name(argv: list[str]) -> bool:
    """Bash completion of ``study=``: Hydra completes config groups and keys, and a study
    file is neither; its query (``-sc query=bash``, the line in COMP_LINE) gets the names."""
    line = os.environ.get("COMP_LINE", "")
    word = "" if line.endswith(" ") else (line.split() or [""])[-1]
    if argv != ["-sc", "query=bash"] or not word.startswith("study="):
        return False
    names = (f"study={n}" for n in study.available([Path.cwd() / "studies"]))
    print(" ".join(n for n in names if n.startswith(word)))
    return True


def main() -> None:
    if _completed_study_name(sys.argv[1:]):
        return
    # SIGTERM (a SLURM time limit, a kill) ends runs as KILLED with the reason, like Ctrl-C
    signal.signal(signal.SIGTERM, raise_terminated)
    redact_logs()
    argv = _rewrite_argv(sys.argv[1:])
    bad = composition_error(argv)  # Hydra would say it in several lines, with its internals
    if bad:
        print(f"error: {redact(bad)}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    app()


if __name__ == "__main__":
    main()
