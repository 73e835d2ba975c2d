"""Inference time per stage and graph size against the number of hits, with the fitted
scaling exponents (the seed claims sub-quadratic growth).

    python benchmarks/bench_inference.py [--mus 10 50 100 200] [--events 2] [key=value ...]

Trains the default pipeline (or takes it from the stage cache), then runs it on test
events simulated at each pile-up and prints, per mu: hits per event, edges after the
embedding graph / filter / GNN cut, seconds per event for each stage and in total. The
exponents are the slopes of log(time) and log(edges) against log(hits). Extra
key=value arguments are Hydra overrides of the trained configuration.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
from hydra import compose, initialize_config_module

from exatrkx_sweeps import pipeline
from exatrkx_sweeps.config import validate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mus", type=float, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--events", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=args.overrides))
    rows = []
    for mu in args.mus:
        c = copy.deepcopy(cfg)
        ev = copy.deepcopy(cfg["data"])
        ev.update(n_train=0, n_val=0, n_test=args.events, first_event=900_000, name=f"mu{mu:g}")
        ev["simulation"]["mu"] = mu
        c["eval"]["data"] = ev
        m = pipeline.run(c).metrics
        stages = ("graph", "filter", "gnn", "tracks")
        rows.append(
            [
                mu,
                m["hits_per_event"],
                m["edges_per_event_embedding"],
                m["edges_per_event_filter"],
                m["edges_per_event_gnn"],
                *(m[f"time_infer_{s}_s"] for s in stages),
                m["time_infer_total_s"],
            ]
        )
    head = [
        "mu",
        "hits",
        "edges emb",
        "edges filt",
        "edges gnn",
        "t graph",
        "t filter",
        "t gnn",
        "t tracks",
        "t total",
    ]
    print(" ".join(f"{h:>11}" for h in head))
    for r in rows:
        print(" ".join(f"{v:>11.0f}" if i < 5 else f"{v:>11.3f}" for i, v in enumerate(r)))
    a = np.array(rows)
    if len(a) >= 2:
        logh = np.log(a[:, 1])
        for i, name in enumerate(head[2:], start=2):
            slope = np.polyfit(logh, np.log(np.maximum(a[:, i], 1e-9)), 1)[0]
            print(f"scaling exponent of {name:>10} vs hits: {slope:.2f}")


if __name__ == "__main__":
    main()
