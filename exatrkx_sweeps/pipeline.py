"""Runs the stages in order; the only place that knows the order.

    data -> embedding -> graph -> filter -> GNN -> tracks -> metrics

Every stage goes through the same steps (:mod:`.stages.base`): its settings and the
upstream key give its cache key; it is fitted (or taken from the stage cache); the
fitted stage is applied to the validation events while a later stage still has to
train, and to the training events only when a later stage's training actually runs (a
cache miss; outputs cached too). A run that changes only ``gnn.*`` therefore reuses
the data, embedding, graphs and filter, and one that finds every fitted stage in the
cache (a change of ``tracks.*``, fitted stages carried to another machine) never
applies them to the training events, and never reads or simulates those events. The
test events then go through every fitted stage afresh, one event at a time, so that
inference times and test metrics are measured in every run (and the test data may
differ from the training data: ``eval.data``).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from . import allocator, distributed
from .cache import StageCache, default_dir, stage_key
from .config import plain, resolve_precisions
from .data.dataset import EventStore, processing_key
from .errors import ConfigError
from .fingerprint import fingerprint
from .metrics.edges import EdgeCounts
from .metrics.tracks import TrackCounts
from .profiling import Profiler
from .progress import progress as show_progress
from .report import RunReport
from .stages import graph
from .stages.base import Applier, EpochCallback, EventGraph, RunContext, Settings, Stage
from .stages.common import check_precision, count_edges, resolve_device, val_edge_metrics
from .stages.embedding import Embedding
from .stages.filtering import Filter
from .stages.gnn import GNN
from .stages.neighbours import resolve_backend as graph_backend
from .stages.tracks import Tracks
from .stages.tracks import resolve_backend as tracks_backend

# what a fitted stage's cache entry holds ({"state", "fit"}); part of its key
ENTRY_FORMAT = "state+fit"


@dataclass
class Callbacks:
    """How a caller follows a run; any of them may raise to stop it (pruning)."""

    on_epoch: EpochCallback | None = None  # (stage, epoch, metrics) after every training epoch
    on_stage: Callable[[str, dict[str, float]], None] | None = None  # (stage, validation edge metrics)
    on_event: Callable[[int, dict[str, float]], None] | None = None  # (index, metrics) per test event
    # (stage, its settings, its fitted state or None) once it is fitted or taken from the cache
    on_fitted: Callable[[Stage, Settings, Any], None] | None = None


def stages(cfg: Mapping) -> list[Stage]:
    """The stages of a run, in order; the embedding only where the graph is built from it."""
    chain = [graph.from_config(cfg), Filter(), GNN(), Tracks()]
    if chain[0].requires_embedding:
        chain.insert(0, Embedding())
    return chain


@dataclass
class Events:
    # the training events, read (or simulated) when a stage's training first asks for
    # them: fitted stages from the cache never do (a PU200 event takes 3 s to simulate)
    train: Callable[[], list[Data]]
    val: list[Data]
    test: list[Data]
    key: str  # identity of the training and validation events: upstream of the first stage
    stores: tuple[EventStore, ...]
    info: dict = field(default_factory=dict)

    @property
    def processed(self) -> int:
        """Events processed afresh so far (not read from the cache)."""
        return sum(s.n_built for s in self.stores)


@dataclass
class Fitted:
    stage: Stage
    apply: Applier
    key: str


def run(cfg: Mapping, callbacks: Callbacks | None = None, progress: bool = False) -> RunReport | None:
    """Fit (or take from the cache) every stage, test on the test events, and return the
    run report. Of several training processes (distributed.py) only rank 0 tests and
    reports; the others return None after training."""
    t_start = time.perf_counter()
    cfg = plain(cfg)
    callbacks = callbacks or Callbacks()
    report = RunReport()
    seed = int(cfg.get("seed", 0))
    random.seed(seed)
    torch.manual_seed(seed)
    world, device = _join(cfg)
    _resolve_precisions(cfg, device)

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        report.curves.extend((stage, epoch, k, float(v)) for k, v in metrics.items())
        if callbacks.on_epoch:
            callbacks.on_epoch(stage, epoch, metrics)

    per_step = int(cfg["train"].get("events_per_step", 1))
    ctx = RunContext(device, progress, on_epoch, world, per_step)
    progress = progress and world.main
    cache_root = Path(cfg["cache"].get("dir") or default_dir())
    cache = StageCache(cache_root, enabled=bool(cfg["cache"].get("enabled", True)))
    prof = Profiler(device)
    with prof.measure("data", "prepare"):
        if not world.main:
            distributed.barrier(world)  # the events are processed once, by rank 0
        # several processes: rank 0 processes the training events too, before the barrier
        # and within this measurement (which the lazy read would time a second time)
        events = load_events(cfg, cache_root, progress, prof if world.size == 1 else None)
        if world.size > 1:
            events.train()
        if world.main:
            distributed.barrier(world)
    fitted = fit_stages(ctx, cfg, events, cache, prof, report, callbacks.on_stage, callbacks.on_fitted)
    distributed.finish(world)  # training is over: rank 0 tests alone
    if not world.main:
        return None
    edges, tracks = evaluate(fitted, events.test, prof, cfg, callbacks.on_event, progress)

    m = report.metrics
    m.update(evaluation_metrics(fitted, edges, tracks, prof))
    m["hits_per_event"] = float(np.mean([d.num_nodes for d in events.test]))
    report.info.update(events.info, device=str(device), hits_per_test_event=m["hits_per_event"])
    # the neighbour search and connected components that ran (auto: GPU ones where usable);
    # a module map searches no embedding
    searched = any(f.stage.requires_embedding for f in fitted)
    report.info.update(
        graph_backend=graph_backend(cfg["graph"]["backend"], device) if searched else "none",
        tracks_backend=tracks_backend(cfg["tracks"]["backend"]),
    )
    report.cache_hits["data"] = events.processed == 0
    report.particles = tracks.particles()
    report.per_event["eff_tech_pt0.5"] = [float(x) for x in tracks.per_event_eff_tech[0.5]]
    report.per_event["edge_eff_embedding"] = edges["embedding"].per_event_efficiency
    m["time_total_s"] = time.perf_counter() - t_start
    return report


def evaluation_metrics(
    fitted: list[Fitted], edges: dict[str, EdgeCounts], tracks: TrackCounts, prof: Profiler
):
    """The metrics of a test pass (``evaluate``): the tracks', the edges' after each
    stage, the profiler's, and the inference time per event of all stages together."""
    m = tracks.summary()
    for name, counts in edges.items():
        m.update(counts.summary(name))
    m.update(prof.metrics())
    m["time_infer_total_s"] = sum(m.get(f"time_infer_{f.stage.name}_s", 0.0) for f in fitted)
    return m


def _join(cfg: dict) -> tuple[distributed.World, torch.device]:
    """The processes this run trains with and this one's device; ``train.devices`` is
    set to their number (the fitted states depend on the events per step of all of them)."""
    train = cfg["train"]
    world = distributed.world_from_env()
    if int(train.get("devices", 1)) > 1 and world.size == 1:
        raise ConfigError(
            f"train.devices={train['devices']}: this process was not started as one of "
            f"{train['devices']} (python -m exatrkx_sweeps starts them with torchrun; or torchrun, srun)."
        )
    train["devices"] = world.size
    device = distributed.device_of(world, resolve_device(str(train.get("device", "auto"))))
    if train.get("threads"):
        torch.set_num_threads(int(train["threads"]))
    elif world.size > 1 and device.type == "cpu":  # the node's cores shared by its ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
    distributed.init(world, device)
    allocator.keep_freed_memory()
    return world, device


def _resolve_precisions(cfg: dict, device: torch.device) -> None:
    """The run's precisions of ``auto`` made what ``device`` runs, in place (they are in the keys)."""
    check_precision(str(cfg["train"].get("precision", "32")), device)
    # auto on a device that config validation could not tell without torch (CUDA): bf16
    # only where the GPU has bf16 units (a V100 would emulate it)
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    resolve_precisions(cfg, device.type, cuda_bf16)


def _data_key(store: EventStore, split: str, pt_cut: float, noise_fraction: float) -> str:
    return stage_key(
        "data",
        {"split": split, "ids": store.ids[split], "pt_cut": pt_cut, "noise": noise_fraction},
        [processing_key(store.cfg)],
    )


def _events_key(store: EventStore, dcfg: Mapping) -> str:
    """Identity of the training and validation events: upstream of the first stage."""
    pt_cut, noise = float(dcfg.get("pt_cut", 0.0)), float(dcfg.get("noise_fraction", 1.0))
    return stage_key("data", {}, [_data_key(store, s, pt_cut, noise) for s in ("train", "val")])


def _keys(stage: Stage, s: Settings, upstream: str) -> tuple[str, str]:
    """A stage's fit key (its fitted state's entry) and output key, from its settings, the
    upstream key and its code."""
    fit_key = stage_key(stage.name, s.fit, [upstream, ENTRY_FORMAT], fingerprint(*stage.code(s)))
    return fit_key, stage_key(stage.name, s.apply, [fit_key])


@dataclass
class KeyParts:
    """What a fitting stage's fit key is made of, to tell which part differs between two
    machines or checkouts."""

    stage: str
    fit_key: str
    settings: dict
    upstream: str
    code: str  # the code fingerprint

    def differences(self, other: KeyParts) -> list[str]:
        """What differs between this machine's parts (here) and ``other`` (there)."""
        missing = "(absent)"
        here, there = self.settings, other.settings
        diff = [
            f"{self.stage}.{k}: {here.get(k, missing)!r} here, {there.get(k, missing)!r} there"
            for k in sorted(here.keys() | there.keys())
            if here.get(k, missing) != there.get(k, missing)
        ]
        if self.code != other.code:
            diff.append(f"{self.stage}: its code differs (the modules' source, or how this Python parses it)")
        if not diff and self.upstream != other.upstream:
            diff.append(f"{self.stage}: an upstream key differs (the events' settings, or an earlier stage)")
        return diff


def key_parts(cfg: Mapping, device: str | torch.device = "cpu") -> list[KeyParts]:
    """The fit key of every fitting stage of ``cfg`` on ``device``, and what it is made
    of, as :func:`run` computes them, without reading or simulating an event: to check
    that a cache holds every fitted stage (models carried to another machine) before a
    run would train the missing ones."""
    cfg = plain(cfg)
    _resolve_precisions(cfg, torch.device(device))
    store = EventStore(cfg["data"], Path(cfg["cache"].get("dir") or default_dir()), progress=False)
    upstream, parts = _events_key(store, cfg["data"]), []
    for stage in stages(cfg):
        s = stage.settings(cfg)
        fit_key, upstream_next = _keys(stage, s, upstream)
        if stage.fits:
            settings = json.loads(json.dumps(dict(s.fit), sort_keys=True, default=str))
            parts.append(KeyParts(stage.name, fit_key, settings, upstream, fingerprint(*stage.code(s))))
        upstream = upstream_next
    return parts


def load_events(cfg: Mapping, cache_root: Path, progress: bool, prof: Profiler | None = None) -> Events:
    """The training and validation events of ``data``, and the test events of
    ``eval.data`` (else of ``data``) with ``eval``'s pT cut and noise share. The training
    events are read the first time ``events.train()`` is called (timed as the data's
    preparation in ``prof``), then kept."""
    dcfg, ecfg = cfg["data"], cfg.get("eval") or {}
    store = EventStore(dcfg, cache_root, progress=progress)
    test_store = EventStore(ecfg["data"], cache_root, progress=progress) if ecfg.get("data") else store
    test_pt = ecfg.get("pt_cut")
    test_noise = ecfg.get("noise_fraction")
    test_pt = float(test_store.cfg.get("pt_cut", 0.0) if test_pt is None else test_pt)
    test_noise = float(test_store.cfg.get("noise_fraction", 1.0) if test_noise is None else test_noise)
    if not store.ids["train"]:
        raise ValueError("data.n_train is 0: the pipeline needs training events (or cached models of them).")
    val = store.split("val")
    test = test_store.split("test", pt_cut=test_pt, noise_fraction=test_noise)
    if not test:
        raise ValueError("no test events: set data.n_test (or eval.data with events) to a positive number.")
    read: list[list[Data]] = []

    def train() -> list[Data]:
        if not read:
            with prof.measure("data", "prepare") if prof else nullcontext():
                read.append(store.split("train"))
        return read[0]

    key = _events_key(store, dcfg)
    info = {
        "train_data": dcfg.get("name", dcfg.get("source")),
        "test_data": test_store.cfg.get("name", test_store.cfg.get("source")),
        "n_train": len(store.ids["train"]),
        "n_val": len(val),
        "n_test": len(test),
    }
    stores = (store,) if test_store is store else (store, test_store)
    return Events(train, val, test, key, stores, info)


def fit_stages(
    ctx: RunContext,
    cfg: Mapping,
    events: Events,
    cache: StageCache,
    prof: Profiler,
    report: RunReport,
    on_stage: Callable[[str, dict[str, float]], None] | None = None,
    on_fitted: Callable[[Stage, Settings, Any], None] | None = None,
) -> list[Fitted]:
    """Fit every stage in order on what the stages before it made of the training and
    validation events; each fitted state and each output keyed and cached. What a stage
    makes of the training events is made when a later stage's training needs it."""
    chain = stages(cfg)
    train: Callable[[], list[EventGraph]] = partial(_graphs, events.train)
    val = [EventGraph(d) for d in events.val]
    upstream = events.key
    fitted, prepared = [], []
    for i, stage in enumerate(chain):
        s = stage.settings(cfg)
        fit_key, key = _keys(stage, s, upstream)
        state = None
        if stage.fits:
            if not cache.contains(fit_key):
                train()  # the stages before, each timed as its own, not as this one's training
            with prof.measure(stage.name, "train"):
                checkpoint = cache.checkpoint(fit_key)  # a killed training goes on from it
                fit = partial(_fit, stage, replace(ctx, checkpoint=checkpoint), s, train, val)
                entry = _fitted(cache, ctx.world, stage.name, fit_key, fit)
                if checkpoint is not None and ctx.world.main:
                    checkpoint.unlink(missing_ok=True)
            state = entry["state"]
            report.metrics.update({f"fit_{k}_{stage.name}": float(v) for k, v in entry["fit"].items()})
        if on_fitted:
            on_fitted(stage, s, state)
        apply = stage.load(ctx, s, state)
        if any(later.fits for later in chain[i + 1 :]):
            train = _prepared(cache, prof, stage.name, key, apply, train)
            prepared.append(stage)
            with prof.measure(stage.name, "prepare"):
                val = _outputs(cache, f"{stage.name}.val", key, apply, val)
            if stage.edge_metrics and on_stage:
                on_stage(stage.name, val_edge_metrics([ev.data for ev in val], [ev.edges for ev in val]))
        fitted.append(Fitted(stage, apply, key))
        upstream = key
    for stage in chain:  # from the cache, or (a stage that fits nothing) nothing made afresh
        made = cache.hits.get(f"{stage.name}.train", True) if stage in prepared else None
        report.cache_hits[stage.name] = cache.hits.get(stage.name) if stage.fits else made
    return fitted


def _graphs(read: Callable[[], list[Data]]) -> list[EventGraph]:
    return [EventGraph(d) for d in read()]


def _prepared(cache: StageCache, prof: Profiler, name: str, key: str, apply: Applier, upstream):
    """What stage ``name`` makes of the training events (``upstream()``), made and cached
    the first time it is asked for, then kept (and the stages' before let go: at pile-up
    200 one stage's graphs of 16 events take 1.6 GB)."""
    made: list[list[EventGraph]] = []

    def get() -> list[EventGraph]:
        nonlocal upstream
        if not made:
            events = upstream()  # outside this stage's timer: the stages before time their own
            with prof.measure(name, "prepare"):
                made.append(_outputs(cache, f"{name}.train", key, apply, events))
            upstream = None
        return made[0]

    return get


def _fitted(cache: StageCache, world: distributed.World, name: str, key: str, fit: Callable[[], dict]):
    """A stage's cache entry, from the cache or ``fit()``. Several processes train
    together: all of them fit unless rank 0 finds the entry, which it then sends to the
    others; rank 0 alone writes it."""
    if world.size == 1:
        return cache.get_or_build(name, key, fit)
    cached = distributed.broadcast(world, cache.get(name, key) if world.main else None)
    if cached is not None:
        return cached
    entry = fit()
    if world.main:
        cache.put(name, key, entry)
    return entry


def _fit(
    stage: Stage, ctx: RunContext, s, train: Callable[[], list[EventGraph]], val: list[EventGraph]
) -> dict:
    """The cache entry of a fitted stage: its state, its training metrics (the last
    epoch's value of each) and how long it trained, which a run reports as
    ``fit_<name>_<stage>`` (``fit_time_s_gnn``) also when the stage comes from the cache."""
    last: dict[str, float] = {}

    def on_epoch(name: str, epoch: int, metrics: dict[str, float]) -> None:
        last.update(metrics)
        if ctx.on_epoch:
            ctx.on_epoch(name, epoch, metrics)

    t0 = time.perf_counter()
    state = stage.fit(replace(ctx, on_epoch=on_epoch), s, train(), val)
    return {"state": state, "fit": {**last, "time_s": time.perf_counter() - t0}}


def _outputs(cache: StageCache, name: str, key: str, apply: Applier, events: list[EventGraph]):
    """``apply`` on every event, its outputs cached under the stage's key."""
    outputs = cache.get_or_build(
        name, stage_key(name, {}, [key]), lambda: [apply(ev).outputs() for ev in events]
    )
    return [EventGraph(ev.data, **out) for ev, out in zip(events, outputs, strict=True)]


def evaluate(
    fitted: list[Fitted],
    events: list[Data],
    prof: Profiler,
    cfg: Mapping,
    on_event: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = False,
) -> tuple[dict[str, EdgeCounts], TrackCounts]:
    """Every event through every fitted stage, timed per stage: edge counts after each
    graph-making stage and the track metrics of the candidates."""
    edges = {f.stage.edge_metrics: EdgeCounts() for f in fitted if f.stage.edge_metrics}
    tracks = TrackCounts(min_track_hits=int(cfg["tracks"]["min_track_hits"]))
    for i, d in enumerate(show_progress(events, "test", "event", enabled=progress)):
        ev = EventGraph(d)
        for f in fitted:
            with prof.measure(f.stage.name, "infer", events=1):
                ev = f.apply(ev)
            if f.stage.edge_metrics:
                count_edges(edges[f.stage.edge_metrics], d, ev.edges)
        tracks.add(
            ev.labels, d.pid.numpy(), d.weight.numpy(), d.p_pid.numpy(), d.p_pt.numpy(), d.p_eta.numpy(),
            d.p_nhits.numpy(),
        )  # fmt: skip
        if on_event:
            on_event(i, {f"eff_tech_pt{c:g}": v[-1] for c, v in tracks.per_event_eff_tech.items()})
    return edges, tracks
