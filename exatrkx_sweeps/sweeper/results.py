"""What a study found: the results file and the summary table (its figures are in
:mod:`exatrkx_sweeps.dashboards.study`).

``optuna_results.yaml`` in the sweep directory holds the study's name and storage, the
count of trials per state, and the best trial (one objective) or the Pareto front (several
objectives), each with its parameters, objective values and MLflow run id.
``trials.csv`` holds every trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from optuna.trial import TrialState

from ..redaction import redact
from .runner import REASON


def _retried(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counts(study) -> dict[str, int]:
    """Trials per state; a failed trial that was queued again counts as its retry."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    out: dict[str, int] = {}
    for t in trials:
        if t.number in retried:
            continue
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _trial_record(t, metrics: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "number": t.number,
        "params": dict(t.params),
        "values": dict(zip(metrics, t.values, strict=True)) if t.values else None,
    }
    if "mlflow_run_id" in t.user_attrs:
        rec["mlflow_run_id"] = t.user_attrs["mlflow_run_id"]
    return rec


def best(study) -> list:
    """The best trial (one objective) or the Pareto-optimal trials (several)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: t.number)


def is_scan(study) -> bool:
    return study.user_attrs.get("kind") == "scan"


def summary(study, metrics: list[str], storage: str | None) -> dict[str, Any]:
    """The results file's content: a scan lists every finished point, a search its best
    trial (one objective) or Pareto front (several)."""
    out: dict[str, Any] = {
        "study_name": study.study_name,
        "kind": "scan" if is_scan(study) else "search",
        "storage": redact(str(storage or "default SQLite")),
        "n_trials": counts(study),
    }
    if is_scan(study):
        out["metrics"] = list(metrics)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        out["points"] = [_trial_record(t, metrics) for t in sorted(done, key=lambda t: t.number)]
        return out
    out["objectives"] = dict(zip(metrics, [d.name.lower() for d in study.directions], strict=True))
    front = best(study)
    key = "best_trial" if len(study.directions) == 1 else "pareto_front"
    records = [_trial_record(t, metrics) for t in front]
    out[key] = (records[0] if records else None) if key == "best_trial" else records
    return out


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(study, metrics: list[str]) -> str:
    """Every trial: number, state, parameters, objective values (a search's best or
    Pareto-optimal ones marked *)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    front = set() if is_scan(study) else {t.number for t in best(study)}
    keys = sorted({k for t in trials for k in t.params})
    head = ["trial", "state", *keys, *metrics]
    rows = []
    for t in trials:
        if t.state.name == "WAITING":
            continue
        state = t.state.name + (" (retried)" if t.number in retried else "")
        vals = [f"{v:.4g}" for v in t.values] if t.values else [""] * len(metrics)
        note = "" if t.state.name != "FAIL" else t.user_attrs.get(REASON, "")[:60]
        row = [f"{t.number}{'*' if t.number in front else ''}", state]
        row += [_short(t.params.get(k, "")) for k in keys] + vals
        rows.append((row, note))
    widths = [max(len(h), *(len(r[i]) for r, _ in rows)) if rows else len(h) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    lines = [fmt(head), fmt(["-" * w for w in widths])]
    lines += [fmt(r) + (f"  {n}" if n else "") for r, n in rows]
    if is_scan(study):
        tag = "a scan: every point once (no best trial)"
    else:
        tag = "* best trial" if len(study.directions) == 1 else "* on the Pareto front"
    return "\n".join([*lines, tag])


def write(study, metrics: list[str], storage: str | None, sweep_dir: str | Path) -> Path:
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "optuna_results.yaml"
    path.write_text(yaml.safe_dump(summary(study, metrics, storage), sort_keys=False))
    try:
        study.trials_dataframe().to_csv(d / "trials.csv", index=False)
    except Exception:
        pass
    return path
