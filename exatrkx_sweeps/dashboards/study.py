"""Figures of a study, from its runs (:class:`~.runs.StudyRuns`) or its Optuna study.

Each ``*_figures`` function returns ``[(heading, figure), ...]``, drawn from the runs'
metrics with their binomial errors (``<metric>_err``):

* :func:`sweep_figures`: each objective against each swept parameter (a line per value
  of the other swept parameters);
* :func:`parallel_figures`, :func:`pareto_figures`: searches;
* :func:`noise_figures`: efficiency relative to the same model's noise-free efficiency,
  and purity, against the re-added noise (the seed's noise-robustness scan);
* :func:`memory_figures`: peak GNN training memory and time relative to the baseline;
* :func:`scaling_figures`: time per stage and graph size against hits, log-log, with
  the fitted exponents;
* :func:`optuna_figures`: Optuna's history, importances, parallel coordinates, Pareto
  front (from the study storage: what a study's parent run shows).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import optuna.visualization as vis
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from .runs import StudyRuns

Sections = list[tuple[str, go.Figure]]

PT_CUTS = ("0.1", "0.5", "1")
# the seed's noise-robustness figures: relative efficiency with the nominal noise re-added
SEED_RELATIVE_EFF = {"all pT": 0.96, "pT > 0.5 GeV": 0.995}
# the seed's GNN training memory relative to the baseline (checkpointing, mixed precision, both)
SEED_MEMORY = {"checkpointing": 0.22, "mixed precision": 0.50, "both": 0.11}
INFER_STAGES = ("embedding", "graph", "filter", "gnn", "tracks")


def _err(sr: StudyRuns, metric: str) -> pd.Series:
    return sr.metric(f"{metric}_err")


def _groups(sr: StudyRuns, x: str) -> list[tuple[str, pd.Index]]:
    """Runs grouped by the values of the swept parameters other than ``x``."""
    others = [p for p in sr.swept() if p != x]
    if not others:
        return [("", sr.runs.index)]
    keys = sr.runs[[f"params.{p}" for p in others]].astype(str).agg(", ".join, axis=1)
    names = ", ".join(others)
    return [(f"{names} = {k}", idx) for k, idx in sr.runs.groupby(keys).groups.items()]


def _line(x: pd.Series, y: pd.Series, err: pd.Series, name: str) -> go.Scatter:
    order = np.argsort(x.to_numpy()) if x.dtype.kind in "if" else np.arange(len(x))
    return go.Scatter(
        x=x.to_numpy()[order],
        y=y.to_numpy()[order],
        error_y=dict(type="data", array=err.to_numpy()[order]),
        mode="markers+lines",
        name=name or y.name,
    )


def _metrics(sr: StudyRuns) -> list[str]:
    names = [m for m, _ in sr.objectives]
    for extra in ("eff_tech_pt0.5", "purity"):
        if extra not in names and f"metrics.{extra}" in sr.runs:
            names.append(extra)
    return names


def sweep_figures(sr: StudyRuns) -> Sections:
    out = []
    for x in sr.swept():
        xs = sr.values(x)
        for m in _metrics(sr):
            fig = go.Figure()
            for name, idx in _groups(sr, x):
                fig.add_trace(_line(xs[idx], sr.metric(m)[idx], _err(sr, m)[idx], name))
            fig.update_layout(xaxis_title=x, yaxis_title=m, showlegend=len(fig.data) > 1)
            out.append((f"{m} against {x}", fig))
    return out


def parallel_figures(sr: StudyRuns) -> Sections:
    dims = []
    for p in sr.swept():
        v = sr.values(p)
        if v.dtype.kind in "if":
            dims.append(dict(label=p, values=v))
        else:
            codes, labels = pd.factorize(v)
            dims.append(dict(label=p, values=codes, tickvals=list(range(len(labels))), ticktext=list(labels)))
    metrics = _metrics(sr)
    dims += [dict(label=m, values=sr.metric(m)) for m in metrics]
    color = sr.metric(metrics[0])
    fig = go.Figure(
        go.Parcoords(line=dict(color=color, colorscale="Viridis", showscale=True), dimensions=dims)
    )
    return [("Parallel coordinates", fig)]


def pareto_front(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """Mask of the rows of ``values`` (runs x objectives) that no other row dominates."""
    v = np.where(maximize, values, -values)
    front = np.ones(len(v), bool)
    for i in range(len(v)):
        better_eq = np.all(v >= v[i], axis=1) & np.any(v > v[i], axis=1)
        front[i] = not better_eq.any()
    return front


def pareto_figures(sr: StudyRuns) -> Sections:
    objectives = sr.objectives
    if len(objectives) < 2 or sr.kind == "scan":
        return []
    names = [m for m, _ in objectives]
    values = np.column_stack([sr.metric(m).to_numpy() for m in names])
    ok = np.all(np.isfinite(values), axis=1)
    front = np.zeros(len(values), bool)
    front[ok] = pareto_front(values[ok], [d == "maximize" for _, d in objectives])
    out = []
    for a, b in itertools.combinations(range(len(names)), 2):
        fig = go.Figure()
        for on, label in ((False, "trials"), (True, "Pareto front")):
            sel = ok & (front == on)
            fig.add_trace(
                go.Scatter(
                    x=values[sel, a],
                    y=values[sel, b],
                    mode="markers",
                    name=label,
                    marker=dict(size=10 if on else 7, color="crimson" if on else "steelblue"),
                    text=sr.runs.loc[sel, "run_id"],
                )
            )
        fig.update_layout(xaxis_title=names[a], yaxis_title=names[b])
        out.append((f"Pareto front: {names[a]} and {names[b]}", fig))
    return out


def relative_efficiency(sr: StudyRuns, cut: str, x: str = "eval.noise_fraction") -> pd.DataFrame:
    """Per run: technical efficiency above ``cut`` GeV divided by that of the run with the
    same other settings and ``x`` = 0, with the error of the ratio (independent errors
    added in quadrature: an upper bound, as both are measured on the same events)."""
    rows = []
    eff, err = sr.metric(f"eff_tech_pt{cut}"), _err(sr, f"eff_tech_pt{cut}")
    xs = sr.values(x)
    for name, idx in _groups(sr, x):
        base = [i for i in idx if xs[i] == 0]
        if not base:
            continue
        e0, s0 = eff[base[0]], err[base[0]]
        for i in idx:
            r = eff[i] / e0
            rows.append((name, xs[i], r, r * np.hypot(err[i] / eff[i], s0 / e0) if i != base[0] else 0.0))
    return pd.DataFrame(rows, columns=["group", "noise", "ratio", "err"])


def noise_figures(sr: StudyRuns) -> Sections:
    x = "eval.noise_fraction"
    if f"params.{x}" not in sr.runs:
        return []
    fig = go.Figure()
    for cut in PT_CUTS:
        rel = relative_efficiency(sr, cut, x)
        for group, d in rel.groupby("group", sort=False):
            label = f"pT > {cut} GeV" + (f" ({group})" if group else "")
            fig.add_trace(_line(d.noise, d.ratio, d.err, label))
    for label, level in SEED_RELATIVE_EFF.items():
        fig.add_hline(y=level, line_dash="dot", annotation_text=f"seed, {label}: {level:.1%}")
    fig.update_layout(
        xaxis_title="noise re-added to the test events (share of the nominal noise)",
        yaxis_title="technical efficiency / efficiency without noise",
    )
    pur = go.Figure()
    xs = sr.values(x)
    for name, idx in _groups(sr, x):
        pur.add_trace(_line(xs[idx], sr.metric("purity")[idx], _err(sr, "purity")[idx], name or "purity"))
    pur.update_layout(xaxis_title=fig.layout.xaxis.title.text, yaxis_title="track purity")
    return [("Relative technical efficiency against noise", fig), ("Track purity against noise", pur)]


def memory_figures(sr: StudyRuns) -> Sections:
    """Peak GNN training memory and time of each (checkpointing, precision) combination,
    relative to the run without either."""
    keys = ("train.checkpointing", "train.precision")
    if not all(f"params.{k}" in sr.runs for k in keys):
        return []
    label = sr.runs["params.train.checkpointing"].map({"True": "checkpointing", "False": "no checkpointing"})
    label = label + ", precision " + sr.runs["params.train.precision"].astype(str)
    base = sr.runs[
        (sr.runs["params.train.checkpointing"] == "False") & (sr.runs["params.train.precision"] == "32")
    ]
    fig = go.Figure()
    for metric, name in (
        ("fit_saved_mb_gnn", "memory saved for backward"),
        ("fit_time_s_gnn", "training time"),
    ):
        ref = base[f"metrics.{metric}"].iloc[0] if len(base) else np.nan
        fig.add_trace(go.Bar(x=label, y=sr.metric(metric) / ref, name=f"{name} / baseline"))
    for name, level in SEED_MEMORY.items():
        fig.add_hline(y=level, line_dash="dot", annotation_text=f"seed memory, {name}: {level:.0%}")
    fig.update_layout(barmode="group", yaxis_title="relative to no checkpointing, precision 32")
    eff = go.Figure(
        go.Bar(x=label, y=sr.metric("eff_tech_pt0.5"), error_y=dict(array=_err(sr, "eff_tech_pt0.5")))
    )
    eff.update_layout(yaxis_title="eff_tech_pt0.5", yaxis_range=[0, 1.02])
    return [("GNN training memory and time", fig), ("Physics of each combination", eff)]


def fit_exponent(x: np.ndarray, y: np.ndarray) -> float:
    """Slope of log(y) against log(x)."""
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")


def scaling_figures(sr: StudyRuns) -> Sections:
    hits = sr.metric("hits_per_event").to_numpy()
    order = np.argsort(hits)
    out = []
    for title, names, axis in (
        (
            "Inference time per event against hits",
            [f"time_infer_{s}_s" for s in INFER_STAGES] + ["time_infer_total_s"],
            "seconds per event",
        ),
        (
            "Graph size against hits",
            [f"edges_per_event_{s}" for s in ("embedding", "filter", "gnn")],
            "edges per event",
        ),
    ):
        fig = go.Figure()
        for name in names:
            y = sr.metric(name).to_numpy()
            if not np.isfinite(y).any():
                continue
            k = fit_exponent(hits, y)
            fig.add_trace(
                go.Scatter(x=hits[order], y=y[order], mode="markers+lines", name=f"{name} (exponent {k:.2f})")
            )
        fig.update_layout(xaxis_title="hits per event", yaxis_title=axis, xaxis_type="log", yaxis_type="log")
        out.append((title, fig))
    return out


def optuna_figures(study, metrics: list[str]) -> dict[str, Any]:
    """Optuna's Plotly figures: history, importances, parallel coordinates, Pareto front.
    A figure that needs more finished trials than there are is left out."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    out: dict[str, Any] = {}
    multi = len(study.directions) > 1
    targets = (
        [(m, (lambda t, i=i: t.values[i])) for i, m in enumerate(metrics)] if multi else [(metrics[0], None)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, target in targets:
            suffix = f"_{m}" if multi else ""
            plots = [
                ("optimization_history", vis.plot_optimization_history),
                ("parallel_coordinate", vis.plot_parallel_coordinate),
            ]
            if len(complete) >= 2 and any(t.params for t in complete):
                plots.append(("param_importances", vis.plot_param_importances))
            for name, plot in plots:
                try:
                    out[f"{name}{suffix}"] = plot(study, target=target, target_name=m)
                except Exception:  # e.g. importances of a parameter that never varied
                    pass
        if multi:
            try:
                out["pareto_front"] = vis.plot_pareto_front(study, target_names=metrics)
            except Exception:
                pass
    return out
