"""A cheap Hydra task for the sweeper's tests (no pipeline): a score of x and y.

Every run appends one line (pid, trial, x, y) to ``$RUNS_LOG``, so tests can count how
often each point ran. ``raise_on`` / ``nan_on`` make chosen points fail; ``hang_once``
makes the first run of a point hang (to be killed); ``report`` steps of intermediate
values go to the trial (for pruning).
"""

import math
import os
import time
from pathlib import Path

import hydra


@hydra.main(config_path=".", config_name="config", version_base=None)
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    from exatrkx_sweeps.sweeper.bridge import TrialLink

    x, y = float(cfg.x), float(cfg.y)
    trial = HydraConfig.get().sweeper.get("trial")
    with open(os.environ["RUNS_LOG"], "a") as f:
        f.write(f"{os.getpid()} {trial} {x:g} {y:g}\n")
    if cfg.hang_once is not None and x == cfg.hang_once:
        marker = Path(os.environ["RUNS_LOG"]).with_suffix(".hung")
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
