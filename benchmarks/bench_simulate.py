"""Simulation time per event against pile-up, on one core.

    python benchmarks/bench_simulate.py [--events 3]

Pins BLAS / OpenMP to one thread before numpy loads, then times simulate_event
(particles, propagation, hits, cells, noise, truth; no file writing) for mu = 10 ... 200.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from exatrkx_sweeps.data.simulate import SimulationConfig, default_detector, simulate_event  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3)
    args = ap.parse_args()
    det = default_detector()
    simulate_event(SimulationConfig(mu=5), seed=0, event_id=0, detector=det)  # warm caches
    print(f"{'mu':>5} {'hits':>9} {'particles':>10} {'s/event':>9} {'min s':>7} {'max s':>7}")
    for mu in (10, 50, 100, 200):
        times, hits, parts = [], [], []
        for i in range(args.events):
            t0 = time.perf_counter()
            ev = simulate_event(SimulationConfig(mu=mu), seed=1, event_id=i, detector=det)
            times.append(time.perf_counter() - t0)
            hits.append(len(ev.hits))
            parts.append(len(ev.particles))
        print(
            f"{mu:>5} {np.mean(hits):>9.0f} {np.mean(parts):>10.0f} {np.mean(times):>9.2f} "
            f"{np.min(times):>7.2f} {np.max(times):>7.2f}"
        )


if __name__ == "__main__":
    main()
