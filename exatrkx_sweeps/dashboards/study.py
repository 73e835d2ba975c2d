"""Plotly figures of a study: Optuna's history, importances, parallel coordinates and
Pareto front (what the study's parent run shows in MLflow)."""

from __future__ import annotations

import warnings
from typing import Any

import optuna.visualization as vis
from optuna.trial import TrialState


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
