"""Track-level metrics (docs/physics.md section 5).

* Candidates: groups of hits sharing a label, with at least ``min_track_hits`` hits.
* Double-majority matching: a candidate matches particle p when more than half of its
  hits (noise included) belong to p and it holds more than half of p's hits.
* Selected particles: |eta| < 4, pT above the cut, at least one hit; reconstructable:
  at least 5 hits. Physics efficiency = matched selected / selected; technical
  efficiency = matched reconstructable / reconstructable.
* Purity = matched candidates / candidates; fake rate = 1 - purity; duplicate rate =
  candidates whose majority particle is already the majority particle of another,
  larger candidate, over candidates.
* TrackML score: over every label group (the official score has no length cut), the
  group is good under the double majority; score = summed truth weight of its
  majority particle's hits in it / the event's total weight. Perfect labels score 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .edges import binomial

PT_CUTS_GEV = (0.1, 0.5, 1.0)
RECONSTRUCTABLE_HITS = 5
ETA_MAX = 4.0


@dataclass
class Matching:
    """Per-event matching result."""

    n_candidates: int
    n_matched_candidates: int
    n_duplicates: int
    matched_particles: np.ndarray  # particle ids matched by a candidate
    score: float


def match(labels: np.ndarray, pid: np.ndarray, weight: np.ndarray, min_track_hits: int = 5) -> Matching:
    """Double-majority matching of label groups to particles for one event.

    labels: per hit, the candidate label (negative = unassigned); pid: per hit, the
    particle id (0 = noise); weight: per hit, the TrackML truth weight."""
    labels = np.asarray(labels, np.int64)
    pid = np.asarray(pid, np.int64)
    weight = np.asarray(weight, np.float64)
    assigned = labels >= 0
    pid_u, pid_inv, pid_count = np.unique(pid, return_inverse=True, return_counts=True)
    lab_u, lab_inv, lab_size = np.unique(labels[assigned], return_inverse=True, return_counts=True)
    if lab_u.size == 0:
        return Matching(0, 0, 0, np.zeros(0, np.int64), 0.0)
    # (label, particle) pairs: hits in common and summed weight
    pair = np.stack([lab_inv, pid_inv[assigned]], 1)
    pair_u, pair_inv, pair_n = np.unique(pair, axis=0, return_inverse=True, return_counts=True)
    pair_w = np.bincount(pair_inv.ravel(), weights=weight[assigned], minlength=len(pair_u))
    pair_pid = pid_u[pair_u[:, 1]]
    # majority particle of each label: largest count (ties: first)
    order = np.lexsort((-pair_n, pair_u[:, 0]))
    first = np.ones(order.size, bool)
    first[1:] = pair_u[order[1:], 0] != pair_u[order[:-1], 0]
    maj = order[first]  # one pair per label, in label order
    maj_n, maj_pid = pair_n[maj], pair_pid[maj]
    size = lab_size[pair_u[maj, 0]]
    maj_total = pid_count[pair_u[maj, 1]]
    good = (maj_pid != 0) & (2 * maj_n > size) & (2 * maj_n > maj_total)
    total_w = weight.sum()
    score = float(pair_w[maj][good].sum() / total_w) if total_w > 0 else 0.0
    cand = size >= min_track_hits
    matched = good & cand
    # duplicates: among candidates whose majority (> 50% of the candidate) is the same
    # particle, all but the largest
    majority = cand & (maj_pid != 0) & (2 * maj_n > size)
    mp, ms = maj_pid[majority], size[majority]
    dup = 0
    if mp.size:
        o = np.lexsort((-ms, mp))
        dup = int((mp[o][1:] == mp[o][:-1]).sum())
    return Matching(int(cand.sum()), int(matched.sum()), dup, np.unique(maj_pid[matched]), score)


@dataclass
class TrackCounts:
    """Track metrics summed over the events of a test set."""

    min_track_hits: int = 5
    candidates: int = 0
    matched_candidates: int = 0
    duplicates: int = 0
    score_sum: float = 0.0
    events: int = 0
    selected: dict[float, int] = field(default_factory=lambda: dict.fromkeys(PT_CUTS_GEV, 0))
    selected_matched: dict[float, int] = field(default_factory=lambda: dict.fromkeys(PT_CUTS_GEV, 0))
    reco: dict[float, int] = field(default_factory=lambda: dict.fromkeys(PT_CUTS_GEV, 0))
    reco_matched: dict[float, int] = field(default_factory=lambda: dict.fromkeys(PT_CUTS_GEV, 0))
    per_event_eff_tech: dict[float, list] = field(default_factory=lambda: {c: [] for c in PT_CUTS_GEV})
    particle_rows: list[np.ndarray] = field(default_factory=list)  # (pt, eta, nhits, matched)

    def add(self, labels, pid, weight, p_pid, p_pt, p_eta, p_nhits) -> Matching:
        """One event: hit labels and truth, plus the particle table (ids, pT GeV, eta,
        hits in the event)."""
        m = match(labels, pid, weight, self.min_track_hits)
        self.candidates += m.n_candidates
        self.matched_candidates += m.n_matched_candidates
        self.duplicates += m.n_duplicates
        self.score_sum += m.score
        self.events += 1
        p_pid, p_pt, p_eta, p_nhits = map(np.asarray, (p_pid, p_pt, p_eta, p_nhits))
        is_matched = np.isin(p_pid, m.matched_particles)
        has_hits = p_nhits >= 1
        self.particle_rows.append(np.column_stack([p_pt, p_eta, p_nhits, is_matched])[has_hits])
        for cut in PT_CUTS_GEV:
            sel = (p_pt > cut) & (np.abs(p_eta) < ETA_MAX) & (p_nhits >= 1)
            rec = sel & (p_nhits >= RECONSTRUCTABLE_HITS)
            self.selected[cut] += int(sel.sum())
            self.selected_matched[cut] += int((sel & is_matched).sum())
            self.reco[cut] += int(rec.sum())
            self.reco_matched[cut] += int((rec & is_matched).sum())
            n_rec = int(rec.sum())
            self.per_event_eff_tech[cut].append((rec & is_matched).sum() / n_rec if n_rec else np.nan)
        return m

    def particles(self) -> np.ndarray:
        """(P, 4) float: pT (GeV), eta, hits, matched (0/1) of every test particle with hits."""
        return np.concatenate(self.particle_rows) if self.particle_rows else np.zeros((0, 4))

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cut in PT_CUTS_GEV:
            c = f"{cut:g}"
            out[f"eff_phys_pt{c}"], out[f"eff_phys_pt{c}_err"] = binomial(
                self.selected_matched[cut], self.selected[cut]
            )
            out[f"eff_tech_pt{c}"], out[f"eff_tech_pt{c}_err"] = binomial(
                self.reco_matched[cut], self.reco[cut]
            )
            out[f"n_particles_pt{c}"] = float(self.selected[cut])
        out["purity"], out["purity_err"] = binomial(self.matched_candidates, self.candidates)
        out["fake_rate"] = 1.0 - out["purity"] if self.candidates else float("nan")
        out["duplicate_rate"], out["duplicate_rate_err"] = binomial(self.duplicates, self.candidates)
        out["trackml_score"] = self.score_sum / max(self.events, 1)
        out["candidates_per_event"] = self.candidates / max(self.events, 1)
        return out
