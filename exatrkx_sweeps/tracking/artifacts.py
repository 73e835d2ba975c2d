"""What a finished pipeline run leaves in MLflow besides its params: metrics, tags and
artifacts (resolved config, overrides, metrics JSON, the summary table, the binned
efficiency against pT and eta as ``efficiency.json`` and as a page of Plotly figures,
``plots/efficiency.html``, that draws offline)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import torch
import yaml
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from ..dashboards import page
from ..dashboards.run import efficiency_curves, efficiency_figures
from ..export.bundle import INDEX, load_bundle, networks
from ..export.formats import example_inputs, quiet
from ..redaction import redact_all
from ..report import RunReport
from .run import Run


def log_report(run: Run, report: RunReport, cfg: Mapping, overrides: list[str]) -> None:
    run.log_metrics(report.metrics)
    run.set_tags(
        {
            "device": report.info.get("device"),
            "graph_backend": report.info.get("graph_backend"),
            "tracks_backend": report.info.get("tracks_backend"),
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


def log_models(run: Run, models: Path) -> None:
    """The run's trained stages: their files as the artifacts' ``models/`` (what
    ``python -m exatrkx_sweeps.export RUN_ID`` reads), and each network as an MLflow
    model (PyTorch flavour, saved by torch.export, with its signature and an input
    example) whose source is this run, so the UI lists it and ``mlflow.pytorch.load_model``
    gets it back."""
    if not (models / INDEX).is_file():
        return
    run.client.log_artifacts(run.run_id, str(models), "models")
    experiment = run.client.get_run(run.run_id).info.experiment_id
    for name, (net, saved) in networks(load_bundle(models)).items():
        inputs = saved.stage.network_inputs(saved.settings)
        example = example_inputs(inputs, nodes=13, edges=29)
        with torch.no_grad():
            out = net(*example)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(i.dtype), _shape(i.shape), i.name) for i in inputs]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *out.shape[1:]), "output")]),
        )
        model = run.client.create_logged_model(experiment, name=name, source_run_id=run.run_id)
        arrays = tuple(t.numpy() for t in example)
        with quiet("mlflow"):
            mlflow.set_tracking_uri(run.uri)  # where log_model writes
            mlflow.pytorch.log_model(
                net,
                name=name,
                signature=signature,
                input_example=arrays[0] if len(arrays) == 1 else arrays,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                model_id=model.model_id,
            )


def _shape(shape: tuple) -> tuple[int, ...]:
    return tuple(-1 if isinstance(d, str) else int(d) for d in shape)
