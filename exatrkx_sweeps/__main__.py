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
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .composition import composition_error
from .config import validate
from .errors import ConfigError, TrackingError, one_line, raise_terminated
from .redaction import redact, redact_logs
from .tracking.store import check_reachable, resolve_uri

_CONF = Path(__file__).parent / "conf"
# --help lists the study files (conf/hydra/help/exatrkx.yaml), the shipped ones and ./studies/
OmegaConf.register_new_resolver("exatrkx_studies", lambda: ", ".join(_study_names()))


def _study_names() -> list[str]:
    from .sweeper import study  # Optuna: only when the names are asked for

    return study.available([Path.cwd() / "studies"])


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
    log = logging.getLogger("exatrkx_sweeps")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it loaded
    link = _trial_link(log) if multirun else None
    try:
        plain = validate(cfg)
        uri = resolve_uri((plain.get("tracking") or {}).get("uri"))
        tracking = plain.get("tracking") or {}
        if tracking.get("enabled", True):
            # a single run fails at once; a job of a sweep waits for a restarting server
            check_reachable(uri, wait=float(tracking.get("wait_s", 120)) if multirun else 0.0)
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
    if int(plain["train"].get("devices", 1)) > 1:
        _start_ranks(plain, multirun)
    # torch, torch_geometric and MLflow (4-5 s of imports) only once the config is known good
    from .job import run_job

    return run_job(plain, uri, link, hc)


def _start_ranks(plain: dict, multirun: bool) -> None:
    """``train.devices=N``: this command again as N processes under torchrun (this one
    is replaced), unless it already is one of them (torchrun, or srun's tasks)."""
    from .distributed import world_from_env

    n = int(plain["train"]["devices"])
    if world_from_env().size > 1:
        return
    if multirun:
        print(
            f"error: train.devices={n} in a sweep: give each trial {n} processes as SLURM tasks "
            f"(hydra/launcher=slurm hydra.launcher.tasks_per_node={n}).",
            file=sys.stderr,
        )
        sys.exit(2)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    sys.stdout.flush()
    os.execv(sys.executable, [*argv, "-m", "exatrkx_sweeps", *sys.argv[1:]])


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
    from .sweeper.bridge import TrialLink

    try:
        return TrialLink.from_hydra()
    except Exception as exc:  # pruning and trial attributes are lost, the run itself goes on
        log.warning(f"cannot reach this job's Optuna trial ({one_line(exc)}); running without pruning")
        return None


def _completed_study_name(argv: list[str]) -> bool:
    """Bash completion of ``study=``: Hydra completes config groups and keys, and a study
    file is neither; its query (``-sc query=bash``, the line in COMP_LINE) gets the names."""
    line = os.environ.get("COMP_LINE", "")
    word = "" if line.endswith(" ") else (line.split() or [""])[-1]
    if argv != ["-sc", "query=bash"] or not word.startswith("study="):
        return False
    names = (f"study={n}" for n in _study_names())
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
