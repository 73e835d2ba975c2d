"""A study's dashboard: its definition, its figures, its page.

A definition (``dashboards/<study>.yaml``: yours in ``./dashboards/``, or a shipped one)
names the page's title, the study and its figures in order; a study without one gets
the figures every sweep has (``sweep``, ``pareto`` with several objectives,
``efficiency``). The page opens with what the study is (description, kind, objectives,
data, runs) and how to run it again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import yaml

from ..errors import one_line
from ..redaction import redact
from ..tracking.store import client
from . import page
from .run import efficiency_figures
from .runs import DashboardError, StudyRuns, load
from .study import (
    Sections,
    memory_figures,
    noise_figures,
    parallel_figures,
    pareto_figures,
    scaling_figures,
    sweep_figures,
)

PACKAGED = Path(__file__).parent / "definitions"
MAX_EFFICIENCY_RUNS = 12  # curves per efficiency figure
# MLflow draws a progress bar for every artifact it downloads; a page needs a dozen
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def efficiency_sections(sr: StudyRuns) -> Sections:
    """Each run's efficiency against pT and eta (its efficiency.json), overlaid."""
    curves = {}
    swept = sr.swept()
    with tempfile.TemporaryDirectory() as tmp:
        for _, row in sr.runs.head(MAX_EFFICIENCY_RUNS).iterrows():
            label = ", ".join(f"{p}={row[f'params.{p}']}" for p in swept) or row.run_id[:8]
            try:
                path = client(sr.uri).download_artifacts(row.run_id, "efficiency.json", tmp)
            except Exception:  # a run from before efficiency.json was logged
                continue
            curves[label] = json.loads(Path(path).read_text())
    return [(fig.layout.title.text, fig) for fig in efficiency_figures(curves).values()]


FIGURES: dict[str, Callable[[StudyRuns], Sections]] = {
    "sweep": sweep_figures,
    "parallel": parallel_figures,
    "pareto": pareto_figures,
    "efficiency": efficiency_sections,
    "noise": noise_figures,
    "memory": memory_figures,
    "scaling": scaling_figures,
}


@dataclass
class Definition:
    study: str
    title: str
    figures: list[str]
    description: str = ""
    path: Path | None = None


def definition(study: str, cwd: Path | None = None) -> Definition:
    """The dashboard definition of ``study``: ./dashboards/STUDY.yaml, a shipped one, or
    the default page of a sweep."""
    for d in ((cwd or Path.cwd()) / "dashboards", PACKAGED):
        path = d / f"{study}.yaml"
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise DashboardError(f"{path}: not valid YAML ({one_line(exc)}).") from None
            if not isinstance(raw, dict):
                raise DashboardError(f"{path}: a dashboard definition is a mapping (title, study, figures).")
            figures = list(raw.get("figures") or [])
            bad = [f for f in figures if f not in FIGURES]
            if bad:
                raise DashboardError(
                    f"{path}: figures {', '.join(map(str, bad))} unknown; one of {', '.join(FIGURES)}."
                )
            return Definition(
                str(raw.get("study") or study), str(raw.get("title") or study), figures,
                str(raw.get("description") or ""), path,
            )  # fmt: skip
    return Definition(study, study, ["sweep", "pareto", "efficiency"])


def _values(sr: StudyRuns, param: str) -> str:
    col = f"params.{param}"
    if col not in sr.runs:
        return "-"
    vals = sorted(sr.runs[col].astype(str).unique(), key=lambda v: (len(v), v))
    return ", ".join(vals)


def intro(sr: StudyRuns, d: Definition) -> str:
    """What the study is and how its runs were made, as HTML."""
    desc = d.description or sr.parent.get("description", "")
    if sr.kind == "scan":
        kind, label = "scan: every point once, read as curves", "metrics"
        objectives = ", ".join(m for m, _ in sr.objectives)
    else:
        kind, label = "search: best trial / Pareto front", "objectives"
        objectives = ", ".join(f"{m} ({k})" for m, k in sr.objectives)
    rows = [
        ("study", sr.study),
        ("kind", kind),
        (label, objectives),
        ("runs", f"{len(sr.runs)} finished" + (f", {sr.n_failed} failed or pruned" if sr.n_failed else "")),
        ("tracking", f"{redact(sr.uri)}, experiment {sr.experiment}"),
        ("swept", "; ".join(f"{p}: {_values(sr, p)}" for p in sr.swept()) or "-"),
    ]
    for key in (
        "data.name",
        "data.simulation.mu",
        "data.pt_cut",
        "data.noise_fraction",
        "data.n_train",
        "data.n_test",
    ):
        rows.append((key, _values(sr, key)))
    metrics = [m for m, _ in sr.objectives]
    table_rows = []
    swept_values = [sr.values(p) for p in sr.swept()]  # numbers sort as numbers
    order = sorted(sr.runs.index, key=lambda i: tuple(v[i] for v in swept_values))
    runs = sr.runs.loc[order]
    for _, r in runs.iterrows():
        cells = [r.run_id[:8]] + [r.get(f"params.{p}", "") for p in sr.swept()]
        cells += [f"{r.get(f'metrics.{m}', float('nan')):.4g}" for m in metrics]
        table_rows.append(cells)
    html = [f"<p>{escape(desc)}</p>" if desc else ""]
    html.append(page.table(rows))
    html.append(f"<p class='note'>Run it again: <code>python -m exatrkx_sweeps -m study={sr.study}</code>; "
                f"this page: <code>python -m exatrkx_sweeps.dashboards {sr.study}</code>.</p>")  # fmt: skip
    html.append(page.table(table_rows, ["run", *sr.swept(), *metrics]))
    return "\n".join(html)


def build(
    study: str, tracking_uri: str | None = None, experiment: str = "exatrkx", cwd: Path | None = None
) -> tuple[str, str, Sections]:
    """Title, intro and figures of ``study``'s dashboard (DashboardError if it has no runs)."""
    d = definition(study, cwd)
    sr = load(d.study, tracking_uri, experiment)
    sections: Sections = []
    for kind in d.figures:
        sections += FIGURES[kind](sr)
    if not sections:
        raise DashboardError(f"study {study!r}: its runs give none of the figures {', '.join(d.figures)}.")
    return d.title, intro(sr, d), sections


def write(
    study: str,
    out: str | Path,
    tracking_uri: str | None = None,
    experiment: str = "exatrkx",
    plotlyjs: str = "embed",
) -> Path:
    title, text, sections = build(study, tracking_uri, experiment)
    return page.write(Path(out) / f"{study}.html", title, text, sections, plotlyjs)
