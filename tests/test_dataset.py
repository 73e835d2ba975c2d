import numpy as np
import pytest
import torch

from exatrkx_sweeps.data.dataset import EventStore, process_event, select, split_event_ids
from exatrkx_sweeps.data.features import CELL_FEATURES, pair_features
from exatrkx_sweeps.data.simulate import simulate_dataset
from exatrkx_sweeps.data.trackml import write_detectors, write_event

SIM = {
    "source": "simulate",
    "seed": 2,
    "n_train": 2,
    "n_val": 1,
    "n_test": 2,
    "first_event": 10,
    "pt_cut": 0.0,
    "noise_fraction": 1.0,
    "simulation": {"mu": 4},
}


def test_processed_event_contents(small_event, detector):
    d = process_event(small_event, detector)
    n = len(small_event.hits)
    assert d.num_nodes == n and d.x.shape == (n, 3) and d.cell.shape == (n, len(CELL_FEATURES))
    r = torch.hypot(d.pos[:, 0], d.pos[:, 1])
    assert torch.allclose(d.x[:, 0], r / 1000, atol=1e-6)
    assert d.x[:, 1].abs().max() <= 1.0
    assert (d.cell[:, 0] >= 1).all()  # every simulated hit has cells
    pix = d.layer // 1000 == 8
    assert torch.allclose(d.cell[pix, 6], torch.tensor(0.15))  # lz = sensor thickness
    assert d.pid.dtype == torch.int64
    e = d.track_edges
    assert (d.pid[e[0]] == d.pid[e[1]]).all() and (d.pid[e[0]] != 0).all()
    assert (d.dist[e[1]] >= d.dist[e[0]]).all()  # oriented along the flight
    assert int(d.p_nhits.sum()) == int((d.pid != 0).sum())


def _pair_features_per_pair(pos, edges):
    """pair_features as written up to commit 270902e: every angle computed per pair."""
    a, b = pos[edges[0]], pos[edges[1]]
    ra, rb = torch.hypot(a[:, 0], a[:, 1]), torch.hypot(b[:, 0], b[:, 1])
    dr = rb - ra
    dphi = torch.remainder(
        torch.atan2(b[:, 1], b[:, 0]) - torch.atan2(a[:, 1], a[:, 0]) + torch.pi, 2 * torch.pi
    )
    dphi = dphi - torch.pi
    dz = b[:, 2] - a[:, 2]
    eta_a = torch.asinh(a[:, 2] / ra.clamp_min(1e-3))
    eta_b = torch.asinh(b[:, 2] / rb.clamp_min(1e-3))
    dr_safe = torch.where(dr.abs() > 1e-3, dr, torch.full_like(dr, 1e-3))
    z0 = (a[:, 2] - ra * dz / dr_safe).clamp(-3000, 3000)
    slope = (dphi / dr_safe * 1000).clamp(-20, 20)
    return torch.stack([dr / 100, dphi * 10, dz / 100, (eta_b - eta_a) * 10, slope / 5, z0 / 1000], 1).float()


def test_pair_features_geometry_and_the_same_numbers_as_per_pair_angles():
    """The pair geometry the filter and the GNN see: dphi wraps across phi = pi, z0 is
    where the pair's line meets the beamline. The hits' angles are computed once per hit
    and gathered; the numbers are those of computing them per pair, bit for bit, so the
    fitted filters and GNNs trained before keep scoring the same (the full-scale setting's
    models were carried to the new cache keys on that ground, docs/pu200.md, "Each hit's angles once")."""
    # a straight track from the beamline at z = 20 mm, crossing phi = pi between its hits
    phi_a, phi_b = np.pi - 0.01, -np.pi + 0.01
    pos = torch.tensor(
        [[100 * np.cos(phi_a), 100 * np.sin(phi_a), 70.0], [300 * np.cos(phi_b), 300 * np.sin(phi_b), 170.0]]
    ).float()
    f = pair_features(pos, torch.tensor([[0], [1]]))[0]
    assert f[0] == pytest.approx(2.0, abs=1e-4)  # dr 200 mm
    assert f[1] == pytest.approx(0.2, abs=1e-4)  # dphi +0.02 rad across the wrap, x 10
    assert f[2] == pytest.approx(1.0, abs=1e-5)  # dz 100 mm
    assert f[3] == pytest.approx(10 * (np.arcsinh(170 / 300) - np.arcsinh(70 / 100)), abs=1e-4)
    assert f[4] == pytest.approx(0.02, abs=1e-4)  # 0.1 rad/m / 5
    assert f[5] == pytest.approx(0.02, abs=1e-5)  # z0 = 20 mm, in m
    # hits spread like a detector's, pairs of every kind (the same R, the same hit, any
    # phi), in numbers that leave vector remainders different for hits and pairs
    g = torch.Generator().manual_seed(3)
    n = 5003
    r = torch.rand(n, generator=g) * 1000 + 30
    r[:500] = r[500:1000]  # pairs at equal R: dr = 0, the guarded branch
    phi = (torch.rand(n, generator=g) * 2 - 1) * torch.pi
    pos = torch.stack(
        [r * torch.cos(phi), r * torch.sin(phi), (torch.rand(n, generator=g) * 2 - 1) * 3000], 1
    )
    edges = torch.randint(0, n, (2, 200_017), generator=g)
    edges[:, :500] = torch.stack([torch.arange(500), torch.arange(500, 1000)])
    edges[:, 500:600] = torch.arange(100)  # a hit with itself
    assert torch.equal(pair_features(pos, edges), _pair_features_per_pair(pos, edges))


def test_selection_pt_and_noise(small_event, detector):
    d = process_event(small_event, detector)
    v = select(d, pt_cut=1.0, noise_fraction=0.0)
    assert (v.pid != 0).all() and (v.pt >= 1.0).all()
    assert v.track_edges.shape[1] > 0 and int(v.track_edges.max()) < v.num_nodes
    assert (v.pid[v.track_edges[0]] == v.pid[v.track_edges[1]]).all()
    n_noise = [int((select(d, 0.0, f).pid == 0).sum()) for f in (0.0, 0.3, 0.6, 1.0)]
    assert n_noise[0] == 0 and n_noise == sorted(n_noise) and n_noise[-1] == int((d.pid == 0).sum())
    assert abs(n_noise[2] / n_noise[-1] - 0.6) < 0.1
    # the noise of a smaller fraction is a subset of a larger one's
    small = set(select(d, 0.0, 0.3).hit_id[select(d, 0.0, 0.3).pid == 0].tolist())
    large = set(select(d, 0.0, 0.6).hit_id[select(d, 0.0, 0.6).pid == 0].tolist())
    assert small <= large
    with pytest.raises(ValueError, match=r"noise_fraction must lie in \[0, 1\]"):
        select(d, 0.0, 1.5)


def test_splits_never_overlap():
    ids = split_event_ids({"n_train": 5, "n_val": 2, "n_test": 3, "first_event": 100})
    assert ids["test"] == list(range(100, 103)) and ids["train"] == list(range(105, 110))
    # more training events never move the test or validation events
    more = split_event_ids({"n_train": 50, "n_val": 2, "n_test": 3, "first_event": 100})
    assert more["test"] == ids["test"] and more["val"] == ids["val"] and len(more["train"]) == 50
    avail = [3, 8, 9, 20, 21]
    ids = split_event_ids({"n_train": 2, "n_val": 1, "n_test": None}, avail)
    assert ids == {"test": [3, 8], "val": [9], "train": [20, 21]}
    assert not set(ids["train"]) & set(ids["test"])
    with pytest.raises(ValueError, match="directory holds 5"):
        split_event_ids({"n_train": 4, "n_val": 1, "n_test": 1}, avail)


def test_store_caches_and_rebuilds_corrupt_entries(tmp_path):
    store = EventStore(SIM, cache_dir=tmp_path)
    train = store.split("train")
    assert [d.event_id for d in train] == [13, 14]  # test (10, 11) and val (12) come first
    files = sorted(store.dir.glob("*.pt"))
    assert len(files) == 2
    second = EventStore(SIM, cache_dir=tmp_path)
    again = second.split("train")
    assert second.n_built == 0  # read, not rebuilt
    assert torch.equal(again[0].pos, train[0].pos)
    files[0].write_bytes(b"garbage")
    third = EventStore(SIM, cache_dir=tmp_path)
    rebuilt = third.split("train")
    assert third.n_built == 1 and torch.equal(rebuilt[0].pos, train[0].pos)


def test_eval_noise_readded_without_touching_training(tmp_path):
    cfg = dict(SIM, noise_fraction=0.0)
    store = EventStore(cfg, cache_dir=tmp_path)
    train = store.split("train")
    test_clean = store.split("test")
    test_noisy = store.split("test", noise_fraction=1.0)
    assert all(int((d.pid == 0).sum()) == 0 for d in train + test_clean)
    assert all(int((d.pid == 0).sum()) > 0 for d in test_noisy)
    assert all(int((d.pid == 0).sum()) == 0 for d in store.split("train"))


def test_trackml_directory_store(tmp_path, detector):
    raw = tmp_path / "raw"
    simulate_dataset(raw, 3, seed=9, detector=detector, first_event=1)
    store = EventStore(
        {"source": "trackml", "path": str(raw), "n_train": 1, "n_val": 0, "n_test": None},
        cache_dir=tmp_path / "c",
    )
    assert store.ids["test"] == [1, 2] and store.ids["train"] == [3]
    test = store.split("test")
    assert len(test) == 2 and test[0].track_edges.shape[1] > 0
    # a directory with one event and no cells file
    single = tmp_path / "single"
    from exatrkx_sweeps.data.trackml import read_event

    ev = read_event(raw, 2)
    ev.cells = None
    write_event(single, ev)
    write_detectors(single / "detectors.csv", detector)
    s = EventStore(
        {"source": "trackml", "path": str(single), "n_train": 0, "n_val": 0, "n_test": None},
        cache_dir=tmp_path / "c2",
    )
    (d,) = s.split("test")
    assert (d.cell == 0).all() and np.isclose(float(d.weight.sum()), 1.0, atol=1e-4)
