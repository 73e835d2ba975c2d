"""Where the tracking efficiency is lost: after each graph-making stage, the best the
later stages could still do, and how well the stage's scores rank each hit's true
next hit.

    python benchmarks/bench_losses.py [key=value ...]     # e.g. data=sim_pu200

Takes the fitted stages from the stage cache (training them if missing, like any run)
and runs the test events through them. After the embedding graph, the filter and the
GNN it prints, per event on average:

* edges per hit, and their efficiency and purity against the module-wise truth graph;
* the ceiling: technical efficiency above 0.5 GeV if every later classifier were
  perfect, i.e. track building on this graph's true edges only;
* ranked first: the share of the event's true edges above 0.5 GeV that are still in
  the graph and score highest among their hit's outgoing edges, which is what
  ``tracks.resolve_junctions`` would keep by score alone (the builder's bend weight,
  ``tracks.bend_weight``, reorders them); filter and GNN only: the embedding has no score;

then the technical efficiency the pipeline reaches, and two tables of the ceilings and
the reached efficiency (over all test events): by |eta|, where at pile-up 200 the losses
sit in the barrel (the hits densest, a hit's next layer farthest), and by pT in the
barrel.
Extra key=value arguments are Hydra overrides of the trained configuration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from exatrkx_sweeps import pipeline
from exatrkx_sweeps.cache import StageCache, default_dir
from exatrkx_sweeps.config import validate
from exatrkx_sweeps.data.truth import edge_targets
from exatrkx_sweeps.metrics.tracks import RECONSTRUCTABLE_HITS, TrackCounts
from exatrkx_sweeps.profiling import Profiler
from exatrkx_sweeps.report import RunReport
from exatrkx_sweeps.stages.base import EventGraph, RunContext
from exatrkx_sweeps.stages.tracks import label_hits

PT_GEV = 0.5
ETA_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0))
PT_BINS = ((0.5, 0.7), (0.7, 1.0), (1.0, 2.0), (2.0, 5.0), (5.0, np.inf))


def add_event(counts: TrackCounts, d, labels: np.ndarray) -> float:
    """Adds one event's labels to ``counts``; returns its technical efficiency."""
    before = counts.reco_matched[PT_GEV], counts.reco[PT_GEV]
    counts.add(
        labels, d.pid.numpy(), d.weight.numpy(), d.p_pid.numpy(), d.p_pt.numpy(), d.p_eta.numpy(),
        d.p_nhits.numpy(),
    )  # fmt: skip
    matched, reco = counts.reco_matched[PT_GEV] - before[0], counts.reco[PT_GEV] - before[1]
    return matched / max(reco, 1)


def binned(counts: TrackCounts, by: str, bins, eta_max: float = np.inf) -> list[tuple[float, int]]:
    """Technical efficiency above PT_GEV (and its number of particles) in each bin of
    ``by`` ("eta": |eta|, or "pt"), counting only particles with |eta| < ``eta_max``."""
    pt, eta, nhits, matched = counts.particles().T
    reco = (pt > PT_GEV) & (nhits >= RECONSTRUCTABLE_HITS) & (np.abs(eta) < eta_max)
    x = np.abs(eta) if by == "eta" else pt
    out = []
    for lo, hi in bins:
        m = reco & (x >= lo) & (x < hi)
        out.append((float(matched[m].mean()) if m.any() else float("nan"), int(m.sum())))
    return out


def print_binned(title: str, name: str, bins, columns: dict[str, list[tuple[float, int]]]) -> None:
    print(f"\n{title}: the ceilings, then reached")
    print(f"{name:>16}{'particles':>16}" + "".join(f"{n:>16}" for n in columns))
    for i, (lo, hi) in enumerate(bins):
        cells = "".join(f"{100 * col[i][0]:>15.1f}%" for col in columns.values())
        label = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"
        print(f"{label:>16}{next(iter(columns.values()))[i][1]:>16}" + cells)


def ranked_first(d, edges: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the event's true edges above PT_GEV that are in this graph (``y``: in the
    truth graph, either orientation) as their source hit's best-scored outgoing edge."""
    n_true = int((d.pt[d.track_edges[0]] > PT_GEV).sum())
    best = torch.full((d.num_nodes,), -1.0).scatter_reduce(0, edges[0], scores.float(), reduce="amax")
    first = y & (scores.float() >= best[edges[0]]) & (d.pt[edges[0]] > PT_GEV)
    return int(first.sum()) / n_true if n_true else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=args.overrides))
    cache_root = Path(cfg["cache"].get("dir") or default_dir())
    events = pipeline.load_events(cfg, cache_root, progress=False)
    ctx = RunContext(device=torch.device("cpu"))
    fitted = pipeline.fit_stages(ctx, cfg, events, StageCache(cache_root), Profiler(ctx.device), RunReport())
    tracks = cfg["tracks"]
    min_hits = int(tracks["min_track_hits"])
    rows: dict[str, list[list[float]]] = {}
    ceilings: dict[str, TrackCounts] = {}
    reached = TrackCounts(min_track_hits=min_hits)
    final = []
    for d in events.test:
        ev = EventGraph(d)
        for f in fitted:
            ev = f.apply(ev)
            name = f.stage.edge_metrics
            if not name:
                continue
            y = edge_targets(d, ev.edges, "module").bool()
            # the configured track building on the true edges alone
            junctions = (tracks["resolve_junctions"], tracks["junction_rounds"])
            oracle = label_hits(d.num_nodes, ev.edges, y.float(), 0.5, "scipy", *junctions)
            ceiling = add_event(ceilings.setdefault(name, TrackCounts(min_track_hits=min_hits)), d, oracle)
            rank = ranked_first(d, ev.edges, ev.scores, y) if ev.scores is not None else float("nan")
            rows.setdefault(name, []).append(
                [
                    ev.edges.shape[1] / d.num_nodes,
                    float(y.sum()) / max(d.track_edges.shape[1], 1),
                    float(y.float().mean()) if y.numel() else 0.0,
                    ceiling,
                    rank,
                ]
            )
        final.append(add_event(reached, d, ev.labels))
    print(f"{len(events.test)} test events, {np.mean([d.num_nodes for d in events.test]):,.0f} hits each")
    head = ("after", "edges/hit", "edge eff", "edge purity", f"ceiling pT>{PT_GEV:g}", "ranked first")
    print("".join(f"{h:>16}" for h in head))
    for name, r in rows.items():
        m = np.array(r)
        cells = [f"{m[:, 0].mean():.2f}", *(f"{100 * v:.1f}%" for v in m[:, 1:4].mean(0))]
        cells.append("-" if np.isnan(m[:, 4]).all() else f"{100 * m[:, 4].mean():.1f}%")
        print(f"{name:>16}" + "".join(f"{c:>16}" for c in cells))
    print(f"technical efficiency reached, pT > {PT_GEV:g} GeV: {100 * np.mean(final):.1f}%")
    counts = {**ceilings, "reached": reached}
    title = f"technical efficiency above {PT_GEV:g} GeV"
    print_binned(
        f"by |eta|, {title}", "|eta|", ETA_BINS, {n: binned(c, "eta", ETA_BINS) for n, c in counts.items()}
    )
    columns = {n: binned(c, "pt", PT_BINS, eta_max=1.0) for n, c in counts.items()}
    print_binned(f"by pT (GeV) in the barrel (|eta| < 1), {title}", "pT", PT_BINS, columns)


if __name__ == "__main__":
    main()
