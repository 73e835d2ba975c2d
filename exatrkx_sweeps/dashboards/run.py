"""Figures of runs: technical efficiency against pT and eta, with binomial errors.

:func:`efficiency_curves` bins one run's test particles (what the run logs as
``efficiency.json``); :func:`efficiency_figures` draws one or several runs' curves, so
that a run's own page and a study's dashboard overlay the same data.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..metrics.tracks import ETA_MAX, RECONSTRUCTABLE_HITS

PT_BINS_GEV = np.logspace(-1, 1.3, 16)
ETA_BINS = np.linspace(-ETA_MAX, ETA_MAX, 17)


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


def efficiency_curves(particles: np.ndarray | None, pt_min: float = 0.5) -> dict[str, dict[str, list]]:
    """Technical efficiency of reconstructable particles (>= 5 hits, |eta| < 4) in bins of
    pT, and of eta for pT > ``pt_min`` GeV: {'pt': {x, eff, err}, 'eta': {...}} as lists
    (JSON; empty bins are None)."""
    if particles is None or len(particles) == 0:
        return {}
    pt, eta, nhits, matched = particles[:, 0], particles[:, 1], particles[:, 2], particles[:, 3]
    reco = (nhits >= RECONSTRUCTABLE_HITS) & (np.abs(eta) < ETA_MAX)
    out = {}
    for name, values, sel, edges in (
        ("pt", pt, reco, PT_BINS_GEV),
        ("eta", eta, reco & (pt > pt_min), ETA_BINS),
    ):
        x, eff, err = binned_efficiency(values[sel], matched[sel], edges)
        out[name] = {
            "x": x.tolist(),
            "eff": [None if not np.isfinite(v) else float(v) for v in eff],
            "err": [None if not np.isfinite(v) else float(v) for v in err],
        }
    out["pt_min"] = pt_min
    return out


def efficiency_figures(curves: dict[str, dict]) -> dict[str, go.Figure]:
    """{'efficiency_vs_pt', 'efficiency_vs_eta'}: one trace per run of ``curves``
    (label -> efficiency_curves of that run)."""
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return {}
    pt_min = next(iter(curves.values())).get("pt_min", 0.5)
    figs = {}
    for name, title, axis in (
        ("pt", "Technical efficiency vs pT", "pT [GeV]"),
        ("eta", f"Technical efficiency vs eta (pT > {pt_min} GeV)", "eta"),
    ):
        fig = go.Figure()
        for label, c in curves.items():
            d = c[name]
            fig.add_trace(
                go.Scatter(
                    x=d["x"],
                    y=d["eff"],
                    error_y=dict(type="data", array=d["err"]),
                    mode="markers+lines",
                    name=label,
                )
            )
        fig.update_layout(
            title=title,
            xaxis_title=axis,
            yaxis_title="efficiency",
            yaxis_range=[0, 1.05],
            showlegend=len(curves) > 1,
        )
        if name == "pt":
            fig.update_xaxes(type="log")
        figs[f"efficiency_vs_{name}"] = fig
    return figs
