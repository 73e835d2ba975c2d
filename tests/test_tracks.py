"""Track building: connected components after junction resolution."""

import math

import torch

from exatrkx_sweeps.stages.tracks import NO_NEIGHBOUR, bend_weighted, best_neighbour_edges, label_hits

# hits 0 -> 1 and 2 -> 3 are two true segments; 2 -> 1 is a fake edge that outscores 0 -> 1
EDGES = torch.tensor([[0, 2, 2], [1, 1, 3]])
SCORES = torch.tensor([0.8, 0.9, 0.95])


def test_mutual_best_drops_the_true_edge_that_lost_to_a_fake():
    assert best_neighbour_edges(4, EDGES, SCORES, rounds=1).tolist() == [False, False, True]


def test_greedy_matching_mends_it():
    assert best_neighbour_edges(4, EDGES, SCORES, rounds=0).tolist() == [True, False, True]
    labels = label_hits(4, EDGES, SCORES, cut=0.5, backend="scipy", junction_rounds=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    split = label_hits(4, EDGES, SCORES, cut=0.5, backend="scipy", junction_rounds=1)
    assert len(set(split.tolist())) == 3  # hit 0 and hit 1 alone, 2-3 together


def test_every_hit_keeps_at_most_one_edge_each_way_even_with_ties():
    edges = torch.tensor([[0, 0, 1, 2], [3, 4, 3, 3]])
    keep = best_neighbour_edges(5, edges, torch.ones(4), rounds=0)
    kept = edges[:, keep]
    assert len(set(kept[0].tolist())) == kept.shape[1] and len(set(kept[1].tolist())) == kept.shape[1]
    assert kept.tolist() == [[0], [3]]  # the first of the tied edges; the others share its hits


def test_cut_applies_before_matching():
    labels = label_hits(4, EDGES, SCORES, cut=0.85, backend="scipy", junction_rounds=0)
    assert labels[0] != labels[1]  # 0 -> 1 scored below the cut


# A straight track 0-1-2-3-4 (hits 40 mm apart along x, rising in z) scored 0.8 per edge,
# and a fake edge 1 -> 5 scored 0.9 to a hit 30 degrees off the track's line.
TRACK_POS = torch.tensor(
    [[40.0 * i, 0.0, 10.0 * i] for i in range(1, 6)] + [[80 + 40 * math.cos(0.52), 40 * math.sin(0.52), 30.0]]
)
TRACK_EDGES = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 4, 5]])
TRACK_SCORES = torch.tensor([0.8, 0.8, 0.8, 0.8, 0.9])
BEND = {"pos": TRACK_POS, "bend_sigmas": (0.1, 0.05)}


def test_bend_weight_keeps_the_track_that_a_better_scored_kink_splits():
    plain = label_hits(6, TRACK_EDGES, TRACK_SCORES, 0.5, "scipy", junction_rounds=0)
    assert plain[1] == plain[5] and plain[1] != plain[2]  # the fake won hit 1: the track is cut in two
    bent = label_hits(6, TRACK_EDGES, TRACK_SCORES, 0.5, "scipy", junction_rounds=0, **BEND)
    assert len(set(bent[:5].tolist())) == 1 and bent[5] != bent[0]  # whole, and the kinked hit left out


def test_bend_weight_is_the_score_times_the_geometric_mean_of_the_supports():
    w = bend_weighted(TRACK_POS, TRACK_EDGES, TRACK_SCORES, 0.1, 0.05)
    # inner edges of the straight track: a 0.8 neighbour on each side, no bend
    assert torch.allclose(w[1:3], torch.tensor(0.8 * 0.8))
    # the first edge has nothing before it, the last nothing after it
    assert math.isclose(float(w[0]), 0.8 * math.sqrt(NO_NEIGHBOUR * 0.8), rel_tol=1e-5)
    assert math.isclose(float(w[3]), 0.8 * math.sqrt(0.8 * NO_NEIGHBOUR), rel_tol=1e-5)
    # the kink: 0.52 rad off the incoming segment, 5.2 widths, support exp(-13.5) * 0.8
    assert float(w[4]) < 1e-3 * float(w[1])
    # the cut stays on the scores: an edge with a tiny weight still joins when it is alone
    alone = label_hits(6, TRACK_EDGES[:, 4:], TRACK_SCORES[4:], 0.5, "scipy", **BEND)
    assert alone[1] == alone[5]
