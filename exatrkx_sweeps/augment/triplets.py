"""Triplet edge features (``augment.triplets``, the GNN's edges).

A pair of hits says little about a track in a dense event: at pile-up 200 only 57% of
the true edges above 0.5 GeV are their hit's best-scored outgoing edge after the filter
(``benchmarks/bench_losses.py``; docs/pu200.md, "Triplet features"). Three hits say more:
two consecutive segments of a track bend little.

For every edge i -> j of the graph this gives the smallest bend cost over the edges
k -> i that could precede it and over the edges j -> l that could follow it,

    cost = (dphi / sigma_phi)^2 + (dtheta / sigma_theta)^2

between the two segments' directions, and how many of them are compatible (cost < 9).
The widths follow the helix and the hits (docs/pu200.md, "Triplet features"):

* ``sigma_phi``: two consecutive chords of a helix of transverse radius R turn by
  (l_a + l_b) / 2R in the transverse plane (l: their transverse lengths), so the width
  is the turn of a track at 0.5 GeV (R = 0.83 m in the 2 T field), together with
  multiple scattering seen in the transverse plane (SIGMA_MS / sin theta). A fixed
  width (0.05 rad) put the true turn of a 0.5 GeV track between the 0.2 m apart long-strip
  layers at a cost of 20.
* ``sigma_theta``: multiple scattering (SIGMA_MS) and each segment's polar angle error
  from its hits' resolution along the strip (3 mm in the long strips, 0.3 mm in the short
  ones: along z in the barrel, along r in the endcaps), which a fixed 0.01 rad ignored:
  75% of the true triplets at long-strip barrel hits cost more than 9 with it, 2.7% now.

An edge with no partner on one side gets the cap. Pure geometry and the detector's
layout: the graph's own edges, no truth, the same at training and inference. The join
has sum over hits of in-degree x out-degree entries: 14.6 M for the 1.2 M edges of a
pile-up 200 event after the filter, 0.9 s on 2 cores.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..data.geometry import BARREL_VOLUMES, volume_family
from ..data.simulate import RESOLUTION_MM

R_MIN_MM = 833.0  # transverse radius of a 0.5 GeV track in the 2 T field: 0.5 / (0.3 * 2) m
SIGMA_MS = 0.005  # rad: multiple scattering between consecutive segments
COMPATIBLE = 9.0  # cost below which a neighbouring segment counts as compatible
COST_CAP = 1e4
SCALE = math.log1p(COST_CAP)  # features in [0, 1]
COLUMNS = (
    "log best bend cost before / log cap",
    "log best bend cost after / log cap",
    "log compatible edges before / log cap",
    "log compatible edges after / log cap",
)
N_FEATURES = len(COLUMNS)


def _directions(pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each edge's segment direction: transverse angle phi and polar angle theta."""
    d = pos[edge_index[1]] - pos[edge_index[0]]
    rho = torch.hypot(d[:, 0], d[:, 1])
    return torch.atan2(d[:, 1], d[:, 0]), torch.atan2(rho, d[:, 2])


def consecutive_pairs(edge_index: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (a, b) with edge a = k -> i and edge b = i -> j: indices into the edges."""
    n_edges = edge_index.shape[1]
    src, dst = edge_index
    by_target = torch.argsort(dst, stable=True)
    n_in = torch.bincount(dst, minlength=n_nodes)
    first_in = torch.cumsum(n_in, 0) - n_in
    reps = n_in[src]  # predecessors of each edge b
    b = torch.repeat_interleave(torch.arange(n_edges, device=edge_index.device), reps)
    start = torch.cumsum(reps, 0) - reps
    offset = torch.arange(b.numel(), device=edge_index.device) - torch.repeat_interleave(start, reps)
    a = by_target[first_in[src[b]] + offset]
    return a, b


def hit_resolution(volume_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each hit's position resolution (mm) across its module's fine axis (u: along phi)
    and along its coarse axis (v: along z in the barrel, along r in the endcaps), and
    whether it is a barrel hit."""
    vol = volume_id.cpu().numpy()
    family = volume_family(vol)
    known = [family == k for k in RESOLUTION_MM]
    dev = volume_id.device
    u, v = (np.select(known, [r[i] for r in RESOLUTION_MM.values()]).astype(np.float32) for i in (0, 1))
    barrel = torch.from_numpy(np.isin(vol, BARREL_VOLUMES)).to(dev)
    return torch.from_numpy(u).to(dev), torch.from_numpy(v).to(dev), barrel


class Segments(NamedTuple):
    """Each edge's segment, and its two hits' position errors across it (mm)."""

    ell: torch.Tensor  # transverse length
    length: torch.Tensor
    phi: torch.Tensor  # transverse direction
    theta: torch.Tensor  # polar angle
    theta_var: torch.Tensor  # the polar angle's variance from the two hits (rad^2)
    xy_src: torch.Tensor  # the source hit's error across the segment in (x, y)
    xy_dst: torch.Tensor  # and the target's


def segments(pos: torch.Tensor, edge_index: torch.Tensor, volume_id: torch.Tensor) -> Segments:
    """Each edge's segment and its hits' errors across it, from the hits' resolution
    (:func:`hit_resolution`): in (r, z) the coarse axis (z in the barrel, r in an endcap)
    projected across the segment; in (x, y) the fine axis, and in an endcap also the
    radial error's share across the segment's transverse direction."""
    src, dst = edge_index
    d = pos[dst] - pos[src]
    ell = torch.hypot(d[:, 0], d[:, 1])
    length = d.norm(dim=1).clamp(min=1e-3)
    phi, theta = torch.atan2(d[:, 1], d[:, 0]), torch.atan2(ell, d[:, 2])
    sin, cos = torch.sin(theta), torch.cos(theta).abs()
    su, sv, barrel = hit_resolution(volume_id)
    phi_hit = torch.atan2(pos[:, 1], pos[:, 0])

    def across_rz(hit: torch.Tensor) -> torch.Tensor:
        return sv[hit] * torch.where(barrel[hit], sin, cos)

    def across_xy(hit: torch.Tensor) -> torch.Tensor:
        radial = sv[hit] * torch.sin(phi - phi_hit[hit])
        return torch.where(barrel[hit], su[hit], torch.hypot(su[hit], radial))

    theta_var = (across_rz(src) ** 2 + across_rz(dst) ** 2) / length**2
    return Segments(ell, length, phi, theta, theta_var, across_xy(src), across_xy(dst))


def bend_costs(
    pos: torch.Tensor, edge_index: torch.Tensor, volume_id: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """The bend cost of each consecutive pair (edge a into a hit, edge b out of it)."""
    seg = segments(pos, edge_index, volume_id)
    ell, phi, theta = seg.ell, seg.phi, seg.theta
    sin = torch.sin(theta)
    # each segment's direction error from its two hits: the polar angle over its length,
    # phi over its transverse length (two hits of one disk can be 0.1 mm apart in (x, y))
    phi_var = (seg.xy_src**2 + seg.xy_dst**2) / ell.clamp(min=1e-3) ** 2
    dphi = torch.remainder(phi[b] - phi[a] + math.pi, 2 * math.pi) - math.pi
    turn = (ell[a] + ell[b]) / (2 * R_MIN_MM)
    var_phi = turn**2 + (SIGMA_MS / sin[b].clamp(min=0.01)) ** 2 + phi_var[a] + phi_var[b]
    var_theta = SIGMA_MS**2 + seg.theta_var[a] + seg.theta_var[b]
    return dphi**2 / var_phi + (theta[b] - theta[a]) ** 2 / var_theta


def edge_features(pos: torch.Tensor, edge_index: torch.Tensor, volume_id: torch.Tensor) -> torch.Tensor:
    """(E, 4) float32: best bend cost before and after, compatible edges before and after.
    ``volume_id``: each hit's detector volume (``data.layer // 1000``)."""
    n_edges = edge_index.shape[1]
    pos = pos.float()
    if n_edges == 0:
        return torch.zeros(0, N_FEATURES, device=pos.device)
    n_nodes = int(edge_index.max()) + 1
    a, b = consecutive_pairs(edge_index, n_nodes)
    cost = bend_costs(pos, edge_index, volume_id.to(pos.device), a, b)
    cap = torch.full((n_edges,), COST_CAP, device=pos.device)
    before = cap.scatter_reduce(0, b, cost.clamp(max=COST_CAP), reduce="amin")
    after = cap.scatter_reduce(0, a, cost.clamp(max=COST_CAP), reduce="amin")
    ok = (cost < COMPATIBLE).float()
    n_before = torch.zeros(n_edges, device=pos.device).index_add_(0, b, ok)
    n_after = torch.zeros(n_edges, device=pos.device).index_add_(0, a, ok)
    feats = torch.stack([before, after, n_before, n_after], 1)
    return torch.log1p(feats) / SCALE
