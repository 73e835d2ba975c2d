"""Plotly figures of a run: track efficiency against pT and eta, with binomial errors."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..metrics.tracks import ETA_MAX, RECONSTRUCTABLE_HITS


def binned_efficiency(values: np.ndarray, matched: np.ndarray, edges: np.ndarray):
    """Bin centres, efficiency and binomial error of ``matched`` in bins of ``values``."""
    idx = np.digitize(values, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    n = np.bincount(idx[ok], minlength=len(edges) - 1).astype(float)
    k = np.bincount(idx[ok], weights=matched[ok].astype(float), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = k / n
        err = np.sqrt(eff * (1 - eff) / n)
    return 0.5 * (edges[1:] + edges[:-1]), eff, err


def efficiency_figures(report, pt_min: float = 0.5) -> dict[str, go.Figure]:
    """{'efficiency_vs_pt', 'efficiency_vs_eta'}: technical efficiency of reconstructable
    particles (>= 5 hits, |eta| < 4); the eta plot for pT > ``pt_min`` GeV."""
    p = report.particles
    if p is None or len(p) == 0:
        return {}
    pt, eta, nhits, matched = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    reco = (nhits >= RECONSTRUCTABLE_HITS) & (np.abs(eta) < ETA_MAX)
    figs = {}
    x, y, e = binned_efficiency(pt[reco], matched[reco], np.logspace(-1, 1.3, 16))
    fig = go.Figure(go.Scatter(x=x, y=y, error_y=dict(type="data", array=e), mode="markers+lines"))
    fig.update_layout(
        title="Technical efficiency vs pT",
        xaxis_title="pT [GeV]",
        yaxis_title="efficiency",
        xaxis_type="log",
        yaxis_range=[0, 1.05],
    )
    figs["efficiency_vs_pt"] = fig
    sel = reco & (pt > pt_min)
    x, y, e = binned_efficiency(eta[sel], matched[sel], np.linspace(-ETA_MAX, ETA_MAX, 17))
    fig = go.Figure(go.Scatter(x=x, y=y, error_y=dict(type="data", array=e), mode="markers+lines"))
    fig.update_layout(
        title=f"Technical efficiency vs eta (pT > {pt_min} GeV)",
        xaxis_title="eta",
        yaxis_title="efficiency",
        yaxis_range=[0, 1.05],
    )
    figs["efficiency_vs_eta"] = fig
    return figs
