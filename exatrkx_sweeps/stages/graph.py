"""Graph construction (stage 2), in two implementations chosen by ``graph.method``.

* ``radius`` (:class:`RadiusGraph`): the radius graph of the embedding
  (``embedding.radius``, capped at ``embedding.knn`` neighbours per hit), built by
  :func:`~.neighbours.build_edges` with any search backend (``graph.backend``).
* ``module_map`` (:class:`ModuleMapGraph`): the alternative construction of the seed
  and later ATLAS work. Fitting records the module-to-module connections seen in the
  true edges of the training events, each with the ranges of simple geometric
  quantities of its true edges; applying it takes all hit pairs of connected modules
  that pass their pair's cuts.

The edge metrics after this stage are reported as ``*_embedding`` (the Exa.TrkX name
for the graph after the embedding), whichever method built it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from . import GRAPH_METHODS
from .base import EventGraph, RunContext, Settings, Stage
from .neighbours import build_edges, orient_and_clean


class RadiusGraph(Stage):
    name = "graph"
    fits = False
    edge_metrics = "embedding"
    requires_embedding = True

    def settings(self, cfg) -> Settings:
        return Settings(
            fit={"method": "radius"},
            apply={"radius": cfg["embedding"]["radius"], "knn": cfg["embedding"]["knn"]},
            runtime={"backend": cfg["graph"]["backend"]},
        )

    def load(self, ctx: RunContext, s: Settings, state):
        def apply(ev: EventGraph) -> EventGraph:
            edges = build_edges(ev.data, ev.embedding, s["radius"], s["knn"], s["backend"])
            return ev.replace(embedding=None, edges=edges, scores=None)

        return apply


class ModuleMapGraph(Stage):
    name = "graph"
    edge_metrics = "embedding"
    requires_embedding = False

    def settings(self, cfg) -> Settings:
        return Settings(fit={"method": "module_map", "margin": cfg["graph"]["module_map_margin"]})

    def fit(self, ctx: RunContext, s: Settings, train: list[EventGraph], val: list[EventGraph]):
        return ModuleMap.fit([ev.data for ev in train], float(s["margin"])).state()

    def load(self, ctx: RunContext, s: Settings, state):
        module_map = ModuleMap.from_state(state)

        def apply(ev: EventGraph) -> EventGraph:
            return ev.replace(edges=module_map.build(ev.data), scores=None)

        return apply


METHODS: dict[str, type[Stage]] = dict(zip(GRAPH_METHODS, (RadiusGraph, ModuleMapGraph), strict=True))


def from_config(cfg) -> Stage:
    return METHODS[cfg["graph"]["method"]]()


# ---------------------------------------------------------------- module map ----


def _edge_geometry(pos: torch.Tensor, edges: torch.Tensor) -> np.ndarray:
    """(E, 2): z intercept at r = 0 (mm) and dphi / dr (rad / mm) of each hit pair."""
    p = pos.double().numpy()
    a, b = p[edges[0]], p[edges[1]]
    ra, rb = np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1])
    dr = rb - ra
    dr_safe = np.where(np.abs(dr) > 1e-3, dr, 1e-3)
    z0 = a[:, 2] - ra * (b[:, 2] - a[:, 2]) / dr_safe
    dphi = np.angle(np.exp(1j * (np.arctan2(b[:, 1], b[:, 0]) - np.arctan2(a[:, 1], a[:, 0]))))
    return np.column_stack([np.clip(z0, -1e5, 1e5), dphi / dr_safe])


@dataclass
class ModuleMap:
    """Module pairs (inner, outer) seen in training truth, with per-pair cut ranges."""

    src: np.ndarray  # module keys, sorted by (src, dst)
    dst: np.ndarray
    lo: np.ndarray  # (M, 2) lower bounds of (z0, dphi/dr)
    hi: np.ndarray

    @classmethod
    def fit(cls, events: list[Data], margin: float = 0.1) -> ModuleMap:
        rows = []
        for d in events:
            e = orient_and_clean(d, d.track_edges)
            g = _edge_geometry(d.pos, e)
            rows.append(np.column_stack([d.module[e[0]].numpy(), d.module[e[1]].numpy(), g]))
        if not rows or sum(len(r) for r in rows) == 0:
            raise ValueError("graph=module_map needs training events with true edges.")
        allr = np.concatenate(rows)
        pair = allr[:, :2].astype(np.int64)
        uniq, inv = np.unique(pair, axis=0, return_inverse=True)
        inv = inv.ravel()
        lo = np.full((len(uniq), 2), np.inf)
        hi = np.full((len(uniq), 2), -np.inf)
        for c in range(2):
            np.minimum.at(lo[:, c], inv, allr[:, 2 + c])
            np.maximum.at(hi[:, c], inv, allr[:, 2 + c])
        width = hi - lo
        pad = margin * np.maximum(width, np.array([5.0, 1e-4]))
        return cls(uniq[:, 0], uniq[:, 1], lo - pad, hi + pad)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in ("src", "dst", "lo", "hi")
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ModuleMap:
        return cls(**{k: v.numpy() for k, v in state.items()})

    def __len__(self) -> int:
        return len(self.src)

    def build(self, data: Data) -> torch.Tensor:
        """All hit pairs of connected modules passing the pair's cuts, oriented inside-out."""
        mod = data.module.numpy()
        order = np.argsort(mod, kind="stable")
        mods, start, count = np.unique(mod[order], return_index=True, return_counts=True)
        ia = np.searchsorted(mods, self.src)
        ib = np.searchsorted(mods, self.dst)
        ia_c, ib_c = np.clip(ia, 0, len(mods) - 1), np.clip(ib, 0, len(mods) - 1)
        present = (mods[ia_c] == self.src) & (mods[ib_c] == self.dst)
        m = np.flatnonzero(present)
        na, nb = count[ia_c[m]], count[ib_c[m]]
        n_pairs = na * nb
        entry = np.repeat(np.arange(m.size), n_pairs)
        within = np.arange(entry.size) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        a = order[start[ia_c[m]][entry] + within // nb[entry]]
        b = order[start[ib_c[m]][entry] + within % nb[entry]]
        edges = torch.from_numpy(np.vstack([a, b]).astype(np.int64))
        g = _edge_geometry(data.pos, edges)
        mm = m[entry]
        ok = np.all((g >= self.lo[mm]) & (g <= self.hi[mm]), axis=1)
        return orient_and_clean(data, edges[:, torch.from_numpy(ok)])
