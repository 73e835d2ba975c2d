"""Ground truth for training (docs/physics.md section 4).

Module-wise truth (the Exa.TrkX definition): drop noise; order each particle's hits by
their distance from the particle's production vertex; group consecutive hits that
share a module; connect every hit of group i to every hit of group i + 1. Layer-wise
truth groups by (volume, layer) instead of module.

:func:`label_edges` labels the edges of a built graph against both definitions of
truth, and :func:`edge_targets` gives a stage's training target (``truth: module`` or
``truth: pid``).
"""

from __future__ import annotations

import numpy as np
import torch


def truth_edges(
    particle_id: np.ndarray,
    distance: np.ndarray,
    group_key: np.ndarray,
) -> np.ndarray:
    """(2, E) int64 edges between hit indices, oriented along the particle's flight.

    particle_id: per hit, 0 for noise; distance: per hit, from the production vertex
    (mm); group_key: per hit, the module (module-wise) or layer (layer-wise) key."""
    idx = np.flatnonzero(particle_id != 0)
    if idx.size == 0:
        return np.zeros((2, 0), np.int64)
    order = idx[np.lexsort((distance[idx], particle_id[idx]))]
    pid, key = particle_id[order], group_key[order]
    new_group = np.ones(order.size, bool)
    new_group[1:] = (pid[1:] != pid[:-1]) | (key[1:] != key[:-1])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, order.size))
    group_pid = pid[starts]
    # every hit of group g connects to every hit of g + 1 when both are the same particle
    has_next = np.append(group_pid[1:] == group_pid[:-1], False)
    src_pos = np.flatnonzero(has_next[group])
    n_next = sizes[group[src_pos] + 1]
    src = np.repeat(src_pos, n_next)
    first = np.repeat(np.cumsum(n_next) - n_next, n_next)
    dst = starts[group[src] + 1] + (np.arange(src.size) - first)
    return np.vstack([order[src], order[dst]]).astype(np.int64)


def module_key(volume_id, layer_id, module_id) -> np.ndarray:
    return (np.asarray(volume_id, np.int64) * 1000 + np.asarray(layer_id)) * 100_000 + np.asarray(module_id)


def layer_key(volume_id, layer_id) -> np.ndarray:
    return np.asarray(volume_id, np.int64) * 1000 + np.asarray(layer_id)


def same_particle(particle_id: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """y_pid: both hits belong to the same non-zero particle."""
    a, b = particle_id[edges[0]], particle_id[edges[1]]
    return (a == b) & (a != 0)


def edge_in(edges: np.ndarray, reference: np.ndarray, n_nodes: int) -> np.ndarray:
    """For each edge, whether it is in ``reference`` (either orientation)."""
    if edges.shape[1] == 0:
        return np.zeros(0, bool)
    ref = np.concatenate([reference[0] * n_nodes + reference[1], reference[1] * n_nodes + reference[0]])
    return np.isin(edges[0].astype(np.int64) * n_nodes + edges[1], ref)


def label_edges(data, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, y_pid) of each edge of a processed event: in its module-wise truth graph
    (either orientation); both hits of the same non-zero particle."""
    e = edges.cpu().numpy()
    y = edge_in(e, data.track_edges.numpy(), data.num_nodes)
    y_pid = same_particle(data.pid.numpy(), e)
    return torch.from_numpy(y), torch.from_numpy(y_pid)


def edge_targets(data, edges: torch.Tensor, truth: str) -> torch.Tensor:
    """Float training target of each edge under ``truth`` (one of TRAINING_TRUTH)."""
    y, y_pid = label_edges(data, edges)
    return (y if truth == "module" else y_pid).float()
