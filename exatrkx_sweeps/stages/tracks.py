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
the builder lost were split in two. ``tracks.bend_model`` says what "smoothly" means:
``curvature`` (default), the same circle through the beamline for both edges, or
``direction``, the same segment direction. With ``tracks.stitch`` (default) the
fragments left after the matching are joined end to start where they lie on one circle
through the beamline (:func:`stitch_fragments`): a true edge missing from the graph (a
long jump, such as barrel to endcap) splits a track in two, and half a track matches
no particle. scipy on CPU; cugraph when it is installed and CUDA is present.
Every hit gets a label (a hit with no kept edge is its own component); candidates are
the components with at least ``tracks.min_track_hits`` hits (metrics/tracks.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..augment.triplets import SIGMA_MS, _directions, consecutive_pairs, segments
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
    *("bend_weight", "bend_model", "bend_sigma_curvature", "bend_sigma_phi", "bend_sigma_theta"),
    *("stitch", "stitch_max_cost"),
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
        bend = Bend.from_settings(s) if s["bend_weight"] else None
        stitch = (
            (s["bend_sigma_curvature"], s["bend_sigma_theta"], s["stitch_max_cost"]) if s["stitch"] else None
        )

        def apply(ev: EventGraph) -> EventGraph:
            labels = label_hits(
                ev.data.num_nodes,
                ev.edges,
                ev.scores,
                s["edge_cut"],
                s["backend"],
                s["resolve_junctions"],
                s["junction_rounds"],
                pos=ev.data.pos if bend or stitch else None,
                bend=bend,
                volume=ev.data.layer // 1000 if bend and bend.model == "helix" else None,
                stitch=stitch,
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


class Bend(NamedTuple):
    """How :func:`bend_weighted` compares consecutive edges. ``model``: ``curvature``
    (``sigma`` in 1/m) or ``direction`` (``sigma`` in rad), with ``sigma_theta`` (rad) the
    width of the change in polar angle in both; or ``helix``, the curvature and polar
    angle with each pair's own widths (:func:`helix_variances`; the sigmas unused)."""

    model: str
    sigma: float
    sigma_theta: float

    @classmethod
    def from_settings(cls, t) -> Bend:
        sigma = t["bend_sigma_curvature"] if t["bend_model"] == "curvature" else t["bend_sigma_phi"]
        return cls(t["bend_model"], sigma, t["bend_sigma_theta"])


def transverse_curvature(pos: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(E,) signed curvature in 1/m (positions in mm) of the circle through the beamline
    (x = y = 0) and the edge's two hits in the transverse plane: 2 (p x q) / (|p| |q|
    |q - p|). A particle from the beamline keeps one curvature along its track (0.3 B /
    pT: 1.2 / m at 0.5 GeV in the 2 T field), while the direction of its segments turns
    with the distance between hits, so consecutive edges of a track agree in curvature
    whatever their length."""
    p, q = pos[edges[0], :2].double(), pos[edges[1], :2].double()
    cross = p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]
    lengths = p.norm(dim=1) * q.norm(dim=1) * (q - p).norm(dim=1)
    return (2000.0 * cross / lengths.clamp(min=1e-9)).float()


def helix_variances(
    pos: torch.Tensor, edges: torch.Tensor, volume: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each consecutive pair (edge a = k -> i, edge b = i -> j): the variance of the
    difference of their :func:`transverse_curvature` ((1/m)^2) and of their segments'
    polar angles (rad^2) along one primary track at 0.5 GeV. From the hits' resolution
    (``volume``: each hit's detector volume) across each segment, in the transverse plane
    dk = 2 e / (r l) for an error e of a hit at transverse radius r on a segment of
    transverse length l; and from multiple scattering at hit i (SIGMA_MS, over sin theta
    in the transverse plane), which moves hit j by the kink times l_b: 2 SIGMA_MS / r_j
    in curvature. The fixed widths of the other models are 0.1 / m and 0.05 rad: in the
    pixel barrel the scattering alone is 0.14 / m at r = 72 mm, while the polar angle of
    two pixel segments agrees to 0.005 rad."""
    pos = pos.float()
    seg = segments(pos, edges, volume)
    r_hit = torch.hypot(pos[:, 0], pos[:, 1]).clamp(min=1.0)
    k_var = 4e6 * ((seg.xy_src / r_hit[edges[0]]) ** 2 + (seg.xy_dst / r_hit[edges[1]]) ** 2)
    k_var = k_var / seg.ell.clamp(min=1e-3) ** 2
    kink = 2000.0 * SIGMA_MS / (r_hit[edges[1][b]] * torch.sin(seg.theta[b]).clamp(min=0.01))
    return k_var[a] + k_var[b] + kink**2, SIGMA_MS**2 + seg.theta_var[a] + seg.theta_var[b]


def bend_weighted(
    pos: torch.Tensor,
    edges: torch.Tensor,
    scores: torch.Tensor,
    bend: Bend,
    volume: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each edge's score times the geometric mean of its support before and after it.

    The support before edge i -> j is the best, over the edges k -> i that could precede
    it, of score(k -> i) * exp(-cost / 2), with the bend cost between the two edges
    cost = (d / sigma)^2 + (dtheta / sigma_theta)^2: d is the difference of their
    :func:`transverse_curvature` (``curvature``) or of their segments' transverse
    directions (``direction``), dtheta that of their segments' polar angles, at fixed
    widths, or (``helix``) the curvature and polar angle over each pair's own widths
    (:func:`helix_variances`, which needs each hit's ``volume``). The support after
    is the same over the edges j -> l. A side with no neighbouring edge gets
    ``NO_NEIGHBOUR``. A fake edge that outscores a true one at a hit rarely lines up with
    a well-scored edge on both sides; the true one does, unless its track ends there."""
    n_edges = edges.shape[1]
    s = scores.float()
    if n_edges == 0:
        return s
    a, b = consecutive_pairs(edges, pos.shape[0])
    phi, theta = _directions(pos.float(), edges)
    if bend.model == "direction":
        d = torch.remainder(phi[b] - phi[a] + math.pi, 2 * math.pi) - math.pi
    else:
        k = transverse_curvature(pos, edges)
        d = k[b] - k[a]
    if bend.model == "helix":
        if volume is None:
            raise ValueError("the helix bend model needs each hit's detector volume")
        var_k, var_theta = helix_variances(pos, edges, volume, a, b)
        cost = d**2 / var_k + (theta[b] - theta[a]) ** 2 / var_theta
    else:
        cost = (d / bend.sigma) ** 2 + ((theta[b] - theta[a]) / bend.sigma_theta) ** 2
    fit = torch.exp(-0.5 * cost)
    side = torch.full((n_edges,), NO_NEIGHBOUR)
    before = side.scatter_reduce(0, b, s[a] * fit, reduce="amax", include_self=False)
    after = side.scatter_reduce(0, a, s[b] * fit, reduce="amax", include_self=False)
    return s * torch.sqrt(before * after)


# the search for fragments to join: the direction at the beamline of the circle through
# it and a fragment's end edge is known to about this (rad); candidates lie within
# STITCH_SEARCH widths in curvature, polar angle and that direction, before the exact cost
PHI0_WIDTH = 0.05
STITCH_SEARCH = 6.0


def stitch_fragments(
    pos: torch.Tensor,
    edges: torch.Tensor,
    n_nodes: int,
    sigma_curvature: float,
    sigma_theta: float,
    max_cost: float,
) -> torch.Tensor:
    """(2, J) edges that join chains of ``edges`` (each hit at most one edge in and one
    out, inside-out), each from a chain's last hit t to another chain's first hit h
    further out.

    A join needs the three edges, the chain's last (p -> t), the join (t -> h) and the
    other chain's first (h -> q), to lie on one circle through the beamline and one
    polar angle: cost = ((k_th - k_pt)^2 + (k_hq - k_th)^2) / sigma_curvature^2 +
    ((theta_th - theta_pt)^2 + (theta_hq - theta_th)^2) / sigma_theta^2 below
    ``max_cost``, with k the :func:`transverse_curvature` and theta the segments' polar
    angles. The joins are a greedy one-to-one matching by cost (:func:`best_neighbour_edges`);
    chains run outwards, so no join closes a loop. A lone hit has no direction and is
    never joined."""
    none = edges[:, :0]
    if edges.shape[1] == 0:
        return none
    out_deg = torch.bincount(edges[0], minlength=n_nodes)
    in_deg = torch.bincount(edges[1], minlength=n_nodes)
    last = edges[:, out_deg[edges[1]] == 0]  # p -> t, t ending its chain
    first = edges[:, in_deg[edges[0]] == 0]  # h -> q, h starting its chain
    ends = []
    for e, hit in ((last, last[1]), (first, first[0])):
        k = transverse_curvature(pos, e)
        theta = _directions(pos.float(), e)[1]
        p = pos[hit].double()
        r_m = torch.hypot(p[:, 0], p[:, 1]) / 1000.0
        # direction at the beamline of the circle through it and the hit
        phi0 = torch.atan2(p[:, 1], p[:, 0]) - torch.asin((k.double() * r_m / 2).clamp(-1, 1))
        key = torch.stack(
            [
                k / sigma_curvature,
                theta / sigma_theta,
                torch.cos(phi0) / PHI0_WIDTH,
                torch.sin(phi0) / PHI0_WIDTH,
            ],
            1,
        )
        ends.append((hit, k, theta, key.float().numpy()))
    (t, k_t, th_t, key_t), (h, k_h, th_h, key_h) = ends
    # every (end, start) pair within the search radius, ordered by end then start; none
    # when the matched edges have no chain end (two hits at one R joined both ways)
    near = cKDTree(key_t).sparse_distance_matrix(cKDTree(key_h), STITCH_SEARCH, output_type="ndarray")
    near = near[np.lexsort((near["j"], near["i"]))]
    ti, hi = torch.from_numpy(near["i"].astype(np.int64)), torch.from_numpy(near["j"].astype(np.int64))
    joins = torch.stack([t[ti], h[hi]])
    outward = pos[joins[1]].norm(dim=1) > pos[joins[0]].norm(dim=1)
    joins, ti, hi = joins[:, outward], ti[outward], hi[outward]
    k_j = transverse_curvature(pos, joins)
    th_j = _directions(pos.float(), joins)[1]
    cost = ((k_j - k_t[ti]) ** 2 + (k_h[hi] - k_j) ** 2) / sigma_curvature**2 + (
        (th_j - th_t[ti]) ** 2 + (th_h[hi] - th_j) ** 2
    ) / sigma_theta**2
    ok = cost < max_cost
    joins, cost = joins[:, ok], cost[ok]
    if joins.shape[1] == 0:
        return none
    return joins[:, best_neighbour_edges(n_nodes, joins, torch.exp(-0.5 * cost), rounds=0)]


def label_hits(
    n_nodes: int,
    edges: torch.Tensor,
    scores: torch.Tensor,
    cut: float,
    backend: str = "auto",
    resolve_junctions: bool = True,
    junction_rounds: int = 1,
    pos: torch.Tensor | None = None,
    bend: Bend | None = None,
    stitch: tuple[float, float, float] | None = None,
    volume: torch.Tensor | None = None,
) -> np.ndarray:
    """(N,) int64 component label of every hit. With ``bend`` (and the hits' ``pos``)
    the junction matching goes by :func:`bend_weighted` scores; the cut is always on the
    scores themselves. With ``stitch`` (sigma_curvature, sigma_theta, max_cost; needs
    ``resolve_junctions``) the matched chains are joined by :func:`stitch_fragments`."""
    keep = (scores > cut).cpu()
    e, scores = edges.cpu()[:, keep], scores.cpu()[keep]
    if resolve_junctions:
        vol = None if volume is None else volume.cpu()
        order = scores if bend is None else bend_weighted(pos.cpu(), e, scores, bend, vol)
        e = e[:, best_neighbour_edges(n_nodes, e, order, junction_rounds)]
        if stitch is not None:
            e = torch.cat([e, stitch_fragments(pos.cpu(), e, n_nodes, *stitch)], 1)
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
