"""Graph construction: radius graphs in embedding space, and the module map.

:func:`radius_neighbours` is the one entry to the search backends: faiss (CPU), a
KD-tree (scipy), brute force in torch (used on CUDA) and faiss-gpu. All return, for
every point, its neighbours within ``radius`` capped at the ``k`` nearest, so they
give the same edge set. :func:`build_edges` turns neighbours into a track-building
graph: no self or same-module pairs, each pair once, oriented inside-out.

:class:`ModuleMap` (``graph=module_map``) is the alternative construction of the seed
and later ATLAS work: the module-to-module connections seen in the true edges of the
training events, each with the ranges of simple geometric quantities of its true
edges, applied as cuts to all hit pairs of connected modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

BACKENDS = ("auto", "faiss", "kdtree", "torch", "faiss_gpu")


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


def available_backends() -> list[str]:
    out = ["kdtree", "torch"]
    faiss = _faiss()
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


def _pairs_from_knn(dist2: np.ndarray, idx: np.ndarray, radius: float) -> np.ndarray:
    n, k = idx.shape
    src = np.repeat(np.arange(n), k).reshape(n, k)
    ok = (idx >= 0) & (idx != src) & (dist2 <= radius * radius)
    return np.vstack([src[ok], idx[ok]]).astype(np.int64)


def radius_neighbours(points: torch.Tensor, radius: float, k: int, backend: str = "auto") -> torch.Tensor:
    """(2, E) directed pairs (i, j): j is among the ``k`` nearest of i (self excluded)
    within ``radius`` (Euclidean)."""
    if points.shape[0] < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=points.device)
    backend = resolve_backend(backend, points.device)
    kk = min(k + 1, points.shape[0])
    if backend == "torch":
        return _torch_knn(points, radius, kk)
    x = np.ascontiguousarray(points.detach().float().cpu().numpy())
    if backend == "kdtree":
        from scipy.spatial import cKDTree

        x64 = x.astype(np.float64)
        dist, idx = cKDTree(x64).query(x64, k=kk, distance_upper_bound=radius * (1 + 1e-6))
        dist, idx = dist.reshape(len(x), kk), idx.reshape(len(x), kk)
        idx = np.where(np.isfinite(dist), idx, -1)
        pairs = _pairs_from_knn(dist**2, idx, radius)
    else:
        faiss = _faiss()
        index = faiss.IndexFlatL2(x.shape[1])
        if backend == "faiss_gpu":
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(x)
        dist2, idx = index.search(x, kk)
        pairs = _pairs_from_knn(dist2, idx, radius)
    return torch.from_numpy(pairs).to(points.device)


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


def orient_and_clean(data: Data, pairs: torch.Tensor) -> torch.Tensor:
    """Drop same-module pairs, keep each unordered pair once, orient it inside-out
    (source closer to the origin in R = sqrt(r^2 + z^2))."""
    if pairs.shape[1] == 0:
        return pairs
    module = data.module.to(pairs.device)
    pairs = pairs[:, module[pairs[0]] != module[pairs[1]]]
    R = data.pos.to(pairs.device).norm(dim=1)
    inward = R[pairs[0]] > R[pairs[1]]
    pairs = torch.where(inward.unsqueeze(0), pairs.flip(0), pairs)
    n = data.num_nodes
    key = torch.unique(pairs[0] * n + pairs[1])
    return torch.stack([key // n, key % n])


def label_edges(data: Data, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, y_pid): in the module-wise truth graph (either orientation); same particle."""
    from ..data.truth import edge_in, same_particle

    e = edges.cpu().numpy()
    y = edge_in(e, data.track_edges.numpy(), data.num_nodes)
    y_pid = same_particle(data.pid.numpy(), e)
    return torch.from_numpy(y), torch.from_numpy(y_pid)


def build_edges(
    data: Data, embedding: torch.Tensor, radius: float, knn: int, backend: str = "auto"
) -> torch.Tensor:
    return orient_and_clean(data, radius_neighbours(embedding, radius, knn, backend)).cpu()


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
