"""Sub-event mini-batches: one training event cut into several optimiser steps.

At full pile-up one event is one very large batch (120k hits, a quarter of a million
edges after the filter), so a few dozen training events give only a few hundred
optimiser steps. Two cuts, each giving K steps per event for the same arithmetic:

* particle groups (``embedding.sub_events``): each step takes the hits of a random
  1/K of the event's particles and 1/K of its noise, the density of pile-up 200/K.
  At full density the embedding's hard-negative mining starts from a collapsed space
  it leaves only after many epochs; at pile-up 25 it learns sooner, at a fifth of the
  cost per step (docs/pu200.md), and its map applies at any density.
* phi sectors (``train.sectors``, the GNN): an edge belongs to the sector of its
  source hit. Message passing also sees the edges within ``train.sector_halo`` radians
  beyond the sector (hits near a border keep their neighbours), while the loss counts
  only the sector's own edges, so every edge is learned from once per epoch.

K = 1 is the whole event.
"""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data


def hit_phi(pos: torch.Tensor) -> torch.Tensor:
    """Azimuth of every hit, in [-pi, pi]."""
    return torch.atan2(pos[:, 1], pos[:, 0])


def sector_settings(train) -> dict:
    """What a GNN fitted with sectors depends on (``train.sectors`` and, above one, the halo)."""
    k = int(train.get("sectors", 1))
    return {"sectors": k, "sector_halo": float(train.get("sector_halo", 0.0)) if k > 1 else None}


def sector_masks(phi: torch.Tensor, sectors: int, halo: float = 0.0) -> list[tuple[torch.Tensor, ...]]:
    """For each of ``sectors`` equal azimuth sectors: (core, window) boolean masks over
    ``phi`` (one value per item): the items inside the sector, and those inside it
    widened by ``halo`` radians on both sides (the core included)."""
    if sectors <= 1:
        every = torch.ones_like(phi, dtype=torch.bool)
        return [(every, every)]
    width = 2 * math.pi / sectors
    # one sector index per item: a border value belongs to exactly one sector
    index = torch.remainder(torch.floor((phi + math.pi) / width).long(), sectors)
    out = []
    for k in range(sectors):
        centre = -math.pi + (k + 0.5) * width
        d = torch.remainder(phi - centre + math.pi, 2 * math.pi) - math.pi  # signed, wrapped
        core = index == k
        out.append((core, core | (d.abs() <= width / 2 + halo) if halo > 0 else core))
    return out


def subgraph(edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hits ``edges`` touch and the edges renumbered over them: (nodes, local edges)."""
    nodes, local = torch.unique(edges, return_inverse=True)
    return nodes, local.reshape(edges.shape)


def particle_groups(pid: torch.Tensor, groups: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Hit indices of ``groups`` random groups of the event's particles (all the hits of a
    particle in one group); noise hits (pid 0) are dealt out at random."""
    if groups <= 1:
        return [torch.arange(pid.numel())]
    _, particle = torch.unique(pid, return_inverse=True)
    group = torch.randperm(int(particle.max()) + 1, generator=gen)[particle] % groups
    noise = pid == 0
    group[noise] = torch.randint(0, groups, (int(noise.sum()),), generator=gen)
    return [torch.nonzero(group == k).squeeze(1) for k in range(groups)]


def sub_event(data: Data, hits: torch.Tensor, edge_keys: tuple[str, ...] = ("track_edges",)) -> Data:
    """The event restricted to ``hits``: every per-hit attribute, and the edges of
    ``edge_keys`` that join two of them, renumbered."""
    n = data.num_nodes
    new = torch.full((n,), -1, dtype=torch.long)
    new[hits] = torch.arange(hits.numel())
    out = Data(num_nodes=hits.numel())
    for key, value in data.items():
        if key in edge_keys:
            inside = (new[value[0]] >= 0) & (new[value[1]] >= 0)
            out[key] = new[value[:, inside]]
        elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value[hits]
    return out
