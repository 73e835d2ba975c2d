"""The study app end to end: python -m exatrkx_sweeps [-m] ..., logged to real MLflow stores."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "outputs", "multirun")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("app_cache")


def _app(args, env_extra, cwd, timeout=600):
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "exatrkx_sweeps", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_multirun(client: MlflowClient, experiment: str = "exatrkx"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2, [(r.info.status, r.data.tags.get("error")) for r in runs]
    assert sorted(r.data.params["gnn.iterations"] for r in children) == ["2", "3"]
    # runs are named after what they change, the parent after the grid; where a run is
    # logged and cached is not a param (it would be an axis of MLflow's comparisons)
    assert parent.info.run_name == "grid gnn.iterations=2,3"
    names = sorted(r.info.run_name for r in children)
    assert names == ["trial 0: gnn.iterations=2", "trial 1: gnn.iterations=3"]
    for r in children:
        assert not [k for k in r.data.params if k.startswith(("tracking.", "cache.", "study"))]
    # a command-line grid is an Optuna study: children are tagged with its name and trial numbers
    assert sorted(r.data.tags["trial"] for r in children) == ["0", "1"]
    assert {r.data.tags["study"] for r in children} == {parent.data.tags["study"]}
    assert all(r.data.tags["optuna.state"] == "COMPLETE" for r in children)
    for r in children:
        assert r.info.status == "FINISHED"
        m = r.data.metrics
        for key in (
            "eff_tech_pt0.5",
            "eff_phys_pt0.1",
            "purity",
            "trackml_score",
            "edge_eff_filter",
            "edges_per_event_embedding",
            "time_infer_gnn_s",
            "mem_peak_train_gnn_mb",
        ):
            assert key in m, key
        assert 0 < m["eff_tech_pt0.5"] <= 1
        assert r.data.tags["git_commit"] or True
        assert "cache.embedding" in r.data.tags and "torch" in r.data.tags
        # the backends that ran: on CPU, auto is the KD-tree and scipy
        assert (r.data.tags["graph_backend"], r.data.tags["tracks_backend"]) == ("kdtree", "scipy")
        history = client.get_metric_history(r.info.run_id, "gnn/loss")
        assert len(history) >= 2 and history[-1].step > history[0].step
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "overrides.yaml", "metrics.json", "efficiency.json", "plots"} <= arts
        plots = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
        assert plots == {"plots/efficiency.html"}  # both figures on one offline page
    # the second job reused everything upstream of the GNN
    second = max(children, key=lambda r: r.info.start_time)
    assert second.data.tags["cache.embedding"] == "True" and second.data.tags["cache.gnn"] == "False"
    assert parent.info.status == "FINISHED"


def test_multirun_against_mlflow_server(mlflow_server, tmp_path, shared_cache):
    r = _app(
        [
            "-m",
            *TINY,
            "gnn.iterations=2,3",
            f"tracking.uri={mlflow_server}",
            f"cache.dir={shared_cache}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        {},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _check_multirun(MlflowClient(tracking_uri=mlflow_server))


def test_multirun_default_sqlite_store(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = _app(
        [
            "-m",
            *TINY,
            "gnn.iterations=2,3",
            f"cache.dir={tmp_path / 'own_cache'}",
            "tracking.system_metrics=true",
            "tracking.system_metrics_interval=1",
        ],
        {"EXATRKX_MLFLOW_DB": str(db)},
        work,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert db.exists()  # at the absolute path, not in Hydra's job directory
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for run in client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id]):
        if run.data.tags.get("role") != "parent":  # MLflow's system metrics, sampled each second
            cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
            assert len(cpu) >= 2 and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
            assert "system/system_memory_usage_megabytes" in run.data.metrics
    assert "mlflow ui --backend-store-uri sqlite:///" in r.stdout
    assert "efficiency pT > 0.5 GeV" in r.stdout
    # stderr is not a terminal: progress as a few plain lines, no bar redrawn with \r
    assert "\r" not in r.stderr and "train gnn: " in r.stdout
    # and each job's Hydra log file holds its progress and summary
    logs = sorted(work.glob("multirun/*/*/*/__main__.log"))
    assert len(logs) == 2 and all("efficiency pT > 0.5 GeV" in f.read_text() for f in logs)
    _check_multirun(MlflowClient(tracking_uri=f"sqlite:///{db}"))


def test_train_on_simulation_evaluate_on_trackml_directory(tmp_path, shared_cache):
    from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_dataset

    events = tmp_path / "real_like"
    simulate_dataset(events, 2, SimulationConfig(mu=4), seed=12345, first_event=21000)
    db = tmp_path / "m.db"
    r = _app(
        [
            *TINY,
            f"cache.dir={shared_cache}",
            "eval.data=trackml",
            f"eval.data.path={events}",
            "eval.data.pt_cut=0.5",
            "eval.data.noise_fraction=0.0",
        ],
        {"EXATRKX_MLFLOW_DB": str(db)},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id])
    assert run.data.tags["train_data"] == "sim_quick" and run.data.tags["test_data"] == "trackml"
    assert run.data.params["eval.data.path"] == str(events)
    assert run.data.metrics["eff_tech_pt0.5"] > 0.2


@pytest.mark.parametrize(
    "override, needle",
    [
        ("gnn.iterations=0", "gnn.iterations=0: must be an integer >= 1"),
        ("filter.cut=1.5", "filter.cut=1.5: must be a number >= 0 and <= 1"),
        ("embedding.radius=-1", "embedding.radius=-1: must be a number > 0"),
        ("train.precision=8", "train.precision='8': must be one of auto, 32, bf16, 16-mixed"),
        ("augment.reflect=[w]", "augment.reflect"),
        ("tracking.uri=http://127.0.0.1:9", "no MLflow server answers"),
    ],
)
def test_bad_override_one_line_no_run(tmp_path, override, needle):
    db = tmp_path / "m.db"
    r = _app(
        [*TINY, override, f"cache.dir={tmp_path / 'c'}"],
        {"EXATRKX_MLFLOW_DB": str(db)},
        tmp_path,
        timeout=120,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    if db.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name("exatrkx")
        assert exp is None or not client.search_runs([exp.experiment_id])


def test_help_shows_examples_studies_and_groups(tmp_path):
    """--help is the project's page, not Hydra's generic one: examples, every study file
    (the shipped ones and the user's ./studies/), the config groups, completion."""
    from exatrkx_sweeps.sweeper import study

    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "my_scan.yaml").write_text("params: {gnn.iterations: '4,6'}\n")
    r = _app(["--help"], {}, tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "powered by Hydra" not in out
    assert "python -m exatrkx_sweeps -m gnn.iterations=4,6,8" in out
    (listed,) = [out.splitlines()[i + 1] for i, ln in enumerate(out.splitlines()) if "== Study files" in ln]
    assert {n.strip() for n in listed.split(",")} == {*study.available(), "my_scan"}
    assert "gnn: attention, common, gcn, interaction" in out and "data: sim_pu200" in out
    assert "exatrkx-sweeps -sc install=bash" in out


def test_bash_completion_completes_study_names(tmp_path):
    """What `eval "$(exatrkx-sweeps -sc install=bash)"` asks on <TAB>: keys come from
    Hydra, study file names (shipped and ./studies/) from the app."""
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "gnn_mine.yaml").write_text("params: {gnn.iterations: '4,6'}\n")
    r = _app(["-sc", "query=bash"], {"COMP_LINE": "exatrkx-sweeps -m study=gnn"}, tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"study=gnn_architecture", "study=gnn_depth", "study=gnn_mine"}
    r = _app(["-sc", "query=bash"], {"COMP_LINE": "exatrkx-sweeps gnn.iterat"}, tmp_path, timeout=120)
    assert r.stdout.split() == ["gnn.iterations="]  # everything else is Hydra's completion


def test_wheel_in_fresh_venv_runs_from_any_directory(tmp_path):
    """The configs ship inside the wheel: a fresh environment composes the default config."""
    wheels = tmp_path / "wheels"
    # from a copy: setuptools reuses an in-tree build/ folder, stale files included
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The dependencies come from the interpreter running the tests. Not through
    # --system-site-packages: from inside a virtualenv that reaches the base
    # interpreter's packages, not the virtualenv's. Listed directories' own .pth files
    # (an editable install of the checkout) are not processed, so the wheel's copy is
    # the only exatrkx_sweeps the fresh environment sees.
    ours = [d for d in sys.path if d.endswith(("site-packages", "dist-packages")) and Path(d).is_dir()]
    (site_dir,) = (venv / "lib").glob("python*/site-packages")
    (site_dir / "test-dependencies.pth").write_text("\n".join(ours) + "\n")
    wheel = next(wheels.glob("*.whl"))
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    where = subprocess.run(
        [str(py), "-c", "import exatrkx_sweeps; print(exatrkx_sweeps.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert str(venv) in where.stdout  # the wheel's copy, not the checkout's
    shipped = subprocess.run(
        [
            str(py),
            "-c",
            "import hydra_plugins.exatrkx_optuna_sweeper.optuna_sweeper as p; "
            "from exatrkx_sweeps.sweeper import study; print(p.__file__, study.available())",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert str(venv) in shipped.stdout and "gnn_depth" in shipped.stdout, shipped.stderr[-2000:]
    r = subprocess.run(
        [str(py), "-m", "exatrkx_sweeps", "--cfg", "job", "gnn.iterations=7"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "iterations: 7" in r.stdout and "sim_quick" in r.stdout


def test_failing_job_is_marked_failed_and_the_others_run(tmp_path):
    """A job whose test events turn out malformed (found when they are read, after its
    run began) is FAILED with the file's one-line error; the other job runs."""
    import pandas as pd

    from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_dataset

    good, bad = tmp_path / "good", tmp_path / "bad"
    for d in (good, bad):
        simulate_dataset(d, 1, SimulationConfig(mu=4), seed=1, first_event=30000)
    hits = next(bad.glob("event*-hits.csv*"))
    pd.read_csv(hits).drop(columns=["z"]).to_csv(hits, index=False)
    db = tmp_path / "m.db"
    r = _app(
        [
            "-m",
            *TINY,
            "gnn.epochs=2",
            "data@eval.data=trackml",
            f"eval.data.path={bad},{good}",
            "eval.data.pt_cut=0.5",
            "eval.data.noise_fraction=0.0",
            f"cache.dir={tmp_path / 'c'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        {"EXATRKX_MLFLOW_DB": str(db)},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]  # one trial completed
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id])
    children = {r.data.params["eval.data.path"]: r for r in runs if r.data.tags.get("role") != "parent"}
    failed = children[str(bad)]
    assert failed.info.status == "FAILED" and "hits" in failed.data.tags["error"], failed.data.tags
    assert "z" in failed.data.tags["status_reason"]
    assert (
        children[str(good)].info.status == "FINISHED" and "eff_tech_pt0.5" in children[str(good)].data.metrics
    )


def test_two_trial_study_of_the_real_pipeline(tmp_path):
    """study=FILE on the tiny configuration: trials report to Optuna through the pipeline's
    callbacks, store their metrics and MLflow run id, and MLflow children align with trials."""
    import optuna
    import yaml

    from exatrkx_sweeps.sweeper.storage import open_storage

    study_file = tmp_path / "tiny_study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "params": {"gnn.lr": "0.005,0.002"},  # (TINY fixes gnn.hidden: the command line wins)
                "objectives": {"eff_tech_pt0.5": "maximize"},
                "pruner": {
                    "name": "median",
                    "n_startup_trials": 1,
                    "intermediate": ["gnn/val_edge_eff@epoch"],
                },
            }
        )
    )
    db, storage = tmp_path / "m.db", tmp_path / "optuna.db"
    args = [
        "-m",
        f"study={study_file}",
        *TINY,
        f"cache.dir={tmp_path / 'c'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={storage}",
    ]
    r = _app(args, {"EXATRKX_MLFLOW_DB": str(db)}, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = optuna.load_study(study_name="tiny_study", storage=open_storage(str(storage)))
    assert len(s.trials) == 2 and {t.params["gnn.lr"] for t in s.trials} == {0.005, 0.002}
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for t in s.trials:
        assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert (
            sorted(t.intermediate_values) == list(range(len(t.intermediate_values))) and t.intermediate_values
        )
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["study"] == "tiny_study" and run.data.tags["trial"] == str(t.number)
        assert float(run.data.params["gnn.lr"]) == t.params["gnn.lr"]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == run.data.metrics["eff_tech_pt0.5"] > 0.3  # it reconstructs tracks
            assert 0 < t.user_attrs["purity"] <= 1 and "time_infer_total_s" in t.user_attrs
            assert run.info.status == "FINISHED"
        else:
            assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
    parent = client.get_run(s.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and "best_eff_tech_pt0.5" in parent.data.metrics
    results = yaml.safe_load((tmp_path / "sweep" / "optuna_results.yaml").read_text())
    assert results["study_name"] == "tiny_study"
    # the second trial changed only gnn.*: data, embedding and filter came from the stage cache
    second = client.get_run(s.trials[1].user_attrs["mlflow_run_id"])
    assert second.data.tags["cache.embedding"] == "True"
    # rerunning the same command runs nothing more
    r = _app(args, {"EXATRKX_MLFLOW_DB": str(db)}, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(optuna.load_study(study_name="tiny_study", storage=open_storage(str(storage))).trials) == 2


def test_basic_sweeper_multirun_gets_its_parent_from_the_callback(tmp_path, shared_cache):
    """Under Hydra's basic sweeper the tracking callback creates the parent run; under the
    Optuna sweeper (which declares owns_parent_run) it leaves that to the study."""
    from hydra import compose, initialize_config_module

    from exatrkx_sweeps.tracking.callback import _sweeper_owns_parent

    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        assert _sweeper_owns_parent(compose("config", return_hydra_config=True))
        basic = compose("config", overrides=["hydra/sweeper=basic"], return_hydra_config=True)
        assert not _sweeper_owns_parent(basic)
    db = tmp_path / "m.db"
    r = _app(
        [
            "-m",
            *TINY,
            "hydra/sweeper=basic",
            "gnn.epochs=2",
            "gnn.iterations=2,3",
            f"cache.dir={shared_cache}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        {"EXATRKX_MLFLOW_DB": str(db)},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "parent"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "grid gnn.iterations=2,3"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["gnn.iterations"] for r in children) == ["2", "3"]
    assert all(r.info.status == "FINISHED" and "eff_tech_pt0.5" in r.data.metrics for r in children)
