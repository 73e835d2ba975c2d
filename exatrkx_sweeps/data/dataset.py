"""Events -> processed graphs: features, truth, selections, splits and an on-disk cache.

A processed event is a ``torch_geometric.data.Data`` holding every hit of the event
(noise included) with:

* node level (N): ``x`` (r/1000, phi/pi, z/1000), ``cell`` (9 cell features), ``pos``
  (x, y, z in mm), ``hit_id``, ``pid`` (0 = noise), ``pt`` / ``eta`` of the hit's
  particle, ``weight`` (TrackML), ``layer`` and ``module`` keys, ``vr`` / ``vz`` (the
  particle's production vertex, mm), ``dist`` (from that vertex, mm), ``noise_rank``;
* edges: ``track_edges`` (module-wise truth, 2 x E) and ``layer_edges`` (layer-wise);
* particle table: ``p_pid``, ``p_pt``, ``p_eta``, ``p_nhits`` (hits in this view).

:func:`select` gives the view a run trains or tests on: hits of particles above a pT cut
and a share of the nominal noise. Splits are disjoint ranges of event ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from ..cache import default_dir, read_checked, write_checked
from ..fingerprint import fingerprint
from ..progress import progress
from . import SOURCES, features, noise, truth
from .geometry import Detector
from .simulate import SimulationConfig, default_detector, simulate_event
from .trackml import Event, TrackMLFormatError, event_files, list_events, read_detectors, read_event

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_NODE_KEYS = (
    "x",
    "cell",
    "pos",
    "hit_id",
    "pid",
    "pt",
    "eta",
    "weight",
    "layer",
    "module",
    "vr",
    "vz",
    "dist",
    "noise_rank",
)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a))  # a writable copy


def process_event(event: Event, detector: Detector, seed: int = 0) -> Data:
    """Full processed event (all hits, all noise) from an official-format event."""
    hits = event.hits.merge(event.truth, on="hit_id", how="left", validate="one_to_one")
    parts = event.particles.set_index("particle_id")
    pid = hits.particle_id.to_numpy(np.int64)
    is_noise = pid == 0
    pt_all = np.hypot(parts.px, parts.py).to_numpy()
    p_abs = np.sqrt(pt_all**2 + parts.pz.to_numpy() ** 2)
    eta_all = np.arctanh(np.clip(parts.pz.to_numpy() / np.maximum(p_abs, 1e-12), -0.999999, 0.999999))
    known = np.isin(pid, parts.index.to_numpy()) | is_noise
    if not known.all():
        raise TrackMLFormatError(
            f"{event.name}-truth: {int((~known).sum())} hits belong to particle ids absent from "
            f"the particles file (e.g. {int(pid[~known][0])})."
        )
    loc = parts.index.get_indexer(pid)
    sig = ~is_noise
    pt = np.where(sig, pt_all[loc], 0.0)
    eta = np.where(sig, eta_all[loc], 0.0)
    v = parts[["vx", "vy", "vz"]].to_numpy()[loc]
    v[is_noise] = 0.0
    xyz = hits[["x", "y", "z"]].to_numpy(float)
    dist = np.linalg.norm(xyz - v, axis=1)
    mkey = truth.module_key(hits.volume_id, hits.layer_id, hits.module_id)
    lkey = truth.layer_key(hits.volume_id, hits.layer_id)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(event.event_id), 7]))
    p_pid = parts.index.to_numpy(np.int64)
    p_nhits = np.bincount(loc[sig], minlength=len(parts))
    return Data(
        x=_tensor(features.node_features(xyz[:, 0], xyz[:, 1], xyz[:, 2])),
        cell=_tensor(features.cell_features(event.hits, event.cells, detector)),
        pos=_tensor(xyz.astype(np.float32)),
        hit_id=_tensor(hits.hit_id.to_numpy(np.int64)),
        pid=_tensor(pid),
        pt=_tensor(pt.astype(np.float32)),
        eta=_tensor(eta.astype(np.float32)),
        weight=_tensor(hits.weight.to_numpy(np.float32)),
        layer=_tensor(lkey),
        module=_tensor(mkey),
        vr=_tensor(np.hypot(v[:, 0], v[:, 1]).astype(np.float32)),
        vz=_tensor(v[:, 2].astype(np.float32)),
        dist=_tensor(dist.astype(np.float32)),
        noise_rank=_tensor(noise.noise_ranks(rng, is_noise)),
        track_edges=_tensor(truth.truth_edges(pid, dist, mkey)),
        layer_edges=_tensor(truth.truth_edges(pid, dist, lkey)),
        p_pid=_tensor(p_pid),
        p_pt=_tensor(pt_all.astype(np.float32)),
        p_eta=_tensor(eta_all.astype(np.float32)),
        p_nhits=_tensor(p_nhits.astype(np.int64)),
        event_id=int(event.event_id),
        num_nodes=len(hits),
    )


def select(data: Data, pt_cut: float = 0.0, noise_fraction: float = 1.0) -> Data:
    """The view of an event a run uses: hits of particles with pT >= ``pt_cut`` (GeV)
    and ``noise_fraction`` of the nominal noise. Truth edges and the particle table's
    hit counts follow the kept hits."""
    keep = noise.keep_mask(data.noise_rank.numpy(), noise_fraction)
    sig = data.pid.numpy() != 0
    keep &= ~sig | (data.pt.numpy() >= pt_cut)
    keep_t = torch.from_numpy(keep)
    new_index = torch.full((data.num_nodes,), -1, dtype=torch.long)
    new_index[keep_t] = torch.arange(int(keep.sum()))
    out = Data(num_nodes=int(keep.sum()), event_id=data.event_id)
    for key in _NODE_KEYS:
        out[key] = data[key][keep_t]
    for key in ("track_edges", "layer_edges"):
        e = data[key]
        ok = keep_t[e[0]] & keep_t[e[1]]
        out[key] = new_index[e[:, ok]]
    out.p_pid, out.p_pt, out.p_eta = data.p_pid, data.p_pt, data.p_eta
    order = np.argsort(data.p_pid.numpy())
    pid_sorted = data.p_pid.numpy()[order]
    loc = order[np.clip(np.searchsorted(pid_sorted, out.pid.numpy()), 0, len(order) - 1)]
    counts = np.bincount(loc[out.pid.numpy() != 0], minlength=len(order))
    out.p_nhits = torch.from_numpy(counts.astype(np.int64))
    return out


# ------------------------------------------------------------------ sources ----


def split_event_ids(cfg: Mapping, available: list[int] | None = None) -> dict[str, list[int]]:
    """Disjoint train / val / test event ids. Simulated data numbers events from
    ``first_event``; a TrackML directory's events are taken in sorted order, and
    ``n_test: null`` means every event left after train and val. The test events come
    first, then validation, then training, so that a study of ``n_train`` (or of
    ``n_val``) always tests on the same events."""
    counts = {s: cfg.get(f"n_{s}") for s in SPLITS}
    if available is None:
        if any(c is None for c in counts.values()):
            raise ValueError("data: simulated data needs n_train, n_val and n_test as numbers.")
        start = int(cfg.get("first_event", 1000))
        available = list(range(start, start + sum(int(c) for c in counts.values())))
    n_train, n_val = int(counts["train"] or 0), int(counts["val"] or 0)
    n_test = len(available) - n_train - n_val if counts["test"] is None else int(counts["test"])
    if n_train + n_val + n_test > len(available) or n_test < 0:
        raise ValueError(
            f"data: asked for {n_train}/{n_val}/{n_test} train/val/test events but the "
            f"directory holds {len(available)}; lower data.n_train/n_val/n_test."
        )
    return {
        "test": available[:n_test],
        "val": available[n_test : n_test + n_val],
        "train": available[n_test + n_val : n_test + n_val + n_train],
    }


def detector_file(cfg: Mapping) -> Path | None:
    """The data's detectors file: ``detector``, else ``path``/detectors.csv[.gz], else
    None (the built-in TrackML detector)."""
    if cfg.get("detector"):
        return Path(cfg["detector"])
    if cfg.get("source") == "trackml" and cfg.get("path"):
        for name in ("detectors.csv", "detectors.csv.gz"):
            if (Path(cfg["path"]) / name).exists():
                return Path(cfg["path"]) / name
    return None


def _simulation_config(cfg: Mapping) -> SimulationConfig:
    return SimulationConfig(**(cfg.get("simulation") or {}))


def processing_key(cfg: Mapping) -> str:
    """Hash of what determines the processed events (not the selection views): the data
    settings and the fingerprint of the simulation and processing code."""
    relevant = {k: cfg.get(k) for k in ("source", "path", "detector", "simulation", "seed", "first_event")}
    if relevant.get("path"):
        relevant["path"] = str(Path(relevant["path"]).resolve())
    relevant["code"] = fingerprint(__name__)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


class EventStore:
    """Processed events of one data config, built on first use and cached on disk.

    ``store.split('train')`` returns the selection views of the train events. ``cfg`` is
    a data config as plain values (a ``data`` group of a validated run config)."""

    def __init__(self, cfg: Mapping, cache_dir: str | Path | None = None, progress: bool = False):
        self.cfg = dict(cfg)
        self.source = self.cfg.get("source", "simulate")
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {self.source!r}.")
        if self.source == "trackml" and not self.cfg.get("path"):
            raise ValueError(
                "data.path: give the directory of your TrackML events (data=trackml data.path=/dir)."
            )
        self.progress = progress
        self.detector_file = detector_file(self.cfg)
        self.detector = read_detectors(self.detector_file) if self.detector_file else default_detector()
        self.available = list_events(self.cfg["path"]) if self.source == "trackml" else None
        self.ids = split_event_ids(self.cfg, self.available)
        root = Path(cache_dir) if cache_dir else default_dir()
        self.dir = root / "processed" / processing_key(self.cfg)
        self.n_built = 0  # events processed (not read from the cache) by this store

    def _build(self, event_id: int) -> Data:
        seed = int(self.cfg.get("seed", 0))
        if self.source == "simulate":
            event = simulate_event(_simulation_config(self.cfg), seed, event_id, self.detector)
        else:
            event = read_event(self.cfg["path"], event_id, cells=None, detector=self.detector)
        return process_event(event, self.detector, seed)

    def inputs(self, event_id: int) -> dict[str, list[int]]:
        """Identity of the files an event is processed from: size and modification time
        of its TrackML files (and of a detectors file); none for simulated events, whose
        settings and code are in the processing key."""
        files = []
        if self.source == "trackml":
            files += [p for p in event_files(self.cfg["path"], event_id).values() if p is not None]
        if self.detector_file is not None:
            files.append(self.detector_file)
        return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}

    def event(self, event_id: int) -> Data:
        """The processed event: from the cache when its checksum and input files match,
        else processed (again) and cached, as tensors only."""
        path = self.dir / f"event{event_id:09d}.pt"
        inputs = self.inputs(event_id)
        ok, entry = read_checked(path, f"processed event {event_id}")
        if ok and entry.get("inputs") == inputs:
            return Data(**entry["event"])
        if ok:
            log.warning(f"processed event {event_id}: its input files changed since: processing it again")
        data = self._build(event_id)
        self.n_built += 1
        write_checked(path, {"event": data.to_dict(), "inputs": inputs})
        return data

    def split(
        self, name: str, pt_cut: float | None = None, noise_fraction: float | None = None
    ) -> list[Data]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}.")
        pt_cut = float(self.cfg.get("pt_cut", 0.0) if pt_cut is None else pt_cut)
        noise_fraction = float(
            self.cfg.get("noise_fraction", 1.0) if noise_fraction is None else noise_fraction
        )
        ids = self.ids[name]
        it = progress(ids, f"data ({name})", "event", enabled=self.progress and bool(ids))
        return [select(self.event(i), pt_cut, noise_fraction) for i in it]
