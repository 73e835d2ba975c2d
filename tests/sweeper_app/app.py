"""A cheap Hydra task for the sweeper's tests (no pipeline): a score of x and y.

Every run appends one line (pid, trial, x, y) to ``$RUNS_LOG``, so tests can count how
often each point ran. ``raise_on`` / ``nan_on`` make chosen points fail; ``hang_once``
(a value or a list) makes the first run of those points hang (to be killed); ``report``
steps of intermediate values go to the trial (for pruning). ``log_runs=true`` (with a
``+tracking`` group) gives every job its MLflow run (a child of the study's parent run),
ended the way the pipeline's runs are: FINISHED, FAILED with the error, or KILLED when
its process is stopped (in a SLURM job, SIGTERM and submitit's warning signal; the
trial then runs again).
"""

import math
import os
import time
from pathlib import Path

import hydra
from omegaconf import ListConfig, OmegaConf


@hydra.main(config_path=".", config_name="config", version_base=None)
def main(cfg):
    if not cfg.log_runs:
        return task(cfg)
    import optuna
    from hydra.core.hydra_config import HydraConfig

    from exatrkx_sweeps.errors import Terminated, for_sweeper, stop_on_job_signals
    from exatrkx_sweeps.sweeper.bridge import TrialLink
    from exatrkx_sweeps.tracking.run import job_run

    stop_on_job_signals()
    link = TrialLink.from_hydra()
    run_cfg = {"x": cfg.x, "y": cfg.y, "tracking": OmegaConf.to_container(cfg.tracking)}
    tags = {"trial": str(link.number), "study": link.study_name} if link else {}
    try:
        with job_run(run_cfg, HydraConfig.get().sweep.dir, tags, stopped=(optuna.TrialPruned,)) as run:
            metrics = task(cfg)
            run.log_metrics(metrics)
    except Terminated as exc:
        raise for_sweeper(exc) from None
    return metrics


def task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from exatrkx_sweeps.sweeper.bridge import TrialLink

    x, y = float(cfg.x), float(cfg.y)
    trial = HydraConfig.get().sweeper.get("trial")
    with open(os.environ["RUNS_LOG"], "a") as f:
        f.write(f"{os.getpid()} {trial} {x:g} {y:g}\n")
    hang = cfg.hang_once if isinstance(cfg.hang_once, ListConfig) else [cfg.hang_once]
    if x in [float(h) for h in hang if h is not None]:
        marker = Path(os.environ["RUNS_LOG"]).with_suffix(f".hung-{x:g}")
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(600)
    if cfg.raise_on is not None and x == cfg.raise_on:
        raise ValueError(f"x={x:g} is a bad point")
    score = -((x - 2) ** 2) - (y - 1) ** 2
    if cfg.nan_on is not None and x == cfg.nan_on:
        score = math.nan
    link = TrialLink.from_hydra()
    if link is not None:
        link.set_user_attr("pid", os.getpid())
        for step in range(int(cfg.report)):
            link.report(score + step, step)  # raises optuna.TrialPruned when the pruner says so
    time.sleep(float(cfg.sleep))
    return {"score": score, "cost": x + abs(y), "x_seen": x}


if __name__ == "__main__":
    main()
