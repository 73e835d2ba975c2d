"""Edge-level metrics after a stage (docs/physics.md section 5).

efficiency = true edges kept / all true edges; purity = true edges kept / edges kept;
graph size as edges per event and per hit. Counts add up over events, and every
ratio carries its binomial uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def binomial(k: float, n: float) -> tuple[float, float]:
    """Ratio k / n and its binomial standard error (nan when n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    return float(p), float(np.sqrt(max(p * (1 - p), 0.0) / n))


@dataclass
class EdgeCounts:
    """Edge counts summed over events for one stage."""

    true_kept: int = 0
    kept: int = 0
    true_total: int = 0
    hits: int = 0
    events: int = 0
    per_event_efficiency: list[float] = field(default_factory=list)

    def add(self, y_kept: np.ndarray, n_true_total: int, n_hits: int) -> None:
        """y_kept: truth label of each kept edge; n_true_total: true edges of the event."""
        y_kept = np.asarray(y_kept, bool)
        tk = int(y_kept.sum())
        self.true_kept += tk
        self.kept += int(y_kept.size)
        self.true_total += int(n_true_total)
        self.hits += int(n_hits)
        self.events += 1
        self.per_event_efficiency.append(tk / n_true_total if n_true_total else float("nan"))

    def summary(self, stage: str = "") -> dict[str, float]:
        """edge_eff, edge_purity (each with its _err), edges_per_event, edges_per_hit;
        with ``stage``, each name carries it (``edge_eff_filter``, ``edge_eff_filter_err``)."""
        eff, eff_err = binomial(self.true_kept, self.true_total)
        pur, pur_err = binomial(self.true_kept, self.kept)
        s = f"_{stage}" if stage else ""
        return {
            f"edge_eff{s}": eff,
            f"edge_eff{s}_err": eff_err,
            f"edge_purity{s}": pur,
            f"edge_purity{s}_err": pur_err,
            f"edges_per_event{s}": self.kept / max(self.events, 1),
            f"edges_per_hit{s}": self.kept / max(self.hits, 1),
        }
