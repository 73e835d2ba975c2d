"""Neighbour search in embedding space, shared by embedding training (hard negatives,
validation graphs) and graph construction (the radius graph).

:func:`radius_neighbours` is the one entry to the search backends: faiss (CPU), a
KD-tree (scipy), brute force in torch (used on CUDA) and faiss-gpu. All return, for
every point, its neighbours within ``radius`` capped at the ``k`` nearest, so they give
the same edge set; the choice changes speed, never results. :func:`build_edges` turns
neighbours into a track-building graph: no self or same-module pairs, each pair once,
oriented inside-out (:func:`orient_and_clean`, also used by the module map; from a
KD-tree's neighbour table :func:`_edges_from_table` makes the same edges in half the
work).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data

try:
    import faiss
except ImportError:  # faiss is optional: the KD-tree and torch backends always work
    faiss = None

from ..errors import signals_held
from . import NEIGHBOUR_BACKENDS as BACKENDS


def available_backends() -> list[str]:
    out = ["kdtree", "torch"]
    if faiss is not None:
        out.append("faiss")
        if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources"):
            out.append("faiss_gpu")
    return out


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"graph.backend must be one of {BACKENDS}, got {backend!r}.")
    avail = available_backends()
    if backend == "auto":
        if torch.device(device).type == "cuda":
            return "faiss_gpu" if "faiss_gpu" in avail else "torch"
        return "kdtree"  # on CPU a KD-tree with a distance bound beats brute force
    if backend not in avail:
        raise ValueError(f"graph.backend={backend} is not available here; available: {avail}.")
    return backend


def _pairs_from_knn(d2: torch.Tensor, nb: torch.Tensor, radius: float) -> torch.Tensor:
    """(2, E) pairs (row, neighbour) of an (n, k) neighbour table (squared distances,
    indices), self and misses (index -1 or n, or beyond ``radius``) left out. In torch,
    on its threads: numpy's masks and gathers over the 16M entries of pile-up 200 took
    1.2 s, these 0.5 s."""
    n = nb.shape[0]
    ok = (nb >= 0) & (nb < n) & (d2 <= radius * radius) & (nb != torch.arange(n)[:, None])
    rows, cols = ok.nonzero(as_tuple=True)  # no (n, k) table of row numbers
    return torch.stack([rows, nb[rows, cols]]).long()


def _kdtree_table(points: torch.Tensor, radius: float, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, kk) squared distances and indices of each point's ``kk`` nearest (itself
    included) within ``radius``, by a KD-tree in float64; a miss has distance inf and
    index n. The distance of a pair is the same number from either end."""
    x = np.ascontiguousarray(points.detach().float().cpu().numpy(), dtype=np.float64)
    # the query runs on torch's threads (train.threads): 2.1x faster on 2 cores; a
    # SIGTERM or Ctrl-C waits for its worker threads (signals_held)
    with signals_held():
        dist, idx = cKDTree(x).query(
            x, k=kk, distance_upper_bound=radius * (1 + 1e-6), workers=torch.get_num_threads()
        )
    dist, idx = dist.reshape(len(x), kk), idx.reshape(len(x), kk)
    return torch.from_numpy(np.square(dist, out=dist)), torch.from_numpy(idx)


def radius_neighbours(points: torch.Tensor, radius: float, k: int, backend: str = "auto") -> torch.Tensor:
    """(2, E) directed pairs (i, j): j is among the ``k`` nearest of i (self excluded)
    within ``radius`` (Euclidean)."""
    if points.shape[0] < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=points.device)
    backend = resolve_backend(backend, points.device)
    kk = min(k + 1, points.shape[0])
    if backend == "torch":
        return _torch_knn(points, radius, kk)
    if backend == "kdtree":
        return _pairs_from_knn(*_kdtree_table(points, radius, kk), radius).to(points.device)
    x = np.ascontiguousarray(points.detach().float().cpu().numpy())
    index = faiss.IndexFlatL2(x.shape[1])
    if backend == "faiss_gpu":
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    dist2, idx = index.search(x, kk)
    return _pairs_from_knn(torch.from_numpy(dist2), torch.from_numpy(idx), radius).to(points.device)


def _torch_knn(points: torch.Tensor, radius: float, kk: int, chunk: int = 4096) -> torch.Tensor:
    out = []
    x = points.detach().float()
    for start in range(0, x.shape[0], chunk):
        d2 = torch.cdist(x[start : start + chunk], x).pow(2)
        dist2, idx = torch.topk(d2, kk, dim=1, largest=False)
        src = torch.arange(start, start + d2.shape[0], device=x.device).unsqueeze(1).expand_as(idx)
        ok = (idx != src) & (dist2 <= radius * radius)
        out.append(torch.stack([src[ok], idx[ok]]))
    return torch.cat(out, dim=1).long()


def _inward(data: Data, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Whether each pair (src, dst) points inwards: src farther from the origin in
    R = sqrt(r^2 + z^2), or as far and the higher-numbered hit (so that a pair has one
    orientation whichever end it was found from)."""
    R = data.pos.to(src.device).norm(dim=1)
    r_src, r_dst = R[src], R[dst]
    return (r_src > r_dst) | ((r_src == r_dst) & (src > dst))


def orient_and_clean(data: Data, pairs: torch.Tensor) -> torch.Tensor:
    """Drop same-module pairs, keep each unordered pair once, orient it inside-out
    (source closer to the origin in R = sqrt(r^2 + z^2); on equal R, the lower-numbered
    hit first)."""
    if pairs.shape[1] == 0:
        return pairs
    module = data.module.to(pairs.device)
    pairs = pairs[:, module[pairs[0]] != module[pairs[1]]]
    pairs = torch.where(_inward(data, pairs[0], pairs[1]).unsqueeze(0), pairs.flip(0), pairs)
    n = data.num_nodes
    key = torch.unique(pairs[0] * n + pairs[1])
    return torch.stack([key // n, key % n])


def _edges_from_table(data: Data, d2: torch.Tensor, nb: torch.Tensor, radius: float) -> torch.Tensor:
    """What :func:`orient_and_clean` makes of the pairs of a KD-tree table: the same edges
    in the same order, each pair taken from the table once instead of twice and then
    deduplicated (at pile-up 200: 6M pairs sorted, instead of 12M pairs and a unique).

    Hit i's table row holds j, and j's holds i, unless a row is full (its ``k`` nearest
    all within ``radius``) and the other hit lies beyond its last entry. So an entry
    (i, j) with j < i is left out where row j holds i: where i is nearer than row j's
    last entry (which a row with room to spare has beyond the radius, or as a miss), or
    as near and found there. This needs a pair's distance to be the same number from
    either end, as the KD-tree's float64 distances are (not faiss's, nor cdist's)."""
    n = nb.shape[0]
    i = torch.arange(n)[:, None]
    j = nb.clamp(max=n - 1)  # a miss (index n, distance inf) is masked out below
    module = data.module.cpu()
    keep = (d2 <= radius * radius) & (nb != i) & (module[j] != module[i])
    last = d2[:, -1][j]  # the last entry of row j, for each entry (i, j)
    lower = keep & (j < i)  # found from its higher-numbered hit, maybe from both ends
    keep &= ~(lower & (d2 < last))
    tie = (lower & (d2 == last)).nonzero(as_tuple=True)
    if tie[0].numel():  # as near as row j's last entry: whether row j holds i
        i_t, j_t = tie[0], j[tie]
        keep[tie] = ~(nb[j_t] == i_t[:, None]).any(1)
    rows, cols = keep.nonzero(as_tuple=True)
    src, dst = rows, j[rows, cols]
    key = torch.where(_inward(data, src, dst), dst * n + src, src * n + dst).sort().values
    return torch.stack([key // n, key % n])


def build_edges(
    data: Data, embedding: torch.Tensor, radius: float, knn: int, backend: str = "auto"
) -> torch.Tensor:
    """(2, E) CPU edges of the radius graph of ``embedding``: neighbours within ``radius``
    capped at ``knn`` per hit, cleaned and oriented inside-out."""
    if embedding.shape[0] >= 2 and resolve_backend(backend, embedding.device) == "kdtree":
        kk = min(knn + 1, embedding.shape[0])
        return _edges_from_table(data, *_kdtree_table(embedding, radius, kk), radius)
    return orient_and_clean(data, radius_neighbours(embedding, radius, knn, backend)).cpu()
