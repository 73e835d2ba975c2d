"""Track building: connected components after junction resolution."""

import torch

from exatrkx_sweeps.stages.tracks import best_neighbour_edges, label_hits

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
