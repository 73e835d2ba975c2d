"""Track building (stage 5): connected components of the edges scored above the cut.

With ``tracks.resolve_junctions`` (default) every hit keeps at most one outgoing and
one incoming edge (edges point inside-out), chosen by a greedy matching on the score
(``tracks.junction_rounds``: 1 keeps only mutual best edges, 0 repeats until nothing
changes), so one fake edge at a branching point neither merges two tracks nor, when it
outscores a true edge, splits one. scipy on CPU; cugraph when it is installed and CUDA is present.
Every hit gets a label (a hit with no kept edge is its own component); candidates are
the components with at least ``tracks.min_track_hits`` hits (metrics/tracks.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .base import EventGraph, RunContext, Settings, Stage

try:  # the optional GPU backend (RAPIDS)
    import cudf
    import cugraph
except ImportError:
    cudf = cugraph = None

from . import TRACK_BACKENDS as BACKENDS


class Tracks(Stage):
    name = "tracks"
    fits = False

    def settings(self, cfg) -> Settings:
        t = cfg["tracks"]
        return Settings(
            apply={k: t[k] for k in ("edge_cut", "resolve_junctions", "junction_rounds")},
            runtime={"backend": t["backend"]},
        )

    def load(self, ctx: RunContext, s: Settings, state):
        def apply(ev: EventGraph) -> EventGraph:
            labels = label_hits(
                ev.data.num_nodes,
                ev.edges,
                ev.scores,
                s["edge_cut"],
                s["backend"],
                s["resolve_junctions"],
                s["junction_rounds"],
            )
            return ev.replace(labels=labels)

        return apply


def _cugraph_usable() -> bool:
    return cugraph is not None and torch.cuda.is_available()


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"tracks.backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "cugraph" if _cugraph_usable() else "scipy"
    if backend == "cugraph" and not _cugraph_usable():
        raise ValueError("tracks.backend=cugraph needs CUDA and the cugraph package; use scipy.")
    return backend


def best_neighbour_edges(
    n_nodes: int, edges: torch.Tensor, scores: torch.Tensor, rounds: int = 1
) -> torch.Tensor:
    """Mask of edges that are the top-scoring outgoing edge of their source and the
    top-scoring incoming edge of their target. With ``rounds`` > 1 (0: until nothing
    changes) the choice repeats among the edges whose source still has no outgoing and
    whose target still has no incoming edge: a greedy one-in-one-out matching by score,
    which mends a track whose best edge lost to a fake at the other hit."""
    keep = torch.zeros(edges.shape[1], dtype=torch.bool)
    if edges.shape[1] == 0:
        return keep
    s = scores.float()
    has_out = torch.zeros(n_nodes, dtype=torch.bool)
    has_in = torch.zeros(n_nodes, dtype=torch.bool)
    open_ = torch.ones_like(keep)
    r = 0
    while open_.any() and (rounds <= 0 or r < rounds):
        so = torch.where(open_, s, torch.full_like(s, -1.0))
        best_out = torch.full((n_nodes,), -1.0).scatter_reduce(0, edges[0], so, reduce="amax")
        best_in = torch.full((n_nodes,), -1.0).scatter_reduce(0, edges[1], so, reduce="amax")
        chosen = open_ & (s >= best_out[edges[0]]) & (s >= best_in[edges[1]])
        if not chosen.any():
            break
        # one edge per hit and direction even when scores tie: the first of the tied edges
        for end in edges:
            first = torch.full((n_nodes,), edges.shape[1]).scatter_reduce(
                0, end[chosen], torch.nonzero(chosen).flatten(), reduce="amin"
            )
            chosen &= first[end] == torch.arange(edges.shape[1])
        keep |= chosen
        has_out[edges[0][chosen]] = True
        has_in[edges[1][chosen]] = True
        open_ &= ~has_out[edges[0]] & ~has_in[edges[1]]
        r += 1
    return keep


def label_hits(
    n_nodes: int,
    edges: torch.Tensor,
    scores: torch.Tensor,
    cut: float,
    backend: str = "auto",
    resolve_junctions: bool = True,
    junction_rounds: int = 1,
) -> np.ndarray:
    """(N,) int64 component label of every hit."""
    keep = (scores > cut).cpu()
    e, scores = edges.cpu()[:, keep], scores.cpu()[keep]
    if resolve_junctions:
        e = e[:, best_neighbour_edges(n_nodes, e, scores, junction_rounds)]
    if resolve_backend(backend) == "cugraph":
        df = cudf.DataFrame({"src": cudf.from_dlpack(e[0].cuda()), "dst": cudf.from_dlpack(e[1].cuda())})
        g = cugraph.Graph()
        g.from_cudf_edgelist(df, source="src", destination="dst")
        comp = cugraph.connected_components(g).to_pandas()
        labels = np.arange(n_nodes, dtype=np.int64) + n_nodes  # isolated hits: own labels
        labels[comp.vertex.to_numpy()] = comp.labels.to_numpy()
        return np.unique(labels, return_inverse=True)[1].astype(np.int64)
    e = e.cpu().numpy()
    adj = coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(n_nodes, n_nodes))
    _, labels = connected_components(adj, directed=False)
    return labels.astype(np.int64)
