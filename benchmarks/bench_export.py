"""Inference time per event of a run's exported networks (TorchScript, ONNX Runtime)
against PyTorch, with the largest score difference and whether the tracks agree.

    python -m exatrkx_sweeps                                 # a run (its job folder is printed by Hydra)
    python -m exatrkx_sweeps.export outputs/DATE/TIME --out /tmp/exported
    python benchmarks/bench_export.py outputs/DATE/TIME /tmp/exported [--events 4] [--threads 2]

Runs every stage on held events simulated like the run's (the run's data settings, from
event 800000 on): the embedding, filter and GNN with each format in turn, the graph
building and track labelling as in the run. Prints per format: seconds per event in the
three networks and for the whole event, the largest GNN score difference from PyTorch,
and whether every event gives the same track labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from exatrkx_sweeps.data.dataset import EventStore
from exatrkx_sweeps.export import formats
from exatrkx_sweeps.export.bundle import load_bundle, networks, reconstruct

NETWORKS = ("embedding", "filter", "gnn")


class Timed:
    """A network callable that adds up the time spent in it."""

    def __init__(self, net):
        self.net, self.seconds = net, 0.0

    def eval(self):
        return self

    def __call__(self, *x):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.net(*x)
        self.seconds += time.perf_counter() - t0
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="the run's job folder (with models/)")
    ap.add_argument("exported", type=Path, help="the folder export wrote")
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.run / "models")
    nets = networks(bundle)
    data = OmegaConf.to_container(OmegaConf.load(args.run / ".hydra" / "config.yaml").data, resolve=True)
    data.update(n_train=0, n_val=0, n_test=args.events, first_event=800_000)
    events = EventStore(data).split("test")
    hits = np.mean([d.num_nodes for d in events])
    runs = {"pytorch": {n: nets[n][0] for n in NETWORKS}}
    for fmt, suffix in formats.FORMATS.items():
        if all((args.exported / f"{n}{suffix}").exists() for n in NETWORKS):
            runs[fmt] = {n: formats.load(args.exported / f"{n}{suffix}") for n in NETWORKS}
    results, reference = {}, None
    for fmt, nets_of in runs.items():
        timed = {n: Timed(net) for n, net in nets_of.items()}
        reconstruct(bundle, events[0], replace=timed)  # warm-up (ONNX Runtime's first call)
        for t in timed.values():
            t.seconds = 0.0
        t0 = time.perf_counter()
        out = [reconstruct(bundle, d, replace=timed) for d in events]
        total = (time.perf_counter() - t0) / len(events)
        if reference is None:
            reference = out
        diff = max(float((a.scores - b.scores).abs().max()) for a, b in zip(out, reference, strict=True))
        same = all(np.array_equal(a.labels, b.labels) for a, b in zip(out, reference, strict=True))
        per = {n: t.seconds / len(events) for n, t in timed.items()}
        results[fmt] = {"total_s": total, **{f"{n}_s": v for n, v in per.items()}, "diff": diff, "same": same}
    print(f"{len(events)} held events, {hits:.0f} hits each on average, {args.threads} threads")
    head = f"{'format':<12}" + "".join(f"{n + ' s':>12}" for n in NETWORKS)
    print(head + f"{'event s':>10}{'max |dscore|':>14}{'same tracks':>13}")
    for fmt, r in results.items():
        cells = "".join(f"{r[f'{n}_s']:>12.3f}" for n in NETWORKS)
        print(f"{fmt:<12}{cells}{r['total_s']:>10.3f}{r['diff']:>14.1e}{str(r['same']):>13}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
