"""What a finished pipeline run leaves in MLflow besides its params: metrics, tags and
artifacts (resolved config, overrides, metrics JSON, the summary table, the binned
efficiency against pT and eta as ``efficiency.json`` and as a page of Plotly figures,
``plots/efficiency.html``, that draws offline)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..dashboards import page
from ..dashboards.run import efficiency_curves, efficiency_figures
from ..redaction import redact_all
from ..report import RunReport
from .run import Run


def log_report(run: Run, report: RunReport, cfg: Mapping, overrides: list[str]) -> None:
    run.log_metrics(report.metrics)
    run.set_tags(
        {
            "device": report.info.get("device"),
            "train_data": report.info.get("train_data"),
            "test_data": report.info.get("test_data"),
            "cache_hits": ",".join(k for k, v in report.cache_hits.items() if v) or "none",
            **{f"cache.{k}": v for k, v in report.cache_hits.items()},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(redact_all(dict(cfg)), sort_keys=False))
        (tmp / "overrides.yaml").write_text(yaml.safe_dump(redact_all(list(overrides))))
        (tmp / "metrics.json").write_text(json.dumps(report.metrics, indent=2, sort_keys=True))
        (tmp / "summary.txt").write_text(report.summary_table() + "\n")
        curves = efficiency_curves(report.particles)
        (tmp / "efficiency.json").write_text(json.dumps(curves))
        for p in tmp.iterdir():
            run.log_file(p)
        figs = efficiency_figures({"this run": curves})
        if figs:
            intro = f"<p class='note'>MLflow run {run.run_id}: technical efficiency on the test events.</p>"
            sections = [(fig.layout.title.text, fig) for fig in figs.values()]
            path = page.write(tmp / "plots" / "efficiency.html", "Efficiency", intro, sections)
            run.log_file(path, "plots")
