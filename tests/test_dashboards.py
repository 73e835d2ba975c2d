"""Dashboards, from a real study: a tiny noise scan of the pipeline logged to MLflow, its
page written by the CLI, and every kind of page this project writes (a study's
dashboard, a run's plots, a study parent's page) opened in headless Chromium with the
network cut off: every figure must draw its traces, with no JavaScript error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from exatrkx_sweeps.sweeper.storage import open_storage

from .helpers import TINY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args, cwd, env, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def noise_scan(tmp_path_factory):
    """A three-point noise scan of the tiny pipeline (one training, three tests)."""
    root = tmp_path_factory.mktemp("noise_scan")
    (root / "tiny_noise.yaml").write_text(
        yaml.safe_dump(
            {
                "description": "tiny noise scan",
                "kind": "scan",
                "params": {"eval.noise_fraction": "0,0.5,1"},
                "objectives": ["eff_tech_pt0.5", "purity"],
            }
        )
    )
    (root / "dashboards").mkdir()  # the user's own dashboard definition of this study
    (root / "dashboards" / "tiny_noise.yaml").write_text(
        yaml.safe_dump({"title": "Tiny noise scan", "figures": ["noise", "sweep", "efficiency"]})
    )
    env = {
        "EXATRKX_MLFLOW_DB": str(root / "mlflow.db"),
        "EXATRKX_OPTUNA_DB": str(root / "optuna.db"),
        "EXATRKX_CACHE": str(root / "cache"),
    }
    r = _run(
        [
            "exatrkx_sweeps",
            "-m",
            "study=tiny_noise.yaml",
            *TINY,
            "gnn.epochs=10",
            f"hydra.sweep.dir={root / 'sweep'}",
        ],
        root,
        env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root, env, r.stdout


def test_a_scan_reads_as_curves_and_says_where_to_look(noise_scan):
    root, env, out = noise_scan
    results = yaml.safe_load((root / "sweep" / "optuna_results.yaml").read_text())
    assert results["kind"] == "scan" and "best_trial" not in results
    assert sorted(p["params"]["eval.noise_fraction"] for p in results["points"]) == [0, 0.5, 1]
    assert "a scan: every point once (no best trial)" in out and "*" not in out.split("trial  state")[1][:400]
    s = optuna.load_study(study_name="tiny_noise", storage=open_storage(env["EXATRKX_OPTUNA_DB"]))
    assert s.metric_names == ["eff_tech_pt0.5", "purity"]  # Optuna's own dashboard names its axes
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in out
    assert "/#/experiments/1/runs?workflowType=machine_learning&searchFilter=tags.study" in out
    assert f"python -m exatrkx_sweeps.dashboards tiny_noise --tracking-uri {uri}" in out
    assert f"optuna-dashboard sqlite:///{root / 'optuna.db'}" in out


def test_dashboard_cli_writes_an_offline_page(noise_scan):
    root, env, _ = noise_scan
    r = _run(["exatrkx_sweeps.dashboards", "tiny_noise", "--out", "html"], root, env)
    assert r.returncode == 0, r.stderr
    page = root / "html" / "tiny_noise.html"
    text = page.read_text()
    assert "Tiny noise scan" in text and "Relative technical efficiency against noise" in text
    assert not re.search(r"<script[^>]*\ssrc=[\"']?https?:", text)  # nothing loaded from the network
    beside = _run(
        ["exatrkx_sweeps.dashboards", "tiny_noise", "--out", "beside", "--plotlyjs", "beside"], root, env
    )
    assert beside.returncode == 0 and (root / "beside" / "plotly.min.js").is_file()
    assert '<script src="plotly.min.js">' in (root / "beside" / "tiny_noise.html").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny_noise", "--tracking-uri", "/nonexistent/m.db"], "no MLflow store at /nonexistent/m.db"),
        (["no_such_study"], "study 'no_such_study' has no runs in experiment 'exatrkx'"),
        (["tiny_noise", "--experiment", "nope"], "no experiment 'nope' in sqlite:///"),
    ],
)
def test_dashboard_errors_are_one_line(noise_scan, args, message):
    root, env, _ = noise_scan
    r = _run(["exatrkx_sweeps.dashboards", *args], root, env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr
    assert not Path("/nonexistent/m.db").exists()


def test_study_without_multirun_warns(noise_scan):
    root, env, _ = noise_scan
    r = _run(["exatrkx_sweeps", "study=gnn_depth", *TINY, "gnn.epochs=10"], root, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: study=gnn_depth runs a study only with -m" in r.stderr


def _pages(root: Path, env: dict) -> dict[str, Path]:
    """One page of each kind: the CLI's dashboard, a run's plots, the study parent's page."""
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    s = optuna.load_study(study_name="tiny_noise", storage=open_storage(env["EXATRKX_OPTUNA_DB"]))
    run_id = s.trials[0].user_attrs["mlflow_run_id"]
    parent_id = s.user_attrs["mlflow_parent_run_id"]
    got = root / "downloaded"
    got.mkdir(exist_ok=True)
    if not (root / "html" / "tiny_noise.html").exists():
        assert _run(["exatrkx_sweeps.dashboards", "tiny_noise", "--out", "html"], root, env).returncode == 0
    return {
        "dashboard": root / "html" / "tiny_noise.html",
        "run": Path(client.download_artifacts(run_id, "plots/efficiency.html", str(got))),
        "parent": Path(client.download_artifacts(parent_id, "dashboard.html", str(got))),
    }


def test_every_page_draws_offline_in_chromium(noise_scan, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed (.ci/run installs Debian's chromium)"
    root, env, _ = noise_scan
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            for kind, path in _pages(root, env).items():
                context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
                page = context.new_page()
                errors, remote = [], []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
                page.on("request", lambda r, remote=remote: r.url.startswith("file:") or remote.append(r.url))
                page.goto(path.as_uri())
                page.wait_for_function(
                    "() => { const g = [...document.querySelectorAll('.js-plotly-plot')];"
                    " return g.length > 0 && g.every(d => d._fullLayout); }",
                    timeout=60_000,
                )
                drawn = page.evaluate(
                    "() => [...document.querySelectorAll('.js-plotly-plot')].map(d =>"
                    " [d.id, d._fullData.length, d.querySelectorAll('g.trace, .parcoords').length])"
                )
                shot = tmp_path / f"{kind}.png"
                page.screenshot(path=str(shot), full_page=True)
                context.close()
                assert drawn and all(n > 0 and traces > 0 for _, n, traces in drawn), (kind, drawn)
                assert not errors and not remote, (kind, errors, remote)
                assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_scaling_exponent_and_pareto_front():
    import numpy as np

    from exatrkx_sweeps.dashboards.study import fit_exponent, pareto_front

    hits = np.array([3e3, 1e4, 3e4, 1e5])
    assert fit_exponent(hits, 2.5 * hits**1.5) == pytest.approx(1.5)
    assert fit_exponent(hits, np.array([1.0, np.nan, 4.0, 8.0])) == pytest.approx(
        np.polyfit(np.log(hits[[0, 2, 3]]), np.log([1.0, 4.0, 8.0]), 1)[0]
    )
    # maximise efficiency, minimise time: (0.9, 2) is dominated by (0.95, 1)
    values = np.array([[0.95, 1.0], [0.9, 2.0], [0.99, 3.0], [0.8, 0.5]])
    assert pareto_front(values, [True, False]).tolist() == [True, False, True, True]
