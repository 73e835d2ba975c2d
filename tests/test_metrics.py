"""Metrics on hand-built events whose answers are known."""

import numpy as np
import pytest

from exatrkx_sweeps.metrics.edges import EdgeCounts, binomial
from exatrkx_sweeps.metrics.tracks import TrackCounts, match


def _event():
    """Particles 1 (6 hits, pT 2), 2 (5 hits, pT 0.7), 3 (4 hits, pT 0.3), 4 (1 hit),
    plus 3 noise hits. Weights: each particle's hits share 1/4 of the total, noise 0."""
    pid = np.array([1] * 6 + [2] * 5 + [3] * 4 + [4] + [0] * 3)
    w = np.zeros(pid.size)
    for p in (1, 2, 3, 4):
        w[pid == p] = 0.25 / (pid == p).sum()
    table = dict(
        p_pid=np.array([1, 2, 3, 4, 5]),
        p_pt=np.array([2.0, 0.7, 0.3, 1.5, 3.0]),
        p_eta=np.array([0.1, -1.0, 2.0, 0.5, 0.0]),
        p_nhits=np.array([6, 5, 4, 1, 0]),
    )
    return pid, w, table


def _perfect(pid):
    labels = pid.copy()
    labels[pid == 0] = 100 + np.arange((pid == 0).sum())  # noise: singletons
    return labels


def test_perfect_labels():
    pid, w, table = _event()
    tc = TrackCounts()
    m = tc.add(_perfect(pid), pid, w, **table)
    s = tc.summary()
    assert m.score == pytest.approx(1.0)
    assert s["trackml_score"] == pytest.approx(1.0)
    assert s["eff_tech_pt0.1"] == 1.0 and s["eff_tech_pt0.5"] == 1.0 and s["eff_tech_pt1"] == 1.0
    assert s["purity"] == 1.0 and s["fake_rate"] == 0.0 and s["duplicate_rate"] == 0.0
    # selected pT > 0.1: particles 1-4 (5 has no hit); 3 (4 hits) and 4 (1 hit) can't be matched
    assert s["n_particles_pt0.1"] == 4 and s["eff_phys_pt0.1"] == pytest.approx(0.5)
    # pT > 1: particles 1 and 4 selected, only 1 reconstructable
    assert s["eff_phys_pt1"] == pytest.approx(0.5) and s["eff_tech_pt1"] == 1.0


def test_particle_with_four_hits_selected_not_reconstructable():
    pid, w, table = _event()
    tc = TrackCounts()
    tc.add(_perfect(pid), pid, w, **table)
    assert tc.selected[0.1] == 4 and tc.reco[0.1] == 2


def test_track_split_in_halves_matches_nothing():
    pid = np.array([7] * 10)
    labels = np.array([0] * 5 + [1] * 5)
    m = match(labels, pid, np.full(10, 0.1), min_track_hits=5)
    assert m.n_candidates == 2 and m.n_matched_candidates == 0 and m.score == 0.0
    assert m.n_duplicates == 1  # two candidates with the same majority particle


def test_noise_candidate_is_fake():
    pid, w, table = _event()
    labels = _perfect(pid)
    labels[pid == 0] = 50
    labels[pid == 4] = 50  # 3 noise + 1 hit of particle 4
    labels[np.flatnonzero(pid == 1)[:1]] = 50  # and one hit of particle 1: 5 hits
    tc = TrackCounts()
    m = tc.add(labels, pid, w, **table)
    assert m.n_candidates == 3 and m.n_matched_candidates == 2
    assert tc.summary()["fake_rate"] == pytest.approx(1 / 3)


def test_noise_counts_in_candidate_length():
    # 3 hits of particle 1 (of its 3) + 3 noise: 50% is not > 50%: no match
    pid = np.array([1, 1, 1, 0, 0, 0])
    m = match(np.zeros(6, int), pid, np.array([1 / 3] * 3 + [0] * 3), min_track_hits=5)
    assert m.n_matched_candidates == 0
    m = match(np.zeros(5, int), pid[:5], np.array([1 / 3] * 3 + [0] * 2), min_track_hits=5)
    assert m.n_matched_candidates == 1 and m.score == pytest.approx(1.0)


def test_score_weights_add_up():
    pid, w, table = _event()
    labels = _perfect(pid)
    labels[pid == 2] = -1  # particle 2 not reconstructed: loses its quarter
    assert match(labels, pid, w).score == pytest.approx(0.75)
    labels = _perfect(pid)
    labels[np.flatnonzero(pid == 1)[:2]] = 77  # 2 of 6 hits of particle 1 split off
    assert match(labels, pid, w).score == pytest.approx(1.0 - 0.25 * 2 / 6)


def test_binomial_errors_over_events():
    assert binomial(90, 100) == pytest.approx((0.9, 0.03))
    pid, w, table = _event()
    tc = TrackCounts()
    for _ in range(3):
        tc.add(_perfect(pid), pid, w, **table)
    s = tc.summary()
    assert s["eff_phys_pt0.1_err"] == pytest.approx(np.sqrt(0.25 / 12))


def test_edge_counts():
    ec = EdgeCounts()
    ec.add(np.array([1, 1, 0, 0], bool), n_true_total=4, n_hits=10)
    ec.add(np.array([1, 0], bool), n_true_total=1, n_hits=5)
    s = ec.summary()
    assert s["edge_eff"] == pytest.approx(3 / 5) and s["edge_purity"] == pytest.approx(3 / 6)
    assert s["edges_per_event"] == 3 and s["edges_per_hit"] == pytest.approx(6 / 15)
