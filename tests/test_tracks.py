"""Track building: connected components after junction resolution."""

import math

import numpy as np
import pytest
import torch

from exatrkx_sweeps.augment.triplets import _directions, consecutive_pairs
from exatrkx_sweeps.data.dataset import process_event
from exatrkx_sweeps.data.geometry import bz_tesla, volume_family
from exatrkx_sweeps.stages.tracks import (
    NO_NEIGHBOUR,
    Bend,
    bend_weighted,
    best_neighbour_edges,
    helix_variances,
    label_hits,
    stitch_fragments,
    transverse_curvature,
)

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
BENDS = [Bend("curvature", 0.1, 0.05), Bend("direction", 0.1, 0.05), Bend("helix", 0.1, 0.05)]
TRACK_VOLUME = torch.full((6,), 8)  # the pixel barrel (the helix model's resolutions)


@pytest.mark.parametrize("bend", BENDS, ids=lambda b: b.model)
def test_bend_weight_keeps_the_track_that_a_better_scored_kink_splits(bend):
    plain = label_hits(6, TRACK_EDGES, TRACK_SCORES, 0.5, "scipy", junction_rounds=0)
    assert plain[1] == plain[5] and plain[1] != plain[2]  # the fake won hit 1: the track is cut in two
    bent = label_hits(
        6,
        TRACK_EDGES,
        TRACK_SCORES,
        0.5,
        "scipy",
        junction_rounds=0,
        pos=TRACK_POS,
        bend=bend,
        volume=TRACK_VOLUME,
    )
    assert len(set(bent[:5].tolist())) == 1 and bent[5] != bent[0]  # whole, and the kinked hit left out


@pytest.mark.parametrize("bend", BENDS, ids=lambda b: b.model)
def test_bend_weight_is_the_score_times_the_geometric_mean_of_the_supports(bend):
    w = bend_weighted(TRACK_POS, TRACK_EDGES, TRACK_SCORES, bend, TRACK_VOLUME)
    # inner edges of the straight track: a 0.8 neighbour on each side, no bend
    assert torch.allclose(w[1:3], torch.tensor(0.8 * 0.8))
    # the first edge has nothing before it, the last nothing after it
    assert math.isclose(float(w[0]), 0.8 * math.sqrt(NO_NEIGHBOUR * 0.8), rel_tol=1e-5)
    assert math.isclose(float(w[3]), 0.8 * math.sqrt(0.8 * NO_NEIGHBOUR), rel_tol=1e-5)
    # the kink: 0.52 rad off the incoming segment (5.2 widths), or a circle of curvature
    # 2 sin(0.52) / 80 mm = 12.4 / m against 0 (124 widths)
    assert float(w[4]) < 1e-3 * float(w[1])
    # the cut stays on the scores: an edge with a tiny weight still joins when it is alone
    alone = label_hits(
        6, TRACK_EDGES[:, 4:], TRACK_SCORES[4:], 0.5, "scipy", pos=TRACK_POS, bend=bend, volume=TRACK_VOLUME
    )
    assert alone[1] == alone[5]


def test_a_particle_from_the_beamline_keeps_its_curvature_where_its_direction_turns():
    """Hits of a 0.5 GeV track (R = 833 mm in 2 T) on the barrel layers, 40 to 145 mm
    apart: every edge is on the same circle through the beamline, so the curvature model
    sees no bend at all, while the segments' direction turns by 0.05-0.15 rad, 0.5-1.5
    of the direction model's widths, growing with the distance between hits."""
    radius = 833.0
    r = torch.tensor([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0])
    angle = 2 * torch.asin(r / (2 * radius))  # position on the circle through the origin
    pos = torch.stack([radius * torch.sin(angle), radius * (1 - torch.cos(angle)), 0.5 * radius * angle], 1)
    edges = torch.stack([torch.arange(6), torch.arange(1, 7)])
    assert torch.allclose(transverse_curvature(pos, edges), torch.tensor(1000 / radius), rtol=1e-4)
    scores = torch.full((6,), 0.8)
    curved = bend_weighted(pos, edges, scores, Bend("curvature", 0.1, 0.05))
    turned = bend_weighted(pos, edges, scores, Bend("direction", 0.1, 0.05))
    assert torch.allclose(curved[1:5], torch.tensor(0.8 * 0.8), rtol=1e-4)
    assert (turned[1:5] < 0.97 * curved[1:5]).all()


def test_curvature_of_simulated_primary_tracks_is_0_3_b_over_pt(small_event, detector):
    """The simulator's particles (its field, multiple scattering, energy loss, hit
    resolution): the consecutive true edges of a primary above 1 GeV in the barrel agree
    in curvature to a few hundredths of 1/m, and that curvature is 0.3 B / pT."""
    d = process_event(small_event, detector)
    e = d.track_edges
    hit = e[0]
    keep = (d.vr[hit] < 1.0) & (d.pt[hit] > 1.0) & (d.pos[e, 2].abs() < 400).all(0)
    e = e[:, keep]
    k = transverse_curvature(d.pos, e)
    expected = 0.3 * torch.from_numpy(bz_tesla(np.zeros(1))).float() / d.pt[e[0]]
    ratio = (k.abs() / expected).numpy()
    assert len(ratio) > 200 and abs(np.median(ratio) - 1) < 0.03
    a, b = consecutive_pairs(e, d.num_nodes)
    assert len(a) > 100 and float((k[b] - k[a]).abs().median()) < 0.05


def test_helix_widths_follow_the_hits_and_the_scattering(small_event, detector):
    """The consecutive true edges of the simulated primaries above 0.5 GeV: with the
    helix model's own widths per pair (hit resolution, multiple scattering) almost none
    costs more than 9 in the pixels and short strips, where the fixed widths (0.1 / m,
    0.05 rad) reject a third of the pixel pairs; the median cost is near that of a
    chi-square (0.45 per term) within a factor of ten, not far below it (widths too wide
    to tell a fake; the scattering is that of 0.5 GeV, wide for the stiffer tracks)."""
    d = process_event(small_event, detector)
    e, volume = d.track_edges, d.layer // 1000
    a, b = consecutive_pairs(e, d.num_nodes)
    hit = e[1][a]
    keep = (d.vr[hit] < 1.0) & (d.pt[hit] > 0.5)
    a, b, hit = a[keep], b[keep], hit[keep]
    var_k, var_theta = helix_variances(d.pos, e, volume, a, b)
    dk = transverse_curvature(d.pos, e)
    dk = dk[b] - dk[a]
    dtheta = _directions(d.pos.float(), e)[1]
    dtheta = dtheta[b] - dtheta[a]
    cost = dk**2 / var_k + dtheta**2 / var_theta
    fixed = (dk / 0.1) ** 2 + (dtheta / 0.05) ** 2
    family = volume_family(volume[hit].numpy())
    for name, most in (("pixel", 0.01), ("short_strip", 0.02)):
        inside = torch.from_numpy(family == name)
        assert inside.sum() > 500
        assert float((cost[inside] > 9).float().mean()) < most
        assert 0.045 < float((dk[inside] ** 2 / var_k[inside]).median()) < 1.0
        assert 0.045 < float((dtheta[inside] ** 2 / var_theta[inside]).median()) < 1.0
    pixel = torch.from_numpy(family == "pixel")
    assert float((fixed[pixel] > 9).float().mean()) > 0.25


def test_stitching_joins_the_halves_of_tracks_whose_middle_edge_is_missing(small_event, detector):
    """The simulated event's true edges of every particle (module-wise truth: chains
    inside-out), less one edge between layers (over 20 mm; not the few millimetres
    between overlapping modules) in the middle of each primary above 0.5 GeV with 8 hits
    or more: a jump the graph missed. Stitching must join most of those halves, and
    hardly anything else, among all the event's chains."""
    d = process_event(small_event, detector)
    e = d.track_edges
    pid = d.pid[e[0]]
    between_layers = (d.pos[e[1]] - d.pos[e[0]]).norm(dim=1) > 20.0
    cut = []
    for p in torch.unique(pid[(d.pt[e[0]] > 0.5) & (d.vr[e[0]] < 1.0)]):
        mine = torch.nonzero((pid == p) & between_layers).flatten()
        if len(mine) >= 6:
            order = torch.argsort(d.pos[e[0, mine]].norm(dim=1))
            cut.append(int(mine[order[len(mine) // 2]]))
    cut = torch.tensor(cut)
    kept = torch.ones(e.shape[1], dtype=torch.bool)
    kept[cut] = False
    joins = stitch_fragments(d.pos, e[:, kept], d.num_nodes, 0.1, 0.05, 9.0)
    missing = {tuple(x) for x in e[:, cut].T.tolist()}
    found = {tuple(x) for x in joins.T.tolist()}
    same = (d.pid[joins[0]] == d.pid[joins[1]]).float().mean()
    assert len(missing) > 50
    assert len(missing & found) / len(missing) > 0.85
    assert same > 0.97
    # the whole truth: the particles' own chains are not joined to one another
    assert stitch_fragments(d.pos, e, d.num_nodes, 0.1, 0.05, 9.0).shape[1] <= 2
    # each hit at most one edge each way, and every join runs outwards
    both = torch.cat([e[:, kept], joins], 1)
    assert torch.bincount(both[0]).max() <= 1 and torch.bincount(both[1]).max() <= 1
    assert (d.pos[joins[1]].norm(dim=1) > d.pos[joins[0]].norm(dim=1)).all()


def test_stitching_joins_on_one_circle_and_not_across_a_charge():
    """Two fragments of a 0.5 GeV track with the layer between them missing join; the
    fragment of the oppositely charged track through the same first hits does not."""
    radius = 833.0
    r = torch.tensor([32.0, 72.0, 116.0, 260.0, 360.0])
    angle = 2 * torch.asin(r / (2 * radius))
    track = torch.stack([radius * torch.sin(angle), radius * (1 - torch.cos(angle)), 0.5 * radius * angle], 1)
    mirror = track[3:] * torch.tensor([1.0, -1.0, 1.0])  # the same hits bent the other way
    pos = torch.cat([track, mirror])
    edges = torch.tensor([[0, 1, 3, 5], [1, 2, 4, 6]])  # 0-1-2 | 3-4 and the mirror's 5-6
    joins = stitch_fragments(pos, edges, 7, 0.1, 0.05, 9.0)
    assert joins.tolist() == [[2], [3]]
    labels = label_hits(7, edges, torch.ones(4), 0.5, "scipy", pos=pos, stitch=(0.1, 0.05, 9.0))
    assert len(set(labels[:5].tolist())) == 1 and labels[5] != labels[0]


def test_stitching_a_graph_without_chain_ends_joins_nothing():
    """Two hits at the same distance from the origin keep their edge in both directions
    (orient_and_clean cannot order them), and the matching may keep both: a loop with no
    last and no first hit, so there is nothing to join."""
    pos = torch.tensor([[30.0, 0.0, 0.0], [0.0, 30.0, 0.0], [60.0, 0.0, 0.0]])
    loop = torch.tensor([[0, 1], [1, 0]])
    assert stitch_fragments(pos, loop, 3, 0.1, 0.05, 9.0).shape == (2, 0)
    labels = label_hits(3, loop, torch.ones(2), 0.5, "scipy", pos=pos, stitch=(0.1, 0.05, 9.0))
    assert labels[0] == labels[1] != labels[2]
