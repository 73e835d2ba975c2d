"""Time per trial of an Optuna study with and without the stage cache.

Runs the same study twice as a user would (``python -m exatrkx_sweeps -m study=NAME``),
each time into a fresh Optuna storage, MLflow store and stage cache: once with the cache
on (trials share the data, the embedding and whatever else their settings leave
unchanged), once with ``cache.enabled=false`` (every trial simulates and trains
everything). Prints each trial's wall time and per-stage training time, then the mean.

    python benchmarks/bench_study_cache.py --study quick_search --trials 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_study(study: str, trials: int, cache: bool, root: Path, extra: list[str]) -> list[dict]:
    import optuna

    from exatrkx_sweeps.sweeper.storage import open_storage

    storage = root / "optuna.db"
    env = {
        **os.environ,
        "EXATRKX_CACHE": str(root / "cache"),
        "EXATRKX_MLFLOW_DB": str(root / "mlflow.db"),
    }
    cmd = [
        sys.executable,
        "-m",
        "exatrkx_sweeps",
        "-m",
        f"study={study}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={root / 'sweep'}",
        f"cache.enabled={'true' if cache else 'false'}",
        *extra,
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"study failed:\n{p.stderr[-3000:]}")
    total = time.perf_counter() - t0
    s = optuna.load_study(study_name=study, storage=open_storage(str(storage)))
    rows = []
    for t in s.trials:
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "wall_s": (t.datetime_complete - t.datetime_start).total_seconds(),
                **{
                    f"train_{k}_s": a.get(f"time_train_{k}_s", float("nan"))
                    for k in ("embedding", "filter", "gnn")
                },
                "data_s": a.get("time_prepare_data_s", float("nan")),
            }
        )
    print(f"\n{study}, cache {'on' if cache else 'off'}: {len(rows)} trials in {total:.0f} s")
    print(f"{'trial':>5} {'state':>9} {'wall s':>8} {'data s':>7} {'emb s':>7} {'filter s':>8} {'gnn s':>7}")
    for r in rows:
        print(
            f"{r['trial']:>5} {r['state']:>9} {r['wall_s']:>8.1f} {r['data_s']:>7.1f} "
            f"{r['train_embedding_s']:>7.1f} {r['train_filter_s']:>8.1f} {r['train_gnn_s']:>7.1f}"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="quick_search")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("overrides", nargs="*", help="extra overrides for every trial")
    args = ap.parse_args()
    means = {}
    for cache in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
            rows = run_study(args.study, args.trials, cache, Path(tmp), args.overrides)
        walls = [r["wall_s"] for r in rows]
        means[cache] = (sum(walls) / len(walls), sum(walls[1:]) / max(len(walls) - 1, 1))
    print("\nmean wall time per trial (all trials / after the first):")
    for cache, (all_, later) in means.items():
        print(f"  cache {'on ' if cache else 'off'}: {all_:7.1f} s / {later:7.1f} s")


if __name__ == "__main__":
    main()
