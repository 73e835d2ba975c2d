"""The sweeper's load test with its figures: 4 workers x 25 trials of a cheap study on
one Optuna storage (PostgreSQL) and one MLflow server (PostgreSQL store), each trial
with its MLflow child run. Prints the wall time and the per-trial overhead of the
sweeper plus MLflow (the task itself does nothing).

    python benchmarks/bench_sweep_load.py [--workers 4] [--trials 100]

Starts its own PostgreSQL and MLflow server (tests/servers.py), as the test does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import servers  # noqa: E402
from tests.test_scaleout import load_test  # noqa: E402
from tests.test_sweeper import Sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--trials", type=int, default=100, help="a multiple of 4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, servers.postgres() as pg:
        root = Path(tmp)
        (root / "server").mkdir()
        with servers.MlflowServer(root / "server", servers.new_database(pg)) as mlflow:
            sw = Sweep(root, storage=pg)
            f = load_test(sw, mlflow.url, args.workers, args.trials)
    print(f"{args.workers} workers x {args.trials // args.workers} trials (Optuna and MLflow on PostgreSQL)")
    print(f"  wall time                    {f['wall_s']:7.1f} s (with the workers' start-up)")
    print(f"  first trial start to last end {f['span_s']:6.1f} s")
    print(f"  sweeper + MLflow per trial   {f['per_trial_s']:7.2f} s (span x workers / trials)")


if __name__ == "__main__":
    main()
