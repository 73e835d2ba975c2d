import numpy as np
import pytest
import torch

from exatrkx_sweeps.data.dataset import EventStore, process_event, select, split_event_ids
from exatrkx_sweeps.data.features import CELL_FEATURES
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
