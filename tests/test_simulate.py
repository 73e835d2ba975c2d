import numpy as np
import pandas as pd
import pytest

from exatrkx_sweeps.data.simulate import (
    SimulationConfig,
    sample_eta,
    sample_pt,
    simulate_dataset,
    simulate_event,
)
from exatrkx_sweeps.data.trackml import read_event


def test_deterministic_for_a_seed(detector):
    cfg = SimulationConfig(mu=5)
    a = simulate_event(cfg, seed=11, event_id=2, detector=detector)
    b = simulate_event(cfg, seed=11, event_id=2, detector=detector)
    c = simulate_event(cfg, seed=12, event_id=2, detector=detector)
    pd.testing.assert_frame_equal(a.hits, b.hits)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert len(a.hits) != len(c.hits) or not np.allclose(a.hits.x, c.hits.x)


def test_hits_lie_inside_their_modules(small_event, detector):
    h = small_event.hits.merge(small_event.truth, on="hit_id")
    rows = detector.module_rows(h.volume_id, h.layer_id, h.module_id)
    assert (rows >= 0).all()
    m = detector.modules.iloc[rows]
    local = np.einsum(
        "nji,nj->ni", detector.rotations[rows], h[["tx", "ty", "tz"]].to_numpy() - detector.centres[rows]
    )
    assert np.abs(local[:, 2]).max() < 1e-2  # on the module plane
    assert (np.abs(local[:, 1]) <= m.module_hv.to_numpy() + 1e-6).all()
    assert (np.abs(local[:, 0]) <= m.module_maxhu.to_numpy() + 1e-6).all()


def test_positive_particles_bend_clockwise(detector):
    ev = simulate_event(
        SimulationConfig(mu=20, multiple_scattering=False, secondary_fraction=0.0),
        seed=1,
        event_id=1,
        detector=detector,
    )
    h = ev.hits.merge(ev.truth, on="hit_id")
    h = h[h.particle_id != 0].merge(ev.particles[["particle_id", "q", "px", "py"]], on="particle_id")
    h["r"] = np.hypot(h.tx, h.ty)
    first_last = (
        h.sort_values("r")
        .groupby("particle_id")
        .agg(
            q=("q", "first"),
            x0=("tx", "first"),
            y0=("ty", "first"),
            x1=("tx", "last"),
            y1=("ty", "last"),
            n=("r", "size"),
        )
    )
    fl = first_last[first_last.n >= 6]
    dphi = np.angle(np.exp(1j * (np.arctan2(fl.y1, fl.x1) - np.arctan2(fl.y0, fl.x0))))
    assert (np.sign(dphi) == -fl.q).mean() > 0.95


def test_no_particle_crosses_a_layer_twice(detector):
    ev = simulate_event(SimulationConfig(mu=30), seed=4, event_id=4, detector=detector)
    h = ev.hits.merge(ev.truth, on="hit_id")
    h = h[h.particle_id != 0]
    pairs = h.merge(h, on=["particle_id", "volume_id", "layer_id"])
    pairs = pairs[pairs.hit_id_x < pairs.hit_id_y]
    d = np.sqrt(
        (pairs.tx_x - pairs.tx_y) ** 2 + (pairs.ty_x - pairs.ty_y) ** 2 + (pairs.tz_x - pairs.tz_y) ** 2
    )
    assert len(pairs) > 50
    assert (d < 30).mean() >= 0.99  # only module overlaps (docs/physics.md: 99.9% in real data)


def test_truth_weights_and_nhits(small_event):
    t, p = small_event.truth, small_event.particles
    assert np.isclose(t.weight.sum(), 1.0)
    assert (t.weight[t.particle_id == 0] == 0).all()
    counts = t[t.particle_id != 0].particle_id.value_counts()
    nh = p.set_index("particle_id").nhits
    assert (nh.reindex(counts.index) == counts).all()
    assert (nh == 0).any()  # many particles leave no hit
    short = counts[counts < 4].index
    assert (t[t.particle_id.isin(short)].weight == 0).all()
    assert (t[t.particle_id.isin(counts[counts >= 4].index)].weight > 0).all()
    noise = t[t.particle_id == 0]
    assert 0.10 < len(noise) / len(t) < 0.20
    assert (np.sqrt(noise.tpx**2 + noise.tpy**2 + noise.tpz**2) > 1e5).all()  # meaningless, as in real files


def test_cells_follow_pitch_grid(small_event):
    c = small_event.cells.merge(small_event.hits[["hit_id", "volume_id"]], on="hit_id")
    pix = c[c.volume_id.isin([7, 8, 9])]
    strip = c[~c.volume_id.isin([7, 8, 9])]
    assert pix.ch0.between(0, 335).all() and pix.ch1.between(0, 1279).all()
    assert (pix.value > 0).all() and pix.value.median() < 0.4
    assert (strip.value == 1).all()
    assert set(c.hit_id) == set(small_event.hits.hit_id)  # every hit has cells
    per_hit = pix[pix.volume_id == 8].groupby("hit_id").size()
    assert 3 < per_hit.mean() < 10


def test_spectra():
    rng = np.random.default_rng(0)
    pt = sample_pt(rng, 200_000)
    assert pt.min() >= 0.1
    assert np.median(pt) == pytest.approx(0.36, abs=0.01)
    assert (pt > 1).mean() == pytest.approx(0.11, abs=0.005)
    eta = sample_eta(rng, 200_000)
    central = (np.abs(eta) < 0.25).sum()
    forward = (np.abs(eta) > 2.5).sum() / 6
    assert central / forward == pytest.approx(1300 / 550, rel=0.15)


def test_written_dataset_reads_back(tmp_path, detector):
    ids = simulate_dataset(tmp_path, 2, SimulationConfig(mu=3), seed=5, compress=True, detector=detector)
    assert (tmp_path / "detectors.csv.gz").exists()
    for i in ids:
        ev = read_event(tmp_path, i, cells=True, detector=detector)
        assert len(ev.hits) > 100


def test_impossible_config():
    with pytest.raises(ValueError, match="noise_share"):
        SimulationConfig(noise_share=1.5)
