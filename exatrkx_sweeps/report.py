"""What a run measured, and the summary table printed at its end."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("embedding", "graph", "filter", "gnn", "tracks")
EDGE_STAGES = ("embedding", "filter", "gnn")  # names of the edge metrics (graph after ...)

# every metric a run reports (the README's table), as patterns
_S, _E = "|".join(STAGES), "|".join(EDGE_STAGES)
METRIC_PATTERNS = (
    r"eff_(phys|tech)_pt(0\.1|0\.5|1)(_err)?",
    r"n_particles_pt(0\.1|0\.5|1)",
    r"(purity|duplicate_rate)(_err)?|fake_rate|trackml_score|candidates_per_event|hits_per_event",
    rf"(edge_eff|edge_purity)_({_E})(_err)?|edges_per_(event|hit)_({_E})",
    rf"time_(train|prepare)_(data|{_S})_s|time_infer_({_S})(_total)?_s|time_infer_total_s|time_total_s",
    rf"(mem_peak|cuda_peak)_(train|prepare|infer)_(data|{_S})_mb",
    rf"fit_\w+_({_S})",
)
_METRIC = re.compile("|".join(f"(?:{p})" for p in METRIC_PATTERNS))
EXAMPLES = (
    "eff_tech_pt0.5",
    "eff_phys_pt0.5",
    "purity",
    "trackml_score",
    "edge_eff_filter",
    "time_infer_total_s",
)
# concrete names to suggest from when an objective is misspelled
_COMMON = (
    *(f"eff_{k}_pt{c}" for k in ("tech", "phys") for c in ("0.5", "0.1", "1")),
    "purity", "fake_rate", "duplicate_rate", "trackml_score", "hits_per_event", "time_infer_total_s",
    *(f"{m}_{s}" for m in ("edge_eff", "edge_purity", "edges_per_hit") for s in EDGE_STAGES),
)  # fmt: skip


def unknown_metric(names: list[str]) -> str | None:
    """One line naming the first of ``names`` that a run never reports (with the closest
    metric names), or None when a run reports them all."""
    for name in names:
        if not _METRIC.fullmatch(name):
            close = difflib.get_close_matches(name, _COMMON, n=2, cutoff=0.4)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            examples = ", ".join(EXAMPLES)
            return f"{name!r} is not a metric of a run; {hint}(e.g. {examples}; the README lists them all)"
    return None


@dataclass
class RunReport:
    """Everything a run measured: flat metrics, training curves, cache hits, provenance."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[tuple[str, int, str, float]] = field(default_factory=list)  # stage, epoch, name, value
    cache_hits: dict[str, bool] = field(default_factory=dict)
    per_event: dict[str, list[float]] = field(default_factory=dict)
    particles: np.ndarray | None = None  # (P, 4): pT, eta, hits, matched of the test particles
    info: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[tuple[str, str]]:
        m = self.metrics

        def pct(name):
            v, e = m.get(name, np.nan), m.get(f"{name}_err", np.nan)
            return f"{100 * v:.1f} +- {100 * e:.1f} %"

        rows = [
            (
                f"efficiency pT > {cut} GeV (physics / technical)",
                f"{pct(f'eff_phys_pt{cut}')} / {pct(f'eff_tech_pt{cut}')}",
            )
            for cut in ("0.1", "0.5", "1")
        ]
        rows += [
            (
                "track purity / fake / duplicate rate",
                f"{pct('purity')} / {100 * m.get('fake_rate', np.nan):.1f} % / "
                f"{100 * m.get('duplicate_rate', np.nan):.1f} %",
            ),
            ("TrackML score", f"{m.get('trackml_score', np.nan):.3f}"),
        ]
        for stage in EDGE_STAGES:
            rows.append(
                (
                    f"edges after {stage}: eff / purity / per event / per hit",
                    f"{pct(f'edge_eff_{stage}')} / {pct(f'edge_purity_{stage}')} / "
                    f"{m.get(f'edges_per_event_{stage}', np.nan):,.0f} / "
                    f"{m.get(f'edges_per_hit_{stage}', np.nan):.2f}",
                )
            )
        for stage in STAGES:
            t_train = m.get(f"time_train_{stage}_s")
            t_inf = m.get(f"time_infer_{stage}_s")
            mem = max(m.get(f"mem_peak_train_{stage}_mb", 0.0), m.get(f"mem_peak_infer_{stage}_mb", 0.0))
            hit = self.cache_hits.get(stage)
            rows.append(
                (
                    f"{stage}: train s / infer s per event / peak MB / cache",
                    f"{'-' if t_train is None else f'{t_train:.1f}'} / "
                    f"{'-' if t_inf is None else f'{t_inf:.3f}'} / {mem:.0f} / "
                    f"{'-' if hit is None else ('hit' if hit else 'miss')}",
                )
            )
        rows.append(("wall time (s)", f"{m.get('time_total_s', np.nan):.1f}"))
        return rows

    def summary_table(self) -> str:
        rows = self.summary_rows()
        w = max(len(k) for k, _ in rows)
        line = "-" * (w + 40)
        return "\n".join([line, *(f"{k:<{w}}  {v}" for k, v in rows), line])
