import numpy as np

from exatrkx_sweeps.data.truth import edge_in, module_key, same_particle, truth_edges


def test_module_wise_truth_hand_built():
    # particle 5: modules A, (B, B') duplicate pair on one layer as distinct modules, C;
    # plus two hits on the same module D after C. Particle 9: 3 hits. Noise: 2 hits.
    pid = np.array([5, 5, 5, 5, 5, 5, 9, 9, 9, 0, 0])
    dist = np.array([10, 20, 21, 30, 40, 40.5, 10, 20, 30, 5, 15.0])
    mod = np.array([1, 2, 3, 4, 6, 6, 1, 2, 4, 1, 2])
    e = truth_edges(pid, dist, mod)
    got = set(map(tuple, e.T.tolist()))
    # grouping by module: [0], [1], [2], [3], [4, 5]  (1 and 2 are different modules)
    assert got == {(0, 1), (1, 2), (2, 3), (3, 4), (3, 5), (6, 7), (7, 8)}
    # same-layer grouping merges hits 1 and 2 into one group: both connect to 0 and 3
    layer = np.array([1, 2, 2, 3, 4, 4, 1, 2, 3, 1, 2])
    got_l = set(map(tuple, truth_edges(pid, dist, layer).T.tolist()))
    assert got_l == {(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (3, 5), (6, 7), (7, 8)}


def test_order_follows_distance_not_row_order():
    pid = np.array([3, 3, 3])
    dist = np.array([30.0, 10.0, 20.0])
    e = truth_edges(pid, dist, np.array([1, 2, 3]))
    assert set(map(tuple, e.T.tolist())) == {(1, 2), (2, 0)}


def test_simulated_truth_density(small_event):
    h = small_event.hits.merge(small_event.truth, on="hit_id")
    key = module_key(h.volume_id, h.layer_id, h.module_id)
    pid = h.particle_id.to_numpy()
    e = truth_edges(pid, np.hypot(h.tx, h.ty) + np.abs(h.tz), key)
    per_hit = e.shape[1] / (pid != 0).sum()
    assert 0.75 < per_hit < 1.05  # docs/physics.md section 4: 0.8-1.0 true edges per hit
    assert same_particle(pid, e).all()
    assert edge_in(e[:, :10], e, len(pid)).all()
    assert edge_in(e[::-1, :10], e, len(pid)).all()  # either orientation
