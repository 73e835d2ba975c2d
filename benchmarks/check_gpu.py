"""The CUDA paths, checked against the CPU ones in a few minutes on a GPU machine.

    pip install -e ".[gpu]"            # faiss-gpu-cu12, cugraph-cu12 (with a CUDA build of torch)
    python benchmarks/check_gpu.py     # exit 0 when every check passes

1. Neighbour search: faiss-gpu and torch (CUDA) give the KD-tree's edge set on a
   PU200-sized cloud of embedded points; time of each.
2. Connected components: cugraph gives scipy's partition of a random graph.
3. The interaction network in fp32, bf16 and fp16 autocast: forward + backward time,
   CUDA peak memory, and the bf16/fp16 scores against fp32.
4. A small pipeline run with train.device=cuda and the auto backends: which backends it
   used (the run's tags), its efficiency, and CUDA peak memory per stage.

Without CUDA it says so, runs the CPU comparisons it can (KD-tree, torch, faiss-cpu)
and exits 0; a mismatch anywhere exits 1.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from hydra import compose, initialize_config_module

from exatrkx_sweeps import pipeline
from exatrkx_sweeps.config import validate
from exatrkx_sweeps.models.interaction import InteractionGNN
from exatrkx_sweeps.stages import neighbours, tracks

FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        FAILED.append(what)


def _timed(f):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = f()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _edge_set(pairs: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.cpu().T.tolist()))


def neighbour_search(dim: int = 12, radius: float = 0.1, k: int = 64) -> None:
    n = 120_000 if torch.cuda.is_available() else 20_000  # brute force on CPU: a smaller cloud
    print(f"1. neighbour search: {n} points in {dim} dimensions, radius {radius}, at most {k} neighbours")
    gen = torch.Generator().manual_seed(0)
    # like an embedded event: hits in tight clusters (tracks) on the unit sphere
    centres = torch.nn.functional.normalize(torch.randn(n // 10, dim, generator=gen), dim=1)
    spread = 0.015 * torch.randn(n, dim, generator=gen)
    member = torch.randint(0, n // 10, (n,), generator=gen)
    points = torch.nn.functional.normalize(centres[member] + spread, dim=1)
    want, t = _timed(lambda: neighbours.radius_neighbours(points, radius, k, "kdtree"))
    print(f"  kdtree (CPU): {want.shape[1]} pairs in {t:.2f} s")
    backends = [b for b in ("torch", "faiss", "faiss_gpu") if b in neighbours.available_backends()]
    for b in backends:
        pts = points.cuda() if b == "torch" and torch.cuda.is_available() else points
        got, t = _timed(lambda b=b, pts=pts: neighbours.radius_neighbours(pts, radius, k, b))
        where = "CUDA" if pts.is_cuda or b == "faiss_gpu" else "CPU"
        # ties at the k-th neighbour may differ between backends: compare within 0.01%
        a, w = _edge_set(got), _edge_set(want)
        what = f"{b} ({where}): {got.shape[1]} pairs in {t:.2f} s, {len(a ^ w)} differ"
        check(len(a ^ w) <= 1e-4 * len(w), what)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Each hit's component named by its smallest member: comparable across backends."""
    first = np.full(labels.max() + 1, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    return first[labels]


def components(n: int = 200_000, e: int = 150_000) -> None:
    print(f"2. connected components: {n} hits, {e} edges")
    gen = torch.Generator().manual_seed(1)
    edges = torch.randint(0, n, (2, e), generator=gen)
    scores = torch.rand(e, generator=gen)
    want, t = _timed(lambda: tracks.label_hits(n, edges, scores, 0.5, "scipy"))
    print(f"  scipy: {len(np.unique(want))} components in {t:.2f} s")
    if not tracks._cugraph_usable():
        print("  cugraph: not usable here (no CUDA or no cugraph)")
        return
    got, t = _timed(lambda: tracks.label_hits(n, edges, scores, 0.5, "cugraph"))
    check(np.array_equal(_canonical(got), _canonical(want)), f"cugraph: the same partition, {t:.2f} s")


def mixed_precision(nodes: int = 60_000, edges: int = 600_000) -> None:
    if not torch.cuda.is_available():
        print("3. mixed precision: no CUDA here")
        return
    print(f"3. interaction network, {nodes} hits, {edges} edges, forward + backward")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(nodes, 3, generator=gen).cuda()
    ei = torch.randint(0, nodes, (2, edges), generator=gen).cuda()
    ea = torch.randn(edges, 6, generator=gen).cuda()
    model = InteractionGNN(node_dim=3, edge_dim=6, hidden=64, iterations=6).cuda()
    ref = None
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        torch.cuda.reset_peak_memory_stats()
        model.zero_grad()

        def step(dtype=dtype):
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                out = model(x, ei, ea)
            out.float().sum().backward()
            return out.detach().float()

        _timed(step)  # warm-up
        out, t = _timed(step)
        peak = torch.cuda.max_memory_allocated() / 2**20
        ref = out if ref is None else ref
        diff = float((torch.sigmoid(out) - torch.sigmoid(ref)).abs().max())
        check(diff < 0.05, f"{name}: {t * 1000:.0f} ms, peak {peak:.0f} MB, max |score - fp32| {diff:.1e}")


def small_run() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"4. a small pipeline run on {device} with the auto backends")
    overrides = [
        f"train.device={device}",
        "data.n_train=8",
        "data.n_val=1",
        "data.n_test=2",
        "gnn.epochs=10",
        "cache.enabled=false",
        "tracking.enabled=false",
    ]
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        cfg = validate(compose("config", overrides=overrides))
    report, t = _timed(lambda: pipeline.run(cfg))
    info, m = report.info, report.metrics
    print(f"  {t:.0f} s; graph backend {info['graph_backend']}, tracks backend {info['tracks_backend']}")
    peaks = {k: round(v) for k, v in m.items() if k.startswith("cuda_peak")}
    if peaks:
        print(f"  CUDA peak memory (MB): {peaks}")
    check(m["eff_tech_pt0.5"] > 0.8, f"technical efficiency (pT > 0.5 GeV) {m['eff_tech_pt0.5']:.3f}")
    if device == "cuda":
        want = "faiss_gpu" if "faiss_gpu" in neighbours.available_backends() else "torch"
        check(info["graph_backend"] == want, f"graph.backend=auto ran {info['graph_backend']}")


def main() -> int:
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}")
    neighbour_search()
    components()
    mixed_precision()
    small_run()
    print("all checks passed" if not FAILED else f"{len(FAILED)} check(s) failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
