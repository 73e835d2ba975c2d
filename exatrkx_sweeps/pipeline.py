"""Runs the stages in order; the only place that knows the order.

    data -> embedding -> graph -> filter -> GNN -> tracks -> metrics

Every trained model, and the train / validation graphs and scores that the next stage
trains on, go through the stage cache: a run that changes only ``gnn.*`` reuses the
data, embedding, graphs and filter. Test events are always run through every stage
afresh, so that inference times and test metrics are measured in every run (and the
test data may differ from the training data: ``eval.data``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from .augment.reflection import validate_axes
from .cache import StageCache, stage_key
from .data.dataset import EventStore, _plain, default_cache_dir, processing_key
from .metrics.edges import EdgeCounts
from .metrics.tracks import TrackCounts
from .profiling import Profiler
from .stages import embedding, filtering, gnn, graph, tracks
from .stages.common import EpochCallback, check_precision, resolve_device, val_edge_metrics

STAGES = ("embedding", "graph", "filter", "gnn", "tracks")
_EMBEDDING_GRAPH_KEYS = ("radius", "knn")  # used by graph construction, not training


@dataclass
class RunReport:
    """Everything a run measured: flat metrics, training curves, cache hits, provenance."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[tuple[str, int, str, float]] = field(default_factory=list)  # stage, epoch, name, value
    cache_hits: dict[str, bool] = field(default_factory=dict)
    per_event: dict[str, list[float]] = field(default_factory=dict)
    particles: np.ndarray | None = None  # (P, 4): pT, eta, hits, matched of the test particles
    info: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[tuple[str, str]]:
        m = self.metrics

        def pct(name):
            v, e = m.get(name, np.nan), m.get(f"{name}_err", np.nan)
            return f"{100 * v:.1f} +- {100 * e:.1f} %"

        rows = []
        for cut in ("0.1", "0.5", "1"):
            rows.append(
                (
                    f"efficiency pT > {cut} GeV (physics / technical)",
                    f"{pct(f'eff_phys_pt{cut}')} / {pct(f'eff_tech_pt{cut}')}",
                )
            )
        rows += [
            (
                "track purity / fake / duplicate rate",
                f"{pct('purity')} / {100 * m.get('fake_rate', np.nan):.1f} % / "
                f"{100 * m.get('duplicate_rate', np.nan):.1f} %",
            ),
            ("TrackML score", f"{m.get('trackml_score', np.nan):.3f}"),
        ]
        for stage in ("embedding", "filter", "gnn"):
            rows.append(
                (
                    f"edges after {stage}: eff / purity / per event / per hit",
                    f"{pct(f'edge_eff_{stage}')} / {pct(f'edge_purity_{stage}')} / "
                    f"{m.get(f'edges_per_event_{stage}', np.nan):,.0f} / "
                    f"{m.get(f'edges_per_hit_{stage}', np.nan):.2f}",
                )
            )
        for stage in STAGES:
            t_train = m.get(f"time_train_{stage}_s")
            t_inf = m.get(f"time_infer_{stage}_s")
            mem = max(m.get(f"mem_peak_train_{stage}_mb", 0.0), m.get(f"mem_peak_infer_{stage}_mb", 0.0))
            hit = self.cache_hits.get(stage)
            rows.append(
                (
                    f"{stage}: train s / infer s per event / peak MB / cache",
                    f"{'-' if t_train is None else f'{t_train:.1f}'} / "
                    f"{'-' if t_inf is None else f'{t_inf:.3f}'} / {mem:.0f} / "
                    f"{'-' if hit is None else ('hit' if hit else 'miss')}",
                )
            )
        rows.append(("wall time (s)", f"{m.get('time_total_s', np.nan):.1f}"))
        return rows

    def summary_table(self) -> str:
        rows = self.summary_rows()
        w = max(len(k) for k, _ in rows)
        line = "-" * (w + 40)
        return "\n".join([line, *(f"{k:<{w}}  {v}" for k, v in rows), line])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _select(d: Mapping, drop: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in d.items() if k not in drop}


def _data_key(store: EventStore, split: str, pt_cut, noise_fraction) -> str:
    return stage_key(
        "data",
        {"split": split, "ids": store.ids[split], "pt_cut": pt_cut, "noise": noise_fraction},
        [processing_key(store.cfg)],
    )


def run(
    cfg: Mapping,
    callback: EpochCallback | None = None,
    progress: bool = False,
    stage_callback: Callable[[str, dict[str, float]], None] | None = None,
    event_callback: Callable[[int, dict[str, float]], None] | None = None,
) -> RunReport:
    """Train (or load from the cache) every stage, test on the test events, and return
    the run report. ``callback(stage, epoch, metrics)`` sees every training epoch;
    ``stage_callback(stage, metrics)`` sees the validation edge metrics after each
    stage; ``event_callback(index, metrics)`` sees each test event's technical
    efficiency. Any of them may raise to stop the run (pruning)."""
    t_start = time.perf_counter()
    cfg = _plain(cfg)
    seed = int(cfg.get("seed", 0))
    _seed_everything(seed)
    tcfg = cfg["train"]
    device = resolve_device(str(tcfg.get("device", "auto")))
    precision = check_precision(str(tcfg.get("precision", "32")), device)
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    aug = cfg["augment"]
    reflect = validate_axes(aug.get("reflect"))
    hough_mode = aug.get("hough", "none")
    cache_root = cfg["cache"].get("dir") or default_cache_dir()
    cache = StageCache(cache_root, enabled=bool(cfg["cache"].get("enabled", True)))
    prof = Profiler(device)
    report = RunReport()

    def cb(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            report.curves.append((stage, epoch, name, float(value)))
        if callback:
            callback(stage, epoch, metrics)

    def after_stage(stage: str, metrics: dict[str, float]) -> None:
        if stage_callback:
            stage_callback(stage, metrics)

    # ---- data
    dcfg = cfg["data"]
    ecfg = cfg.get("eval") or {}
    with prof.measure("data", "prepare"):
        store = EventStore(dcfg, cache_root, progress=progress)
        pt_cut, noise = float(dcfg.get("pt_cut", 0.0)), float(dcfg.get("noise_fraction", 1.0))
        train_ev, val_ev = store.split("train"), store.split("val")
        test_store = EventStore(ecfg["data"], cache_root, progress=progress) if ecfg.get("data") else store
        tcfg_data = test_store.cfg
        test_pt = float(tcfg_data.get("pt_cut", 0.0)) if ecfg.get("pt_cut") is None else float(ecfg["pt_cut"])
        test_noise = (
            float(tcfg_data.get("noise_fraction", 1.0))
            if ecfg.get("noise_fraction") is None
            else float(ecfg["noise_fraction"])
        )
        test_ev = test_store.split("test", pt_cut=test_pt, noise_fraction=test_noise)
    if not train_ev:
        raise ValueError("data.n_train is 0: the pipeline needs training events (or cached models of them).")
    if not test_ev:
        raise ValueError("no test events: set data.n_test (or eval.data with events) to a positive number.")
    k_train = _data_key(store, "train", pt_cut, noise)
    k_val = _data_key(store, "val", pt_cut, noise)
    report.info.update(
        train_data=dcfg.get("name", dcfg.get("source")),
        test_data=tcfg_data.get("name", tcfg_data.get("source")),
        n_train=len(train_ev),
        n_val=len(val_ev),
        n_test=len(test_ev),
        device=str(device),
        hits_per_test_event=float(np.mean([d.num_nodes for d in test_ev])),
    )

    # ---- embedding
    emb_cfg = dict(cfg["embedding"], backend=cfg["graph"].get("backend", "auto"))
    k_emb = stage_key(
        "embedding",
        {"cfg": _select(emb_cfg, _EMBEDDING_GRAPH_KEYS + ("backend",)), "reflect": reflect, "seed": seed},
        [k_train],
        embedding.VERSION,
    )
    with prof.measure("embedding", "train"):
        emb_state = cache.get_or_build(
            "embedding",
            k_emb,
            lambda: embedding.train(emb_cfg, train_ev, val_ev, seed, device, reflect, cb, progress),
        )
    emb_model = embedding.load(emb_cfg, emb_state, device)

    # ---- graph construction
    gcfg = cfg["graph"]
    method = gcfg.get("method", "radius")
    if method not in ("radius", "module_map"):
        raise ValueError(f"graph.method must be 'radius' or 'module_map', got {method!r}.")
    k_graph = stage_key(
        "graph",
        {"graph": gcfg, "radius": emb_cfg["radius"], "knn": emb_cfg["knn"]},
        [k_emb if method == "radius" else k_train],
        "1",
    )
    module_map = None
    if method == "module_map":
        module_map = cache.get_or_build(
            "module_map",
            k_graph,
            lambda: graph.ModuleMap.fit(train_ev, float(gcfg.get("module_map_margin", 0.1))),
        )

    def make_graph(d: Data) -> torch.Tensor:
        if module_map is not None:
            return module_map.build(d)
        return graph.build_edges(
            d,
            embedding.embed(emb_model, d, emb_cfg["use_cells"], device),
            emb_cfg["radius"],
            emb_cfg["knn"],
            gcfg.get("backend", "auto"),
        )

    def graphs_of(events, key, name):
        with prof.measure("graph", "build", events=len(events)):
            return cache.get_or_build(name, f"{key}-{name}", lambda: [make_graph(d) for d in events])

    train_g = graphs_of(train_ev, stage_key("g", {}, [k_graph, k_train]), "graph")
    val_g = graphs_of(val_ev, stage_key("g", {}, [k_graph, k_val]), "graph_val")
    report.cache_hits["graph"] = cache.hits.get("graph", False)
    after_stage("graph", val_edge_metrics(val_ev, val_g))

    # ---- filter
    fcfg = cfg["filter"]
    k_filter = stage_key(
        "filter",
        {"cfg": _select(fcfg, ("cut", "chunk_size")), "hough": hough_mode, "reflect": reflect, "seed": seed},
        [k_graph, k_train],
        filtering.VERSION,
    )
    with prof.measure("filter", "train"):
        f_state = cache.get_or_build(
            "filter",
            k_filter,
            lambda: filtering.train(
                fcfg,
                list(zip(train_ev, train_g, strict=True)),
                list(zip(val_ev, val_g, strict=True)),
                seed,
                device,
                hough_mode,
                reflect,
                cb,
                progress,
            ),
        )
    f_model = filtering.load(fcfg, f_state, device, hough_mode)
    cut = float(fcfg["cut"])

    def filtered(events, graphs, name, key):
        scores = cache.get_or_build(
            name,
            f"{k_filter}-{key}-{name}",
            lambda: [
                filtering.infer(f_model, d, e, fcfg, device, hough_mode)
                for d, e in zip(events, graphs, strict=True)
            ],
        )
        return [e[:, s > cut] for e, s in zip(graphs, scores, strict=True)]

    with prof.measure("filter", "score_train"):
        train_f = filtered(train_ev, train_g, "filter_scores", k_train)
        val_f = filtered(val_ev, val_g, "filter_scores_val", k_val)
    after_stage("filter", val_edge_metrics(val_ev, val_f))

    # ---- GNN
    ncfg = cfg["gnn"]
    edge_cut = float(cfg["tracks"]["edge_cut"])
    checkpointing = bool(tcfg.get("checkpointing", False))
    k_gnn = stage_key(
        "gnn",
        {
            "cfg": ncfg,
            "hough": hough_mode,
            "reflect": reflect,
            "precision": precision,
            "checkpointing": checkpointing,
            "weighting": bool(aug.get("edge_weighting")),
            "p": aug.get("edge_weight_p", 1.0),
            "filter_cut": cut,
            "seed": seed,
        },
        [k_filter, k_train],
        gnn.VERSION,
    )
    with prof.measure("gnn", "train"):
        g_state = cache.get_or_build(
            "gnn",
            k_gnn,
            lambda: gnn.train(
                ncfg,
                list(zip(train_ev, train_f, strict=True)),
                list(zip(val_ev, val_f, strict=True)),
                seed,
                device,
                precision=precision,
                checkpointing=checkpointing,
                hough_mode=hough_mode,
                reflect_axes=reflect,
                edge_weighting=bool(aug.get("edge_weighting")),
                edge_weight_p=float(aug.get("edge_weight_p", 1.0)),
                edge_cut=edge_cut,
                callback=cb,
                progress=progress,
            ),
        )
    g_model = gnn.load(ncfg, g_state, device, hough_mode)

    # ---- test: every stage afresh, timed per event
    counts = {s: EdgeCounts() for s in ("embedding", "filter", "gnn")}
    tracks_counts = TrackCounts(min_track_hits=int(cfg["tracks"]["min_track_hits"]))
    it = test_ev
    if progress:
        from tqdm import tqdm

        it = tqdm(test_ev, desc="test", unit="event", leave=False)
    for i_event, d in enumerate(it):
        n_true = d.track_edges.shape[1]
        with prof.measure("graph", "infer", events=1):
            e = make_graph(d)
        counts["embedding"].add(graph.label_edges(d, e)[0].numpy(), n_true, d.num_nodes)
        with prof.measure("filter", "infer", events=1):
            fs = filtering.infer(f_model, d, e, fcfg, device, hough_mode)
            e = e[:, fs > cut]
        counts["filter"].add(graph.label_edges(d, e)[0].numpy(), n_true, d.num_nodes)
        with prof.measure("gnn", "infer", events=1):
            gs = gnn.infer(g_model, d, e, ncfg, device, hough_mode)
        counts["gnn"].add(graph.label_edges(d, e[:, gs > edge_cut])[0].numpy(), n_true, d.num_nodes)
        with prof.measure("tracks", "infer", events=1):
            labels = tracks.label_hits(
                d.num_nodes,
                e,
                gs,
                edge_cut,
                cfg["tracks"].get("backend", "auto"),
                bool(cfg["tracks"].get("resolve_junctions", True)),
                int(cfg["tracks"].get("junction_rounds", 1)),
            )
        tracks_counts.add(
            labels,
            d.pid.numpy(),
            d.weight.numpy(),
            d.p_pid.numpy(),
            d.p_pt.numpy(),
            d.p_eta.numpy(),
            d.p_nhits.numpy(),
        )
        if event_callback:
            event_callback(
                i_event, {f"eff_tech_pt{c:g}": v[-1] for c, v in tracks_counts.per_event_eff_tech.items()}
            )

    # ---- report
    m = report.metrics
    m.update(tracks_counts.summary())
    for stage, c in counts.items():
        for name, value in c.summary().items():
            m[f"{name[:-4]}_{stage}_err" if name.endswith("_err") else f"{name}_{stage}"] = value
    m.update(prof.metrics())
    infer_total = sum(m.get(f"time_infer_{s}_s", 0.0) for s in ("graph", "filter", "gnn", "tracks"))
    m["time_infer_total_s"] = infer_total
    m["hits_per_event"] = report.info["hits_per_test_event"]
    for name in ("embedding", "filter", "gnn"):
        report.cache_hits[name] = cache.hits.get(name, False)
    report.cache_hits["data"] = store.n_built == 0 and test_store.n_built == 0
    report.particles = tracks_counts.particles()
    report.per_event["eff_tech_pt0.5"] = [float(x) for x in tracks_counts.per_event_eff_tech[0.5]]
    report.per_event["edge_eff_embedding"] = counts["embedding"].per_event_efficiency
    m["time_total_s"] = time.perf_counter() - t_start
    return report
