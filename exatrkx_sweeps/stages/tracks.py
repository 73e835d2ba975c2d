"""Track building (stage 5): connected components of the edges scored above the cut.

With ``tracks.resolve_junctions`` (default) every hit keeps at most one outgoing and
one incoming edge (edges point inside-out), chosen by a greedy matching on the score
(``tracks.junction_rounds``: 1 keeps only mutual best edges, 0 repeats until nothing
changes), so one fake edge at a branching point neither merges two tracks nor, when it
outscores a true edge, splits one.

With ``tracks.bend_weight`` (default) the matching goes by a score that also asks how
smoothly each edge continues a track (:func:`bend_weighted`): at pile-up 200 (the
validation event, cut 0.1, models without cell features) a better-scored fake took the
hit of 5.8% of the true edges above 0.5 GeV that passed the cut, and 9 in 10 particles
the builder lost were split in two. scipy on CPU; cugraph when it is installed and
CUDA is present.
Every hit gets a label (a hit with no kept edge is its own component); candidates are
the components with at least ``tracks.min_track_hits`` hits (metrics/tracks.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..augment.triplets import _directions, consecutive_pairs
from .base import EventGraph, RunContext, Settings, Stage

try:  # the optional GPU backend (RAPIDS)
    import cudf
    import cugraph
except ImportError:
    cudf = cugraph = None

from . import TRACK_BACKENDS as BACKENDS

# the tracks group's keys that change the labels (the backend does not)
APPLY_KEYS = (
    *("edge_cut", "resolve_junctions", "junction_rounds"),
    *("bend_weight", "bend_sigma_phi", "bend_sigma_theta"),
)


class Tracks(Stage):
    name = "tracks"
    fits = False

    def settings(self, cfg) -> Settings:
        t = cfg["tracks"]
        return Settings(
            apply={k: t[k] for k in APPLY_KEYS},
            runtime={"backend": t["backend"]},
        )

    def load(self, ctx: RunContext, s: Settings, state):
        bend = (s["bend_sigma_phi"], s["bend_sigma_theta"]) if s["bend_weight"] else None

        def apply(ev: EventGraph) -> EventGraph:
            labels = label_hits(
                ev.data.num_nodes,
                ev.edges,
                ev.scores,
                s["edge_cut"],
                s["backend"],
                s["resolve_junctions"],
                s["junction_rounds"],
                pos=ev.data.pos if bend else None,
                bend_sigmas=bend,
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


# the support of an edge's side that has no neighbouring edge at all (a track's first or
# last hit): below a compatible true neighbour's, above an incompatible one's
NO_NEIGHBOUR = 0.1


def bend_weighted(
    pos: torch.Tensor, edges: torch.Tensor, scores: torch.Tensor, sigma_phi: float, sigma_theta: float
) -> torch.Tensor:
    """Each edge's score times the geometric mean of its support before and after it.

    The support before edge i -> j is the best, over the edges k -> i that could precede
    it, of score(k -> i) * exp(-cost / 2), with the bend cost between the two segments'
    directions cost = (dphi / sigma_phi)^2 + (dtheta / sigma_theta)^2 (the triplet
    features' cost with looser widths: augment/triplets.py); the support after is the
    same over the edges j -> l. A side with no neighbouring edge gets ``NO_NEIGHBOUR``.
    A fake edge that outscores a true one at a hit rarely lines up with a well-scored
    edge on both sides; the true one does, unless its track ends there."""
    n_edges = edges.shape[1]
    s = scores.float()
    if n_edges == 0:
        return s
    a, b = consecutive_pairs(edges, pos.shape[0])
    phi, theta = _directions(pos.float(), edges)
    dphi = torch.remainder(phi[b] - phi[a] + math.pi, 2 * math.pi) - math.pi
    fit = torch.exp(-0.5 * ((dphi / sigma_phi) ** 2 + ((theta[b] - theta[a]) / sigma_theta) ** 2))
    side = torch.full((n_edges,), NO_NEIGHBOUR)
    before = side.scatter_reduce(0, b, s[a] * fit, reduce="amax", include_self=False)
    after = side.scatter_reduce(0, a, s[b] * fit, reduce="amax", include_self=False)
    return s * torch.sqrt(before * after)


def label_hits(
    n_nodes: int,
    edges: torch.Tensor,
    scores: torch.Tensor,
    cut: float,
    backend: str = "auto",
    resolve_junctions: bool = True,
    junction_rounds: int = 1,
    pos: torch.Tensor | None = None,
    bend_sigmas: tuple[float, float] | None = None,
) -> np.ndarray:
    """(N,) int64 component label of every hit. With ``bend_sigmas`` (and the hits'
    ``pos``) the junction matching goes by :func:`bend_weighted` scores; the cut is
    always on the scores themselves."""
    keep = (scores > cut).cpu()
    e, scores = edges.cpu()[:, keep], scores.cpu()[keep]
    if resolve_junctions:
        order = scores if bend_sigmas is None else bend_weighted(pos.cpu(), e, scores, *bend_sigmas)
        e = e[:, best_neighbour_edges(n_nodes, e, order, junction_rounds)]
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
