import numpy as np
import pytest
import torch

from exatrkx_sweeps.data.dataset import process_event, select
from exatrkx_sweeps.data.truth import edge_in, label_edges
from exatrkx_sweeps.stages.graph import ModuleMap
from exatrkx_sweeps.stages.neighbours import (
    available_backends,
    build_edges,
    orient_and_clean,
    radius_neighbours,
)


def test_all_backends_return_the_same_edges():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3000, 6, generator=g)
    radius, k = 0.3, 20
    sets = {}
    for b in available_backends():
        e = radius_neighbours(x, radius, k, b).cpu().numpy()
        sets[b] = set(map(tuple, e.T.tolist()))
    assert {"kdtree", "torch", "faiss"} <= set(sets)
    ref = sets["kdtree"]
    assert len(ref) > 1000
    d = torch.cdist(x, x)
    for b, s in sets.items():
        diff = ref ^ s
        # only pairs sitting on the radius (float32 vs float64 rounding) may differ
        assert all(abs(float(d[i, j]) - radius) < 1e-5 for i, j in diff), (b, len(diff))
        assert len(diff) <= 2


def test_kdtree_search_gives_the_same_pairs_on_any_number_of_threads():
    """The KD-tree query runs on torch's threads; the pairs and their order do not
    depend on how many."""
    x = torch.rand(4000, 8, generator=torch.Generator().manual_seed(3))
    before = torch.get_num_threads()
    try:
        got = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got.append(radius_neighbours(x, radius=0.5, k=16, backend="kdtree"))
    finally:
        torch.set_num_threads(before)
    assert got[0].shape[1] > 10_000 and torch.equal(got[0], got[1])
    assert (got[0][0] != got[0][1]).all()  # no hit is its own neighbour
    assert float((x[got[0][0]] - x[got[0][1]]).norm(dim=1).max()) <= 0.5 + 1e-6
    per_hit = torch.bincount(got[0][0], minlength=len(x))
    assert int(per_hit.max()) == 16 and int(per_hit.min()) < 16  # the cap binds for some


def test_knn_cap_and_radius():
    x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0]])
    e = radius_neighbours(x, radius=0.25, k=1, backend="kdtree")
    got = set(map(tuple, e.T.tolist()))
    assert got == {(0, 1), (1, 0), (2, 1), (3, 2)} or got == {(0, 1), (1, 2), (2, 1), (3, 2)}
    assert not any(4 in p for p in got)


def test_clean_removes_same_module_and_orients_inside_out(small_event, detector):
    d = process_event(small_event, detector)
    n = d.num_nodes
    pairs = torch.randint(0, n, (2, 20000), generator=torch.Generator().manual_seed(1))
    e = orient_and_clean(d, torch.cat([pairs, pairs.flip(0)], 1))
    assert (d.module[e[0]] != d.module[e[1]]).all()
    assert (d.pos[e[0]].norm(dim=1) <= d.pos[e[1]].norm(dim=1)).all()
    assert len({(int(a), int(b)) for a, b in e.T}) == e.shape[1]  # each pair once


def test_truth_embedding_gives_all_true_edges(small_event, detector):
    d = select(process_event(small_event, detector), 0.0, 0.0)
    # an "ideal embedding": hits of one particle at one point, particles far apart
    emb = torch.zeros(d.num_nodes, 2)
    pid_rank = torch.unique(d.pid, return_inverse=True)[1].float()
    emb[:, 0] = pid_rank * 10
    e = build_edges(d, emb, radius=1.0, knn=50, backend="kdtree")
    y, y_pid = label_edges(d, e)
    assert y_pid.all()
    found = edge_in(d.track_edges.numpy(), e.numpy(), d.num_nodes)
    assert found.mean() > 0.99


def test_module_map_learns_connections(detector):
    from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_event

    events = [
        select(
            process_event(
                simulate_event(SimulationConfig(mu=20), seed=5, event_id=i, detector=detector), detector
            ),
            0.5,
            0.0,
        )
        for i in range(6)
    ]
    mm = ModuleMap.fit(events[:5])
    assert len(mm) > 500
    train_e = mm.build(events[0])
    assert edge_in(events[0].track_edges.numpy(), train_e.numpy(), events[0].num_nodes).mean() > 0.95
    test = events[5]
    e = mm.build(test)
    eff = edge_in(test.track_edges.numpy(), e.numpy(), test.num_nodes).mean()
    # a map needs many events to cover the detector's module pairs: coverage grows with them
    eff_small = edge_in(
        test.track_edges.numpy(), ModuleMap.fit(events[:1]).build(test).numpy(), test.num_nodes
    ).mean()
    assert eff > eff_small > 0
    assert e.shape[1] < test.num_nodes * 50
    with pytest.raises(ValueError, match="needs training events"):
        ModuleMap.fit([])
    assert np.isfinite(mm.lo).all()


def test_edges_from_the_kdtree_table_are_those_of_the_generic_cleaning():
    """build_edges on the KD-tree takes each pair once from the neighbour table; it must
    give what cleaning every directed pair gives, edge for edge and in the same order,
    also where the cap binds, where hits sit at one point (ties in distance) and at one
    radius R (ties in orientation)."""
    from torch_geometric.data import Data

    from exatrkx_sweeps.stages.neighbours import _kdtree_table

    g = torch.Generator().manual_seed(7)
    x = torch.rand(3000, 4, generator=g)
    pos = torch.randn(3000, 3, generator=g) * 100
    x[2500:] = x[:500]  # 500 hits at the place of others in the embedding
    pos[2800:] = pos[1000:1200].flip(1)  # ... and 200 at the same R as others
    d = Data(pos=pos, module=torch.randint(0, 40, (3000,), generator=g), num_nodes=3000)
    radius, k = 0.3, 24
    got = build_edges(d, x, radius, k, backend="kdtree")
    want = orient_and_clean(d, radius_neighbours(x, radius, k, backend="kdtree"))
    assert got.shape[1] > 20_000 and torch.equal(got, want)
    # the data do exercise the cap, the ties and the orientation
    d2, nb = _kdtree_table(x, radius, k + 1)
    assert int((d2[:, -1] <= radius**2).sum()) > 1000  # full rows
    lower = (nb < torch.arange(3000)[:, None]) & (d2 <= radius**2)
    assert int((lower & (d2 == d2[:, -1][nb.clamp(max=2999)])).sum()) > 0  # as near as a full row's last
    R = pos.norm(dim=1)
    assert (R[got[0]] <= R[got[1]]).all() and int((R[got[0]] == R[got[1]]).sum()) > 0
    assert len(set(map(tuple, got.T.tolist()))) == got.shape[1]
