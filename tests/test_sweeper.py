"""The Optuna sweeper: search spaces, study files, storages, and real sweeps.

The sweep mechanics run the cheap task in ``tests/sweeper_app`` as real processes
against real storages (SQLite, journal file, PostgreSQL when a server can be started):
parallel workers, resume, failures, a SIGKILLed worker, pruning, MLflow records.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from exatrkx_sweeps.redaction import redact
from exatrkx_sweeps.sweeper import space, study
from exatrkx_sweeps.sweeper.bridge import Reporter
from exatrkx_sweeps.sweeper.runner import Outcome, Runner, judge
from exatrkx_sweeps.sweeper.storage import StorageError, open_storage, resolve

from .helpers import wait_until

APP = Path(__file__).parent / "sweeper_app" / "app.py"

# ------------------------------------------------------------------ space ----


def test_space_maps_override_syntax_to_distributions():
    params, fixed = space.parse(
        [
            "a=1,2,3",
            "b=choice(x,y)",
            "c=range(2,9,2)",
            "d=interval(0.1,0.3)",
            "e=tag(log,interval(0.01,0.2))",
            "f=tag(int,interval(1,5))",
            "g=0.5",
            "gnn=interaction,gcn",
            "augment.reflect=[x],[x,y]",
        ]
    )
    by = {p.key: p for p in params}
    assert by["a"].distribution == CategoricalDistribution([1, 2, 3])
    assert by["b"].distribution == CategoricalDistribution(["x", "y"])
    assert by["c"].distribution == IntDistribution(2, 8, step=2) and by["c"].values == (2, 4, 6, 8)
    assert by["d"].distribution == FloatDistribution(0.1, 0.3)
    assert by["e"].distribution == FloatDistribution(0.01, 0.2, log=True)
    assert by["f"].distribution == IntDistribution(1, 5)
    assert fixed == ["g=0.5"]
    # list values travel as the text the user wrote
    assert by["augment.reflect"].override("[x,y]") == "augment.reflect=[x,y]"
    assert by["gnn"].override("gcn") == "gnn=gcn"
    assert not space.is_grid(params)
    grid = [p for p in params if p.enumerable]
    assert len(space.grid_points(grid)) == 3 * 2 * 4 * 2 * 2


def test_space_errors_name_the_key():
    with pytest.raises(space.SpaceError, match="e: a log interval needs a positive lower bound"):
        space.parse(["e=tag(log,interval(0,1))"])
    with pytest.raises(space.SpaceError, match="d: interval"):
        space.parse(["d=interval(0.3,0.1)"])
    with pytest.raises(space.SpaceError, match="cannot parse"):
        space.parse(["a=choice(1,"])


def test_command_line_sweeps_extend_and_replace_a_study_file():
    raw = {"params": {"gnn.iterations": "2,4", "filter.cut": "interval(0.01, 0.2)"}, "n_trials": 4}
    spec = study.build(raw, "s", ["gnn.iterations=8", "gnn.hidden=32,64"])
    keys = {p.key for p in spec.params}
    assert keys == {"filter.cut", "gnn.hidden"}  # a fixed command-line value removes it from the space
    assert "gnn.iterations=8" in spec.fixed
    assert not spec.grid and spec.sampler["name"] == "auto"
    grid = study.build({}, "g", ["a=1,2", "b=x,y,z"])
    assert grid.grid and len(space.grid_points(grid.params)) == 6


# -------------------------------------------------------------- study files ----


def test_shipped_studies_load():
    names = study.available()
    assert {"gnn_depth", "quick_search"} <= set(names)
    depth = study.load("gnn_depth", [], "x")
    assert depth.grid and [p.key for p in depth.params] == ["gnn.iterations"]
    quick = study.load("quick_search", [], "x")
    assert quick.directions == ["maximize", "maximize", "minimize"]
    assert quick.metric_names == ["eff_tech_pt0.5", "purity", "time_infer_total_s"]
    assert not quick.grid and quick.n_trials == 10 and "gnn.epochs=12" in quick.fixed


@pytest.mark.parametrize("name", study.available())
def test_every_shipped_study_composes_a_valid_run_at_every_point(name):
    """Each point of a shipped study (a few sampled ones for a search) is a config that
    composes and validates, and the study has a dashboard definition that loads."""
    from hydra import compose, initialize_config_module

    from exatrkx_sweeps.config import validate
    from exatrkx_sweeps.dashboards.build import definition

    spec = study.load(name, [], name)
    if spec.grid:
        points = [space.overrides_for(spec.params, p) for p in space.grid_points(spec.params)]
    else:
        sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        points = []
        for _ in range(3):
            trial = sampled.ask()
            points.append(space.overrides_for(spec.params, {p.key: p.suggest(trial) for p in spec.params}))
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        for point in points:
            validate(compose("config", overrides=[*spec.fixed, *point, f"study={name}"]))
    d = definition(name)
    assert d.path is not None and d.figures and d.study == name


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"paramz": {}}, "unknown key"),
        ({"params": {"a": "1,2"}, "objectives": {"score": "up"}}, "must be maximize or minimize"),
        ({"params": {"a": "interval(0,1)"}}, "needs a total number of trials"),
        ({"params": {"a": "interval(0,1)"}, "n_trials": 3, "sampler": "grid"}, "sampler=grid needs"),
        ({"params": {"a": "1,2"}, "sampler": "annealing"}, "sampler=annealing: one of"),
        (
            {"params": {"a": "1,2"}, "n_trials": 2, "sampler": {"name": "tpe", "n_startupp": 3}},
            "TPESampler accepts",
        ),
        (
            {"params": {"a": "1,2"}, "objectives": {"x": "maximize", "y": "minimize"}, "pruner": "median"},
            "single-objective",
        ),
        ({"params": {"a": "1,2"}, "pruner": {"name": "median", "intermediate": ["gnn"]}}, "STAGE/METRIC"),
        ({"params": {"a": "1,2"}, "n_trials": 0}, "n_trials=0"),
    ],
)
def test_bad_study_files_give_one_clear_error(raw, match):
    with pytest.raises(study.StudyError, match=match):
        study.build(raw, "bad")


def test_unknown_study_name_lists_the_available_ones(tmp_path):
    with pytest.raises(study.StudyError, match="Available: .*gnn_depth.*quick_search"):
        study.find("gnn_dept", tmp_path)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.yaml").write_text("params: {a: '1,2'}\n")
    assert study.find("mine", tmp_path) == tmp_path / "studies" / "mine.yaml"


# ------------------------------------------------------------------ storage ----


def test_storage_urls_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXATRKX_OPTUNA_DB", str(tmp_path / "o.db"))
    assert resolve(None) == f"sqlite:///{tmp_path}/o.db"
    assert resolve("sqlite:///rel.db") == f"sqlite:///{tmp_path}/rel.db"
    assert resolve("runs.log") == f"journal:///{tmp_path}/runs.log"
    assert resolve("journal:j.log") == f"journal:///{tmp_path}/j.log"
    assert redact("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"
    with pytest.raises(StorageError, match="private to one process"):
        resolve("sqlite:///:memory:")


def test_unreachable_postgres_is_one_clear_error():
    with pytest.raises(
        StorageError, match=r"postgresql.*me:\*\*\*@127.0.0.1:9/.*cannot open the Optuna storage"
    ):
        open_storage("postgresql://me:secret@127.0.0.1:9/optuna")


# ------------------------------------------------------------ trial outcome ----


def test_judge_maps_job_outcomes_to_trial_states():
    ok = judge(Outcome(value={"score": 1.5, "cost": 2, "note": "x"}), ["score", "cost"])
    assert ok.state == "COMPLETE" and ok.values == [1.5, 2.0] and ok.metrics == {"score": 1.5, "cost": 2.0}
    assert judge(Outcome(value={"score": float("nan")}), ["score"]).reason == "objective score is nan"
    missing = judge(Outcome(value={"x": 1.0}), ["score"])
    assert missing.state == "FAIL" and missing.fatal
    raised = judge(Outcome(error=ValueError("bad point\nmore")), ["score"])
    assert raised.state == "FAIL" and raised.reason == "ValueError: bad point"
    assert judge(Outcome(error=optuna.TrialPruned("at step 3")), ["score"]).state == "PRUNED"


def test_reporter_steps_follow_the_intermediate_list():
    seen = []

    class Link:
        def report(self, value, step, what=""):
            seen.append((what, step, value))

    cfg = {"gnn": {"epochs": 3}, "data": {"n_test": 2}}
    r = Reporter(Link(), ["graph/val_edge_eff", "gnn/val_edge_eff@epoch", "test/eff_tech_pt0.5@event"], cfg)
    r.on_stage("graph", {"val_edge_eff": 0.9})
    r.on_stage("filter", {"val_edge_eff": 0.8})  # not listed: not reported
    for e in range(3):
        r.on_epoch("gnn", e, {"val_edge_eff": 0.5 + e / 10, "loss": 1.0})
    r.on_event(1, {"eff_tech_pt0.5": 0.95})
    assert seen == [
        ("graph/val_edge_eff", 0, 0.9),
        ("gnn/val_edge_eff", 1, 0.5),
        ("gnn/val_edge_eff", 2, 0.6),
        ("gnn/val_edge_eff", 3, 0.7),
        ("test/eff_tech_pt0.5", 5, 0.95),
    ]


# ------------------------------------------------------------ real sweeps ----


class Sweep:
    """Runs the cheap task's sweeps in one directory against one storage."""

    def __init__(self, root: Path, storage: str | None = None):
        self.root = root
        self.runs = root / "runs.log"
        self.storage = storage or f"sqlite:///{root}/optuna.db"
        self.env = {
            **os.environ,
            "RUNS_LOG": str(self.runs),
            "SWEEP_DIR": str(root / "sweep"),
            "EXATRKX_OPTUNA_DB": str(root / "default.db"),
            "HYDRA_FULL_ERROR": "0",
        }

    def args(self, *overrides: str) -> list[str]:
        objective = (
            []
            if any(o.startswith(("hydra.sweeper.study=", "hydra.sweeper.objectives=")) for o in overrides)
            else ["hydra.sweeper.objectives=score"]
        )
        return [
            sys.executable,
            str(APP),
            "-m",
            f"hydra.sweeper.storage={self.storage}",
            *objective,
            *overrides,
        ]

    def start(self, *overrides: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.args(*overrides),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(self.args(*overrides), cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"sweep failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def points(self) -> list[tuple[str, str]]:
        if not self.runs.exists():
            return []
        return [tuple(line.split()[2:4]) for line in self.runs.read_text().splitlines()]

    def study(self, name: str):
        return optuna.load_study(study_name=name, storage=open_storage(self.storage))

    def results(self) -> dict:
        return yaml.safe_load((self.root / "sweep" / "optuna_results.yaml").read_text())


def _states(s) -> collections.Counter:
    return collections.Counter(t.state.name for t in s.trials)


def _two_workers_share_a_grid(sw: Sweep) -> None:
    args = ("x=range(0,8)", "y=0,1", "sleep=0.1", "hydra.sweeper.study_name=grid")
    procs = [sw.start(*args) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2500:] for o in outs)
    points = sw.points()
    assert len(points) == 16 and len(set(points)) == 16  # every grid point once, none twice
    pids = collections.Counter(line.split()[0] for line in sw.runs.read_text().splitlines())
    assert len(pids) == 2  # both workers did work
    s = sw.study("grid")
    assert len(s.trials) == 16 and _states(s) == {"COMPLETE": 16}
    assert s.best_trial.params == {"x": 2, "y": 1}


def test_two_parallel_workers_run_each_grid_point_once_sqlite(tmp_path):
    _two_workers_share_a_grid(Sweep(tmp_path))


def test_two_parallel_workers_run_each_grid_point_once_journal(tmp_path):
    _two_workers_share_a_grid(Sweep(tmp_path, storage=f"journal:///{tmp_path}/optuna.log"))


def test_two_parallel_workers_run_each_grid_point_once_postgres(tmp_path, postgres_url):
    _two_workers_share_a_grid(Sweep(tmp_path, storage=postgres_url))


def test_joblib_launcher_runs_trials_in_parallel_processes(tmp_path):
    sw = Sweep(tmp_path)
    sw.run("x=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.study_name=jl")
    assert sorted(sw.points()) == [("0", "0"), ("1", "0"), ("2", "0"), ("3", "0")]
    assert len({line.split()[0] for line in sw.runs.read_text().splitlines()}) == 2
    assert _states(sw.study("jl")) == {"COMPLETE": 4}


def test_n_trials_is_a_total_and_a_rerun_resumes(tmp_path):
    sw = Sweep(tmp_path)
    args = ["x=interval(0,4)", "y=interval(-1,2)", "hydra.sweeper.study_name=tpe"]
    sw.run(*args, "hydra.sweeper.n_trials=3")
    assert len(sw.points()) == 3
    sw.run(*args, "hydra.sweeper.n_trials=5")  # continues: only the 2 missing trials
    assert len(sw.points()) == 5
    sw.run(*args, "hydra.sweeper.n_trials=5")  # complete: nothing runs
    assert len(sw.points()) == 5
    s = sw.study("tpe")
    assert [t.number for t in s.trials] == [0, 1, 2, 3, 4] and _states(s) == {"COMPLETE": 5}
    # trial numbers and job directories stay aligned across reruns
    assert sorted(p.name for p in (tmp_path / "sweep").glob("trial-*")) == [f"trial-{i}" for i in range(5)]
    # each trial ran with the values Optuna recorded for it
    for t, (x, _) in zip(s.trials, sw.points(), strict=True):
        assert float(x) == pytest.approx(t.params["x"], rel=1e-5)
        assert t.user_attrs["x_seen"] == pytest.approx(t.params["x"])


def test_a_raising_and_a_nan_trial_fail_and_the_sweep_completes(tmp_path):
    sw = Sweep(tmp_path)
    p = sw.run("x=0,1,2,3", "raise_on=1", "nan_on=3", "hydra.sweeper.study_name=f")
    s = sw.study("f")
    by_x = {t.params["x"]: t for t in s.trials}
    assert by_x[1].state == TrialState.FAIL and "x=1 is a bad point" in by_x[1].user_attrs["fail_reason"]
    assert by_x[3].state == TrialState.FAIL and by_x[3].user_attrs["fail_reason"] == "objective score is nan"
    assert by_x[0].state == by_x[2].state == TrialState.COMPLETE
    assert "Traceback" not in p.stdout + p.stderr.split("Error executing job")[0]
    assert sw.results()["n_trials"] == {"COMPLETE": 2, "FAIL": 2}


def test_failure_budget_stops_the_sweep_with_one_clear_error(tmp_path):
    sw = Sweep(tmp_path)
    p = sw.run(
        "x=1,1.5,2", "raise_on=1", "hydra.sweeper.max_failures=0", "hydra.sweeper.study_name=b", check=False
    )
    assert p.returncode != 0
    assert "stopped: 1 trials failed, more than max_failures=0" in p.stderr
    assert len(sw.points()) == 1  # nothing ran after the budget was spent


def test_an_objective_the_task_never_reports_stops_after_the_first_trial(tmp_path):
    sw = Sweep(tmp_path)
    p = sw.run("x=0,1,2", "hydra.sweeper.objectives=effciency", "hydra.sweeper.study_name=o", check=False)
    assert p.returncode != 0
    assert "stopped: objective 'effciency' is not among the job's metrics" in p.stderr
    assert len(sw.points()) == 1  # not three failed trials


def test_unreachable_storage_is_one_clear_error_at_start(tmp_path):
    sw = Sweep(tmp_path, storage="postgresql://me:secret@127.0.0.1:9/optuna")
    p = sw.run("x=0,1", check=False)
    assert p.returncode != 0
    assert "cannot open the Optuna storage" in p.stderr and "secret" not in p.stderr
    assert "Traceback" not in p.stderr
    assert sw.points() == []


def test_without_optuna_the_plugin_loads_quietly_and_a_sweep_says_what_is_missing(tmp_path):
    """A Python without optuna (a GPU node with only what benchmarks/bench_pu200_gpu.py
    needs): Hydra imports every plugin to compose any config; this one loads there
    without Hydra's "incompatible or buggy" warning, and a sweep with it stops in one
    line that names what is missing."""
    block = "import sys; sys.modules['optuna'] = None; "
    compose = (
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('exatrkx_sweeps.conf', version_base=None):\n"
        "    print(compose('config', overrides=['data=sim_pu200']).data.name)"
    )
    env = {**Sweep(tmp_path).env, "PYTHONWARNINGS": "always"}
    composed = subprocess.run(
        [sys.executable, "-c", block + "exec(sys.argv[1])", compose], env=env, capture_output=True, text=True
    )
    assert composed.returncode == 0 and composed.stdout.strip() == "sim_pu200", composed.stderr
    assert "Error importing" not in composed.stderr and "optuna" not in composed.stderr
    run_app = (
        block + "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    sweep = subprocess.run(
        [sys.executable, "-c", run_app, str(APP), "-m", "x=0,1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert sweep.returncode == 1
    assert "hydra/sweeper=optuna needs optuna, which this Python lacks" in sweep.stderr
    assert "Traceback" not in sweep.stderr and "Error importing" not in sweep.stderr


def test_a_sigkilled_workers_trial_is_failed_and_retried(tmp_path):
    sw = Sweep(tmp_path)
    args = ("x=range(0,6)", "hang_once=3", "sleep=0.3", "hydra.sweeper.study_name=k")
    first = sw.start(*args)
    hung = sw.runs.with_suffix(".hung-3")
    wait_until(hung.exists, 120, every=0.1)
    second = sw.start(*args)
    time.sleep(1.0)
    os.kill(int(hung.read_text()), signal.SIGKILL)  # the first worker (it runs its trial in-process)
    first.communicate(timeout=60)
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 0, out
    s = sw.study("k")
    dead = [t for t in s.trials if t.state == TrialState.FAIL]
    assert len(dead) == 1 and "worker died: no heartbeat" in dead[0].user_attrs["fail_reason"]
    retry = [t for t in s.trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == dead[0].params
    assert sw.results()["n_trials"] == {"COMPLETE": 6}  # the failed attempt counts as its retry


@pytest.mark.parametrize("pruner", ["median", "wilcoxon", "hyperband"])
def test_pruners_stop_bad_trials_through_the_shared_storage(tmp_path, pruner):
    sw = Sweep(tmp_path)
    study_file = tmp_path / "p.yaml"
    kwargs = {
        "median": {"n_startup_trials": 2, "n_warmup_steps": 0},
        "wilcoxon": {"p_threshold": 0.1},
        "hyperband": {"min_resource": 1, "max_resource": 6, "reduction_factor": 2},
    }[pruner]
    study_file.write_text(
        yaml.safe_dump(
            {
                "params": {"x": "0,2,1,3,4,5"},
                "objectives": {"score": "maximize"},
                "sampler": "grid",
                "pruner": {"name": pruner, **kwargs},
            }
        )
    )
    sw.run(f"hydra.sweeper.study={study_file}", "report=6")
    s = sw.study("p")
    states = {t.params["x"]: t.state for t in s.trials}
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED}
    if pruner != "hyperband":  # hyperband's brackets decide differently; it must run and record
        assert states[0] == states[2] == TrialState.COMPLETE
        assert states[5] == TrialState.PRUNED  # far below the others at every step
    pruned = [t for t in s.trials if t.state == TrialState.PRUNED]
    assert all(t.intermediate_values and "pruned at step" in t.user_attrs["prune_reason"] for t in pruned)


def test_multi_objective_study_records_its_pareto_front_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    sw = Sweep(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    study_file = tmp_path / "mo.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "params": {"x": "0,1,2,3", "y": "0,1"},
                "objectives": {"score": "maximize", "cost": "minimize"},
                "sampler": "grid",
            }
        )
    )
    sw.run(
        f"hydra.sweeper.study={study_file}",
        "+tracking.enabled=true",
        f"+tracking.uri={uri}",
        "+tracking.experiment=sweeps",
    )
    s = sw.study("mo")
    front = {t.number for t in s.best_trials}
    res = sw.results()
    assert {t["number"] for t in res["pareto_front"]} == front
    client = MlflowClient(tracking_uri=uri)
    parent_id = s.user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["study"] == "mo" and parent.info.status == "FINISHED"
    assert parent.data.metrics["pareto_front_size"] == len(front)
    names = {a.path for a in client.list_artifacts(parent_id)}
    assert {"optuna_results.yaml", "trials.csv", "trials.txt", "dashboard.html"} <= names
    page = Path(client.download_artifacts(parent_id, "dashboard.html", str(tmp_path))).read_text()
    # no trial logged a run (the cheap task): the page holds Optuna's figures of the study
    assert "pareto front" in page and "optimization history score" in page
    assert not re.search(r"<script[^>]*\ssrc=[\"']?https?:", page)
    local = client.download_artifacts(parent_id, "optuna_results.yaml", str(tmp_path))
    assert yaml.safe_load(Path(local).read_text())["pareto_front"] == res["pareto_front"]


def test_batch_size_follows_the_launcher():
    from hydra_plugins.exatrkx_optuna_sweeper.optuna_sweeper import batch_size

    assert batch_size(None, {"n_jobs": 1}) == 1
    assert batch_size(None, {"n_jobs": 3}) == 3
    assert batch_size(None, {"n_jobs": -1}) == (os.cpu_count() or 1)
    assert batch_size(None, {"array_parallelism": 16}) == 16
    assert batch_size(4, {"n_jobs": 2}) == 4  # hydra.sweeper.n_jobs wins
    assert batch_size(None, {}) == 1


def test_a_study_files_sampler_seed_is_the_base_of_the_trial_seeds(tmp_path):
    def sampled(sampler: dict, seed: int | None, name: str) -> list[float]:
        spec = study.build({"params": {"a": "interval(0,1)"}, "n_trials": 3, "sampler": sampler}, name)
        runner = Runner(
            spec,
            lambda jobs: [Outcome(value={"eff_tech_pt0.5": 0.5}) for _ in jobs],
            storage=str(tmp_path / f"{name}.db"),
            seed=seed,
            log=lambda _: None,
        )
        runner.run()
        return [t.params["a"] for t in runner.study.trials]

    from_file = sampled({"name": "random", "seed": 7}, None, "file")
    assert from_file == sampled({"name": "random"}, 7, "argument")
    assert from_file != sampled({"name": "random"}, None, "default")


@pytest.mark.parametrize("name", study.SAMPLERS)
def test_every_sampler_name_builds(name):
    sampler = study.make_sampler({"name": name}, grid=False, seed=3)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_module

    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        targets = {
            name: compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra
            for name in ("local", "joblib", "slurm")
        }
    assert targets["local"].launcher._target_.endswith("BasicLauncher")
    assert targets["joblib"].launcher._target_.endswith("JoblibLauncher")
    assert targets["slurm"].launcher._target_.endswith("SlurmLauncher")
    assert targets["slurm"].launcher.array_parallelism == 16
    assert all(t.sweeper._target_.endswith("OptunaSweeper") for t in targets.values())
