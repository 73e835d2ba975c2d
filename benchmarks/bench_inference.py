"""Inference time per stage and graph size against the number of hits, with the fitted
scaling exponents (the seed claims sub-quadratic growth), and what each network stage
achieves of this machine's matrix-product peak.

    python benchmarks/bench_inference.py [--mus 10 50 100 200] [--events 2] [key=value ...]

Trains the default pipeline (or takes it from the stage cache), then runs it on test
events simulated at each pile-up and prints, per mu: hits per event, edges after the
embedding graph / filter / GNN cut, seconds per event for each stage and in total,
and the efficiencies and purity. The exponents are the slopes of log(time) and
log(edges) against log(hits). Then, at the largest pile-up: each stage's
floating-point operations per event (counted by torch's FlopCounterMode in a second,
untimed pass), its GFLOP/s over the timed pass, and the share of the peak measured
here (square fp32 and bf16 matrix products). Extra key=value arguments are Hydra
overrides of the trained configuration.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from torch.utils.flop_counter import FlopCounterMode

from exatrkx_sweeps import pipeline
from exatrkx_sweeps.cache import StageCache, default_dir
from exatrkx_sweeps.config import validate
from exatrkx_sweeps.devices import cpu_has_bf16
from exatrkx_sweeps.profiling import Profiler
from exatrkx_sweeps.report import RunReport
from exatrkx_sweeps.stages.base import EventGraph, RunContext


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8, device: str = "cpu") -> float:
    """GFLOP/s of square n x n matrix products in ``dtype`` on ``device``. A CPU that
    emulates the dtype (bf16 without bf16 units: about 1 GFLOP/s on the AVX2 machine,
    where eight 2048-square products took minutes) gets two 512-square ones instead."""
    if device != "cpu":
        n, reps = 8192, 20
    elif matmul_peak_of(dtype, 256, 1) < 20:
        n, reps = 512, 2
    return matmul_peak_of(dtype, n, reps, device)


def matmul_peak_of(dtype: torch.dtype, n: int, reps: int, device: str = "cpu") -> float:
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    a @ b
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def stage_flops(cfg: dict, device: str = "cpu") -> dict[str, float]:
    """Floating-point operations per test event of each stage (from the stage cache)."""
    cache_root = Path(cfg["cache"].get("dir") or default_dir())
    events = pipeline.load_events(cfg, cache_root, progress=False)
    ctx = RunContext(device=torch.device(device))
    fitted = pipeline.fit_stages(ctx, cfg, events, StageCache(cache_root), Profiler(ctx.device), RunReport())
    flops = {f.stage.name: 0.0 for f in fitted}
    for d in events.test:
        ev = EventGraph(d)
        for f in fitted:
            with FlopCounterMode(display=False) as counter:
                ev = f.apply(ev)
            flops[f.stage.name] += counter.get_total_flops()
    return {k: v / max(len(events.test), 1) for k, v in flops.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mus", type=float, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--events", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=args.overrides))
    rows, physics, last = [], [], None
    for mu in args.mus:
        c = copy.deepcopy(cfg)
        ev = copy.deepcopy(cfg["data"])
        ev.update(n_train=0, n_val=0, n_test=args.events, first_event=900_000, name=f"mu{mu:g}")
        ev["simulation"]["mu"] = mu
        c["eval"]["data"] = ev
        m = pipeline.run(c).metrics
        last = (c, m)
        physics.append(
            f"mu {mu:g}: technical efficiency (pT > 0.5) {100 * m['eff_tech_pt0.5']:.1f}%, "
            f"physics {100 * m['eff_phys_pt0.5']:.1f}%, purity {100 * m['purity']:.1f}%"
        )
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
    print("\n".join(physics))
    a = np.array(rows)
    if len(a) >= 2:
        logh = np.log(a[:, 1])
        for i, name in enumerate(head[2:], start=2):
            slope = np.polyfit(logh, np.log(np.maximum(a[:, i], 1e-9)), 1)[0]
            print(f"scaling exponent of {name:>10} vs hits: {slope:.2f}")
    peak_table(*last)


def peak_table(
    cfg: dict,
    m: dict,
    device: str = "cpu",
    flops: dict[str, float] | None = None,
    peaks: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per stage at the last pile-up: time, FLOPs, GFLOP/s and the share of the peak.
    Returns the FLOPs per event and the peaks, for another table of the same events."""
    if peaks is None:
        peaks = {
            "32": matmul_peak(torch.float32, device=device),
            "bf16": matmul_peak(torch.bfloat16, device=device),
        }
        emulated = " (emulated: this CPU has no bf16 units)" if device == "cpu" and not cpu_has_bf16() else ""
        print(
            f"\nmatrix-product peak ({device}): fp32 {peaks['32']:.0f} GFLOP/s, "
            f"bf16 {peaks['bf16']:.1f} GFLOP/s{emulated}"
        )
    scoring = "bf16" if (cfg.get("eval") or {}).get("precision") == "bf16" else "32"
    flops = stage_flops(cfg, device) if flops is None else flops
    head = f"{'stage':>10} {'s/event':>9} {'GFLOP/event':>12} {'GFLOP/s':>9} {'of peak':>8}"
    print(f"{head}   (filter and GNN scoring in {'fp32' if scoring == '32' else scoring})")
    for name, f in flops.items():
        t = m[f"time_infer_{name}_s"]
        rate = f / 1e9 / t if t > 0 else 0.0
        peak = peaks[scoring if name in ("filter", "gnn") else "32"]  # eval.precision scores edges
        share = f"{100 * rate / peak:7.1f}%" if f else "      -"
        print(f"{name:>10} {t:>9.3f} {f / 1e9:>12.2f} {rate:>9.1f} {share}")
    return flops, peaks


if __name__ == "__main__":
    main()
