"""Scale-out on real engines: studies whose trials are SLURM jobs of a real single-node
cluster, an MLflow server on PostgreSQL that dies mid-sweep, many workers on one study.

The sweep mechanics use the cheap task of ``tests/sweeper_app`` (with ``log_runs=true``
every job logs a real MLflow run); one test runs the pipeline itself as SLURM jobs.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from . import servers
from .helpers import TINY, wait_until
from .test_sweeper import Sweep

ROOT = Path(__file__).resolve().parents[1]


def _slurm_ids(pid: int) -> str:
    """The SLURM job (array_task) a process of this machine runs in, from its environment."""
    env = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
    )
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def _runs(uri: str, experiment: str):
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if r.data.tags.get("role") != "parent"]


def _tracked(uri: str) -> tuple[str, ...]:
    """The cheap task with an MLflow run per job, and the study's parent run, at ``uri``."""
    return (
        "log_runs=true",
        "+tracking.enabled=true",
        f"+tracking.uri={uri}",
        "+tracking.experiment=sweeper_app",
    )


def _slurm_args(*extra: str) -> tuple[str, ...]:
    return (
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.array_parallelism=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=1",  # SLURM's shortest time limit
        "hydra.launcher.signal_delay_s=1",
        *extra,
    )


def test_a_study_on_slurm_survives_scancel_and_a_time_limit(tmp_path, slurm):
    """Four grid points, two SLURM jobs at a time. The first run of x=1 hangs and is
    cancelled with scancel; the first run of x=2 hangs until its time limit (SIGTERM,
    then SIGKILL). Both end their MLflow runs KILLED, fail their trial and run again:
    the study ends with exactly four finished trials."""
    sw = Sweep(tmp_path)
    sw.env.update(slurm.env)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = sw.start(
        *_slurm_args(
            "x=0,1,2,3",
            "hang_once=[1,2]",
            *_tracked(uri),
            "hydra.sweeper.study_name=slurm",
            "hydra.sweeper.max_retry=2",
        )
    )
    marker = sw.runs.with_suffix(".hung-1")
    most_running, cancelled, deadline = 0, None, time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        most_running = max(most_running, sum(j["state"] == "RUNNING" for j in slurm.jobs()))
        if cancelled is None and marker.exists():
            time.sleep(1)  # its MLflow run is open
            cancelled = _slurm_ids(int(marker.read_text()))
            slurm.run("scancel", cancelled)
        time.sleep(0.5)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-4000:]
    assert cancelled is not None and most_running == 2, (cancelled, most_running)

    study = sw.study("slurm")
    states = collections.Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": 4, "FAIL": 2}, states
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.user_attrs["fail_reason"].startswith("JobTerminated: terminated by SIG") for t in failed)
    retried = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert sorted(t.params["x"] for t in retried) == [1, 2] and all(
        t.state.name == "COMPLETE" for t in retried
    )
    runs_per_point = collections.Counter(p[0] for p in sw.points())
    assert runs_per_point == {"0": 1, "1": 2, "2": 2, "3": 1}
    assert os.getpid() not in {int(line.split()[0]) for line in sw.runs.read_text().splitlines()}

    runs = _runs(uri, "sweeper_app")
    status = collections.Counter(r.info.status for r in runs)
    assert status == {"FINISHED": 4, "KILLED": 2}, status
    reasons = sorted(r.data.tags["status_reason"] for r in runs if r.info.status == "KILLED")
    print(f"SLURM study: {dict(states)} trials, runs {dict(status)}, killed: {reasons}")
    assert reasons[0] == "terminated by SIGTERM", reasons  # scancel
    assert reasons[1].startswith("terminated by SIG"), reasons  # the time limit (USR2 or TERM)
    assert all("score" in r.data.metrics for r in runs if r.info.status == "FINISHED")
    assert len({r.data.tags.get("mlflow.parentRunId") for r in runs}) == 1  # one study parent


def test_an_mlflow_server_killed_mid_sweep_loses_nothing(tmp_path, mlflow_pg_server, postgres_url):
    """Two workers share a grid (Optuna on PostgreSQL) and log to an MLflow server whose
    store is PostgreSQL. The server is killed (SIGKILL) once two runs have finished and a
    third is in flight, and started again 5 s later. Runs in flight wait for it (tracking.wait_s at a job's
    start, MLflow's retries on each call) and finish their logging: every trial has its
    FINISHED run with its metric, and what was logged before the kill is intact."""
    sw = Sweep(tmp_path, storage=postgres_url)
    server = mlflow_pg_server
    sleep_s = 3.0
    args = ("x=range(0,8)", f"sleep={sleep_s}", *_tracked(server.url), "hydra.sweeper.study_name=server_kill")
    workers = [sw.start(*args) for _ in range(2)]
    before, fresh = {}, []

    def two_finished_and_one_fresh() -> bool:
        # kill once two runs have finished and another has just started: a run seen RUNNING
        # may end before the kill on a loaded machine (the search itself takes time), so wait
        # for one that began less than half its task's length ago
        nonlocal before, fresh
        runs = _runs(server.url, "sweeper_app")
        now_ms = time.time() * 1000
        before = {r.info.run_id: r.data.metrics for r in runs if r.info.status == "FINISHED"}
        fresh = [r for r in runs if r.info.status == "RUNNING" and now_ms - r.info.start_time < 500 * sleep_s]
        return len(before) >= 2 and bool(fresh)

    assert wait_until(two_finished_and_one_fresh, 120), (
        "no run finished, or none just started, before the kill"
    )
    killed = time.time() * 1000
    server.kill()
    time.sleep(5)
    server.start()
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-3000:] for o in outs)

    study = sw.study("server_kill")
    states = collections.Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": 8}, [t.user_attrs.get("fail_reason") for t in study.trials]
    runs = _runs(server.url, "sweeper_app")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs), [
        (r.info.status, r.data.tags.get("status_reason")) for r in runs
    ]
    assert sorted(float(r.data.params["x"]) for r in runs) == list(range(8))
    assert all("score" in r.data.metrics for r in runs)
    after = {r.info.run_id: r.data.metrics for r in runs}
    assert all(after[k] == v for k, v in before.items())  # nothing logged before the kill is lost
    # in flight: started before the kill, ended after it. A run's end time is the client's
    # clock at its first try to end it, which may fall while the server is down
    in_flight = [r for r in runs if r.info.start_time < killed < r.info.end_time]
    assert in_flight, "no run was in flight across the kill"
    print(f"server kill: {len(in_flight)} run(s) in flight across the kill finished; {len(runs)} runs")


def load_test(sw: Sweep, tracking_uri: str, workers: int = 4, trials: int = 100) -> dict:
    """``workers`` sweeps of one grid of ``trials`` points of the cheap task, each trial
    with its MLflow run; returns the wall time and the busy span of the trials."""
    grid = (f"x=range(0,{trials // 4})", "y=range(0,4)")
    args = (*grid, *_tracked(tracking_uri), "hydra.sweeper.study_name=load")
    t0 = time.time()
    procs = [sw.start(*args) for _ in range(workers)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    wall = time.time() - t0
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    done = [t for t in sw.study("load").trials if t.datetime_complete]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"wall_s": wall, "span_s": span, "per_trial_s": span * workers / len(done)}


def test_four_workers_run_a_hundred_trials_each_once_with_its_mlflow_run(
    tmp_path, mlflow_pg_server, postgres_url
):
    """The load test (benchmarks/bench_sweep_load.py prints its figures): 4 workers x 25
    trials on PostgreSQL (Optuna) and an MLflow server on PostgreSQL."""
    sw = Sweep(tmp_path, storage=postgres_url)
    figures = load_test(sw, mlflow_pg_server.url)
    print(f"load test: {figures}")
    study = sw.study("load")
    assert collections.Counter(t.state.name for t in study.trials) == {"COMPLETE": 100}
    points = sw.points()
    assert len(points) == 100 and len(set(points)) == 100  # no grid point twice
    assert len({line.split()[0] for line in sw.runs.read_text().splitlines()}) >= 2  # shared work
    runs = _runs(mlflow_pg_server.url, "sweeper_app")
    assert len(runs) == 100 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(int(r.data.tags["trial"]) for r in runs) == sorted(t.number for t in study.trials)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    assert len(parents) == 1 and None not in parents  # every trial a child of the study's run


def test_the_pipeline_runs_a_grid_as_slurm_jobs(tmp_path, slurm):
    """``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml, resources scaled to this
    machine): two pipeline runs as two SLURM jobs at once, each a real MLflow child run
    with its physics."""
    env = {**os.environ, **slurm.env, "EXATRKX_CACHE": str(tmp_path / "cache")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        *TINY, "tracks.edge_cut=0.4,0.6", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'o.db'}", "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=2",
        "hydra.launcher.array_parallelism=2", "hydra.launcher.timeout_min=10",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "exatrkx_sweeps", "-m", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    most_running, deadline = 0, time.time() + 500
    while proc.poll() is None and time.time() < deadline:
        most_running = max(most_running, sum(j["state"] == "RUNNING" for j in slurm.jobs()))
        time.sleep(0.5)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-4000:]
    assert most_running == 2
    runs = _runs(uri, "exatrkx")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["tracks.edge_cut"] for r in runs) == ["0.4", "0.6"]
    assert all(r.data.metrics["eff_tech_pt0.5"] > 0.3 for r in runs), [r.data.metrics for r in runs]
    assert {r.data.tags["pid"] for r in runs}.isdisjoint({str(proc.pid)})  # not the sweeper's process
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # submitit's SLURM job logs


def _curves(uri: str, run_id: str) -> dict[str, list[float]]:
    c = MlflowClient(tracking_uri=uri)
    return {
        key: [m.value for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in ("embedding/loss", "filter/loss", "gnn/loss")
    }


ONE_THREAD = [*TINY, "train.threads=1"]  # the trainings compared below, each process on one thread


def _app(tmp: Path, args: list[str], env: dict | None = None) -> str:
    """The app with ``args`` in ``tmp``, with its stage cache and MLflow store there (URI returned)."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    r = subprocess.run(
        [sys.executable, "-m", "exatrkx_sweeps", *args, f"tracking.uri={uri}", f"cache.dir={tmp / 'cache'}"],
        cwd=tmp, env={**os.environ, "EXATRKX_PROGRESS_EVERY": "0", **(env or {})},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return uri


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference of the trainings on two processes: one process that takes two events
    per optimizer step (``train.events_per_step=2``). Its MLflow run's loss curves."""
    uri = _app(tmp_path_factory.mktemp("one_process"), [*ONE_THREAD, "train.events_per_step=2"])
    (run,) = _runs(uri, "exatrkx")
    assert run.data.params["train.devices"] == "1"
    assert run.data.metrics["eff_tech_pt0.5"] > 0.3  # it reconstructs tracks
    return run, _curves(uri, run.info.run_id)


def _same_training(curves: dict[str, list[float]], uri: str, run) -> None:
    for key, curve in curves.items():
        other = _curves(uri, run.info.run_id)[key]
        assert len(curve) == len(other) > 1
        for a, b in zip(curve, other, strict=True):
            assert abs(a - b) <= 0.01 * abs(a), (key, curve, other)


def test_two_processes_train_as_one_with_the_same_total_batch(tmp_path, one_process):
    """``train.devices=2`` (two CPU processes under torchrun, gloo) against one process
    with ``train.events_per_step=2``: the same events make each step, so the loss curves
    of the embedding, the filter and the GNN agree and so does the physics."""
    one, curves = one_process
    uri = _app(tmp_path, [*ONE_THREAD, "train.devices=2"])
    runs = _runs(uri, "exatrkx")
    assert len(runs) == 1  # the second process logged nothing
    (two,) = runs
    assert two.data.params["train.devices"] == "2"
    _same_training(curves, uri, two)
    for m in ("eff_tech_pt0.5", "purity", "edge_eff_gnn"):
        assert abs(one.data.metrics[m] - two.data.metrics[m]) < 0.01, m


def test_a_trial_trains_on_two_slurm_tasks(tmp_path, slurm, one_process):
    """The multi-GPU recipe on this CPU node: ``hydra.launcher.tasks_per_node=2`` makes a
    trial one SLURM job of two tasks that train together (ranks from SLURM_PROCID, gloo);
    task 0 logs the one MLflow run, with the same losses as one process with
    ``train.events_per_step=2``."""
    _, curves = one_process
    slurm_args = [
        "seed=0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'o.db'}",
        "hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10",
    ]  # fmt: skip
    uri = _app(tmp_path, ["-m", *ONE_THREAD, *slurm_args], slurm.env)
    runs = _runs(uri, "exatrkx")
    assert len(runs) == 1, [r.info.run_name for r in runs]  # task 1 logged nothing
    (on_slurm,) = runs
    assert on_slurm.data.params["train.devices"] == "2" and "trial" in on_slurm.data.tags
    _same_training(curves, uri, on_slurm)
    logs = sorted((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # one log per task


def test_an_mlflow_server_gone_for_good_fails_trials_in_one_line(tmp_path, mlflow_pg_server):
    """The server is killed while a run is open and does not come back (MLflow's retries
    cut to none, tracking.wait_s=2, to keep the test short). The open run's trial fails
    with one line naming the store, the later trials fail at their start, the finished
    trial keeps its result, the sweep ends with one warning about its parent run, and no
    traceback is printed. Once the server is back, the next run on this host closes the
    orphaned run as KILLED with the reason."""
    from exatrkx_sweeps.tracking.run import reap_orphans

    server = mlflow_pg_server
    sw = Sweep(tmp_path)
    sw.env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    proc = sw.start("x=range(0,4)", "sleep=3", *_tracked(server.url), "+tracking.wait_s=2",
                    "hydra.sweeper.study_name=gone")  # fmt: skip
    wait_until(
        lambda: {"FINISHED", "RUNNING"} <= {r.info.status for r in _runs(server.url, "sweeper_app")}, 120
    )
    server.kill()
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]  # a trial completed
    assert "Traceback" not in out, out[-3000:]
    assert "warning: the study's MLflow parent run was not updated" in out
    trials = sorted(sw.study("gone").trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    reasons = [t.user_attrs["fail_reason"] for t in trials[1:]]
    assert "the tracking store stopped answering" in reasons[0] and "\n" not in reasons[0], reasons
    assert all("no MLflow server answers" in r for r in reasons[1:]), reasons

    server.start()
    orphans = [r for r in _runs(server.url, "sweeper_app") if r.info.status == "RUNNING"]
    assert len(orphans) == 1
    assert reap_orphans(server.url, "sweeper_app") == [orphans[0].info.run_id]
    closed = MlflowClient(tracking_uri=server.url).get_run(orphans[0].info.run_id)
    assert (
        closed.info.status == "KILLED"
        and "ended without closing the run" in closed.data.tags["status_reason"]
    )
    finished = [r for r in _runs(server.url, "sweeper_app") if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.metrics["score"] == -5


def test_answers_lost_as_the_server_dies_neither_fail_a_job_nor_double_its_run(tmp_path, mlflow_server):
    """A server that dies as it answers leaves the client without the answer to a request
    it has done: a run created, a batch logged, a run ended. A job of a sweep makes such a
    call again (tracking.wait_s), and a creation whose answer was lost is not repeated:
    its run is found by its creation token. When MLflow's client repeats a creation itself
    (no answer at all), the second run is kept and the first deleted. Every run ends
    FINISHED with its params and metric, and no run is doubled."""
    from exatrkx_sweeps.tracking.run import TOKEN_TAG, job_run

    proxy = servers.LosingProxy(mlflow_server)
    cfg = {"x": 1, "tracking": {"uri": proxy.url, "experiment": "lost", "wait_s": 30}}
    try:
        # the body of each answer lost (requests reads it after urllib3's retries)
        for path in ("/runs/create", "/runs/log-batch", "/runs/log-batch", "/runs/update"):
            proxy.lose(path, headers=True)
        with job_run(cfg, str(tmp_path)) as run:
            run.log_metrics({"score": 1.0})
        first = run.run_id
        assert len(proxy.lost) == 4 and not proxy.armed, proxy.lost
        # no answer at all: MLflow's client sends the creation again
        proxy.lose("/runs/create", headers=False)
        with job_run({**cfg, "x": 2}, str(tmp_path)) as run:
            run.log_metrics({"score": 2.0})
        assert len(proxy.lost) == 5 and not proxy.armed, proxy.lost
    finally:
        proxy.close()

    runs = _runs(mlflow_server, "lost")
    assert sorted(float(r.data.params["x"]) for r in runs) == [1.0, 2.0], [r.info.run_id for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.run_id: r.data.metrics["score"] for r in runs} == {first: 1.0, run.run_id: 2.0}
    tokens = {r.info.run_id: r.data.tags[TOKEN_TAG] for r in runs}
    deleted = MlflowClient(tracking_uri=mlflow_server).search_runs(
        [runs[0].info.experiment_id], run_view_type=ViewType.DELETED_ONLY
    )
    assert [r.data.tags[TOKEN_TAG] for r in deleted] == [tokens[run.run_id]]  # the first creation
