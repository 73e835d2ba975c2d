"""Reliability and security, tried as a careless or hostile neighbour would: tampered
cache files, a planted password, bad URIs and inputs, runs killed with SIGTERM and
SIGKILL. Every case must end in one line (or a clean rebuild), never a traceback, a
hang, exit 0 on failure, code execution or silently different numbers."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from exatrkx_sweeps.cache import StageCache, read_checked, write_checked
from exatrkx_sweeps.data.dataset import EventStore
from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_dataset

from .helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
SWEEPER_APP = Path(__file__).parent / "sweeper_app" / "app.py"


class _Evil:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    """Replace a cached file by a code-running pickle, with a matching checksum (what an
    attacker who can write the cache would do)."""
    write_checked(path, {"state": _Evil(marker)})


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


# ------------------------------------------------------------------ caches ----


@pytest.mark.parametrize("tamper", ["pickle", "flip"])
def test_a_tampered_stage_entry_is_rebuilt_and_runs_no_code(tmp_path, caplog, tamper):
    cache = StageCache(tmp_path / "cache")
    first = cache.get_or_build("gnn", "gnn-abc", lambda: {"w": torch.ones(3)})
    entry = tmp_path / "cache" / "stages" / "gnn-abc.pt"
    marker = tmp_path / "pwned"
    _plant(entry, marker) if tamper == "pickle" else _flip(entry)
    with caplog.at_level(logging.WARNING):
        again = cache.get_or_build("gnn", "gnn-abc", lambda: {"w": torch.zeros(3)})
    assert not marker.exists()  # the pickle was never unpickled
    assert not cache.hits["gnn"] and torch.equal(again["w"], torch.zeros(3))
    assert torch.equal(first["w"], torch.ones(3))
    reason = "holds more than tensors" if tamper == "pickle" else "fails its checksum"
    assert any(reason in r.getMessage() for r in caplog.records), caplog.text
    assert cache.get_or_build("gnn", "gnn-abc", lambda: None)["w"].sum() == 0 and cache.hits["gnn"]


SIM = {
    "source": "simulate",
    "seed": 0,
    "first_event": 50,
    "n_train": 1,
    "n_val": 0,
    "n_test": 1,
    "simulation": {"mu": 2},
}


@pytest.mark.parametrize("tamper", ["pickle", "flip"])
def test_a_tampered_processed_event_is_rebuilt_and_runs_no_code(tmp_path, caplog, tamper):
    store = EventStore(SIM, tmp_path)
    original = store.event(50)
    path = store.dir / "event000000050.pt"
    marker = tmp_path / "pwned"
    _plant(path, marker) if tamper == "pickle" else _flip(path)
    again = EventStore(SIM, tmp_path)
    with caplog.at_level(logging.WARNING):
        rebuilt = again.event(50)
    assert not marker.exists() and again.n_built == 1
    assert torch.equal(rebuilt.pos, original.pos) and torch.equal(rebuilt.track_edges, original.track_edges)
    assert "processed event 50" in caplog.text


def test_changed_event_files_are_processed_again(tmp_path, caplog):
    """Replacing an event's files under the same path gives the new event, not the
    cached one (the cache keys on the input files' size and time, not their name)."""
    events = tmp_path / "events"
    simulate_dataset(events, 1, SimulationConfig(mu=2), seed=3, first_event=7)
    cfg = {"source": "trackml", "path": str(events), "n_train": 0, "n_val": 0, "n_test": None}
    first = EventStore(cfg, tmp_path / "c").event(7)
    hits = next(events.glob("event000000007-hits.csv*"))
    frame = pd.read_csv(hits)
    frame["x"] += 1.0  # a different event under the same name
    time.sleep(0.01)
    frame.to_csv(hits, index=False, compression="gzip" if hits.suffix == ".gz" else None)
    store = EventStore(cfg, tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        second = store.event(7)
    assert store.n_built == 1 and "input files changed" in caplog.text
    assert torch.allclose(second.pos[:, 0], first.pos[:, 0] + 1.0)


# ------------------------------------------------------------------ the app ----


def _app(args, tmp_path, env=None, timeout=600, module="exatrkx_sweeps"):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp_path,
        env={
            **os.environ,
            "EXATRKX_MLFLOW_DB": str(tmp_path / "m.db"),
            "EXATRKX_OPTUNA_DB": str(tmp_path / "o.db"),
            "EXATRKX_CACHE": str(tmp_path / "cache"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("htp:/host:5000", "unknown scheme 'htp'"),
        ("sqlite://x.db", "a SQLite URI is sqlite:/// and a path"),
        ("file:///tmp/mlruns", "MLflow's file store is not supported"),
        ("/proc/exatrkx/m.db", "cannot create /proc/exatrkx"),
        ("http://alice:s3cret@127.0.0.1:9", "no MLflow server answers"),
        ("postgresql://alice:s3cret@127.0.0.1:9/mlflow", "no database answers at 127.0.0.1:9"),
    ],
)
def test_bad_tracking_uris_are_one_line_before_any_run(tmp_path, uri, message):
    r = _app([*TINY, f"tracking.uri={uri}"], tmp_path, timeout=60)
    line = _one_line(r)
    assert r.returncode == 2 and message in line and "s3cret" not in r.stdout + r.stderr, line
    assert not (tmp_path / "cache").exists()  # nothing was simulated or trained
    assert not Path("htp:").exists() and not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.n_train=0"], "data.n_train=0: the pipeline needs training events"),
        (["data.n_test=0"], "data.n_test=0: no test events"),
        (
            ["eval.data=trackml", "eval.data.path=/nonexistent/events"],
            "eval.data.path=/nonexistent/events: no such",
        ),
        (
            ["data.detector=/nonexistent/detectors.csv"],
            "data.detector=/nonexistent/detectors.csv: no such file",
        ),
        (["gnn.iterations=1.5"], "gnn.iterations=1.5: must be an integer >= 1"),
        (["train.device=cuda:0"], "train.device=cuda:0: no CUDA device is visible"),
        (["train.device=gpu"], "train.device='gpu': must be auto, cpu or cuda[:N]"),
        (["train.precision=16-mixed"], "train.precision=16-mixed: needs a CUDA device"),
    ],
)
def test_bad_inputs_are_one_line_before_any_run(tmp_path, overrides, message):
    """... and before torch, torch_geometric or MLflow is imported (4-5 s here)."""
    args = [f"data@eval.data={o.split('=')[1]}" if o.startswith("eval.data=") else o for o in overrides]
    r = _app([*TINY, *args], tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    imports = [ln for ln in r.stderr.splitlines() if ln.startswith("import time:")]
    imported = {ln.rsplit("|", 1)[1].strip() for ln in imports}
    assert "exatrkx_sweeps.config" in imported and not imported & {"torch", "torch_geometric", "mlflow"}
    r.stderr = "\n".join(ln for ln in r.stderr.splitlines() if not ln.startswith("import time:"))
    line = _one_line(r)
    assert r.returncode == 2 and message in line, line
    assert not (tmp_path / "m.db").exists()  # no MLflow run was created


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["gnn=transformer"],
            "gnn=transformer: no such option; gnn takes attention, common, gcn, interaction.",
        ),
        (["data=simquick"], "data=simquick: no such option (did you mean data=sim_quick?)"),
        (["gnn.iteratons=3"], "gnn.iteratons: no such key; did you mean gnn.iterations?"),
        (["gnn.iterations=[1,2"], "gnn.iterations=[1,2: not valid override syntax"),
        (["-m", "embeding.radius=0.1,0.2"], "embeding.radius: no such key; did you mean embedding.radius?"),
    ],
)
def test_hydra_composition_errors_are_one_line(tmp_path, args, message):
    r = _app(args, tmp_path, timeout=60)
    line = _one_line(r)
    assert r.returncode == 2 and message in line, line


def test_more_events_asked_than_a_directory_holds(tmp_path):
    events = tmp_path / "events"
    simulate_dataset(events, 2, SimulationConfig(mu=2), seed=3, first_event=7)
    r = _app(
        [*TINY, "data=trackml", f"data.path={events}", "data.n_train=2", "data.n_val=1", "data.n_test=1"],
        tmp_path,
    )
    line = _one_line(r)
    assert r.returncode == 2 and f"data.path={events} holds 2 events" in line, line


def test_objectives_the_run_never_reports_stop_the_sweep_before_any_trial(tmp_path):
    r = _app(
        ["-m", "study=gnn_depth", "hydra.sweeper.objectives=effciency", f"hydra.sweep.dir={tmp_path / 's'}"],
        tmp_path,
    )
    assert r.returncode != 0
    assert "'effciency' is not a metric of a run; did you mean eff_tech_pt" in r.stderr
    assert not (tmp_path / "cache").exists() and "Traceback" not in r.stderr


def test_a_sweep_in_which_no_trial_completes_exits_nonzero(tmp_path):
    env = {
        "RUNS_LOG": str(tmp_path / "runs.log"),
        "SWEEP_DIR": str(tmp_path / "sweep"),
        "HYDRA_FULL_ERROR": "0",
    }
    r = subprocess.run(
        [sys.executable, str(SWEEPER_APP), "-m", "x=choice(1)", "raise_on=1",
         "hydra.sweeper.objectives=score", f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db"],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        r.returncode != 0 and "no trial completed (1 failed)" in r.stderr and "x=1 is a bad point" in r.stderr
    )


# ------------------------------------------------------------------ secrets ----


def _grep(root: Path, secret: bytes) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and secret in p.read_bytes():
            found.append(str(p.relative_to(root)))
    return found


def test_a_planted_password_appears_nowhere(tmp_path, mlflow_server, postgres_url):
    """Credentials in both the tracking URI and the Optuna storage URL: a sweep of the
    real pipeline writes them nowhere except the sweep's context file (0600), which
    the jobs need to open the storage."""
    secret = "s3cretPW"
    tracking = mlflow_server.replace("http://", f"http://alice:{secret}@")
    storage = postgres_url.replace("postgres@", f"postgres:{secret}@")
    work = tmp_path / "work"
    work.mkdir()
    r = _app(
        ["-m", *TINY, "gnn.epochs=2", "gnn.iterations=2,3", f"tracking.uri={tracking}",
         f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={work / 'sweep'}"],
        work,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert secret not in r.stdout + r.stderr
    context = work / "sweep" / ".optuna_study.json"
    assert secret in context.read_text() and stat.S_IMODE(context.stat().st_mode) == 0o600
    context.unlink()
    # the sweep and job folders, the MLflow server's database and artifacts, the cache
    assert _grep(tmp_path, secret.encode()) == []
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as db:
        for table in inspect(engine).get_table_names():
            assert secret not in str(db.execute(text(f'SELECT * FROM "{table}"')).fetchall()), table
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("exatrkx").experiment_id])
    children = [r for r in runs if r.data.tags.get("role") != "parent"]
    assert len(children) == 2 and not [r for r in children if "tracking.uri" in r.data.params]


# ------------------------------------------------------------------- kills ----


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _runs(db: Path) -> list:
    if not db.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("exatrkx")
    return client.search_runs([exp.experiment_id]) if exp else []


def _start(args, tmp_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "EXATRKX_MLFLOW_DB": str(tmp_path / "m.db"),
        "EXATRKX_OPTUNA_DB": str(tmp_path / "o.db"),
        "EXATRKX_CACHE": str(tmp_path / "cache"),
        "EXATRKX_PROGRESS_EVERY": "0",  # a progress line per epoch: the test sees the stage start
    }
    # output to files: an unread pipe fills up and blocks the child
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "exatrkx_sweeps", *args], cwd=tmp_path, env=env, stdout=out, stderr=err
    )


def _training(tmp_path: Path, stage: str):
    """The run, once `stage` is training (seen in its progress output: polling the
    database earlier would race the app's creation of it)."""
    out = tmp_path / "out.txt"  # progress goes through logging to stdout off a terminal
    if not (out.exists() and f"train {stage}: 1/" in out.read_text()):
        return None
    runs = _runs(tmp_path / "m.db")
    return runs[0] if runs else None


@pytest.fixture
def started(tmp_path):
    """Start the app in the background; whatever the test does, the process ends with it."""
    procs = []

    def start(args):
        procs.append(_start(args, tmp_path))
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


STAGES = ("embedding", "filter", "gnn")


@pytest.mark.parametrize("stage", STAGES)
def test_sigterm_ends_the_run_killed_and_leaves_the_cache_consistent(tmp_path, started, stage):
    p = started([*TINY, f"{stage}.epochs=500"])
    run = _wait_for(lambda: _training(tmp_path, stage), 300, f"{stage} training")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    err = (tmp_path / "err.txt").read_text()
    assert p.returncode == 143 and "terminated by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}").get_run(run.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["status_reason"] == "terminated by SIGTERM"
    stages = tmp_path / "cache" / "stages"
    assert not list(stages.glob("*.lock")) and not list(stages.glob(".*.tmp"))
    # the interrupted stage wrote no entry, only the checkpoint of its last finished epoch
    assert [p.name.endswith(".epoch.pt") for p in stages.glob(f"{stage}-*.pt")] in ([], [True])
    for done in STAGES[: STAGES.index(stage)]:  # the stages before it are whole entries
        (entry,) = stages.glob(f"{done}-*.pt")
        assert read_checked(entry, done)[0]


_QUERY_UNDER_SIGTERM = """
import os, signal, threading, torch
from exatrkx_sweeps.errors import Terminated, raise_terminated
from exatrkx_sweeps.stages.neighbours import radius_neighbours
torch.set_num_threads(2)
signal.signal(signal.SIGTERM, raise_terminated)
x = torch.rand(120_000, 3, generator=torch.Generator().manual_seed(0))
threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGTERM)).start()  # mid-query
try:
    radius_neighbours(x, 0.1, 64, "kdtree")
except Terminated as exc:
    print("stopped:", exc)
"""


def test_a_sigterm_during_the_threaded_kdtree_query_stops_the_run_cleanly():
    """scipy's KD-tree query waits for worker threads of its own; a SIGTERM whose
    handler raised during that wait freed the output arrays under the workers, and the
    app died of a segmentation fault (1 in 3 runs stopped in embedding training). The
    signal now waits for the query (errors.signals_held), then ends the run."""
    r = subprocess.run([sys.executable, "-c", _QUERY_UNDER_SIGTERM], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # -11: the segmentation fault
    assert r.stdout.strip() == "stopped: terminated by SIGTERM", r.stdout


def test_signals_held_hands_a_signal_to_its_handler_after_the_block():
    from exatrkx_sweeps.errors import Terminated, raise_terminated, signals_held

    before = signal.signal(signal.SIGTERM, raise_terminated)
    steps = []
    try:
        with pytest.raises(Terminated, match="SIGTERM"):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler would have run by now
                steps.append("block ended")
        assert steps == ["block ended"] and signal.getsignal(signal.SIGTERM) is raise_terminated
        with signals_held():  # no signal: nothing raised
            steps.append("quiet")
        assert steps[-1] == "quiet"
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_sigterm_during_storage_writes_ends_outside_them_and_leaves_the_database_unlocked(tmp_path):
    """A SIGTERM whose handler raised inside SQLAlchemy's code could leave the Optuna
    store's SQLite write transaction open: the sweeper's own next write (failing the
    trial) then waited out the 120 s lock timeout, and the sweep did not stop (a CI run
    of the SIGTERM test below timed out so). The storage's calls now hold the signal
    until they end (sweeper/storage.py)."""
    import sqlite3
    import threading
    import traceback

    import optuna

    from exatrkx_sweeps.errors import Terminated, raise_terminated
    from exatrkx_sweeps.sweeper.storage import open_storage

    db = tmp_path / "o.db"
    trial = optuna.create_study(storage=open_storage(f"sqlite:///{db}"), study_name="s").ask()
    before = signal.signal(signal.SIGTERM, raise_terminated)
    attempted = []
    try:
        for delay in (0.2, 0.35, 0.5):  # wherever in a write the signal lands
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()
            with pytest.raises(Terminated, match="SIGTERM") as info:
                for i in range(1_000_000):  # almost all of the time inside SQLAlchemy
                    attempted.append(i)
                    trial.set_user_attr("i", i)
            files = [f.filename for f in traceback.extract_tb(info.tb)]
            assert files[-1].endswith("exatrkx_sweeps/errors.py"), files[-3:]  # at the call's end
            assert not any("sqlalchemy" in f for f in files), files
            with sqlite3.connect(db, timeout=1) as con:  # no transaction was left open
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
    finally:
        signal.signal(signal.SIGTERM, before)
    # the write the signal came in was made whole before it stopped the loop
    assert attempted[-1] > 10 and trial.study.trials[0].user_attrs["i"] == attempted[-1]


class _Stop(Exception):
    pass


def test_a_training_stopped_mid_stage_goes_on_from_its_last_epoch(tmp_path):
    """A run stopped while the GNN trains (a SIGTERM raises out of the epoch loop like the
    callback here, after the GNN's tenth epoch) keeps its last finished epoch beside the
    cache entries; the next run of the same config trains only the epochs left and ends
    with the weights of an uninterrupted training, bit for bit, and the test figures."""
    from exatrkx_sweeps import pipeline
    from exatrkx_sweeps.config import validate

    from .helpers import tiny_cfg

    full, cut = tmp_path / "full", tmp_path / "cut"
    reference = pipeline.run(validate(tiny_cfg(cache_dir=full)))
    (cut / "stages").mkdir(parents=True)
    for f in (full / "stages").iterdir():  # the trained embedding and filter, not the GNN
        if not f.name.startswith("gnn"):
            (cut / "stages" / f.name).write_bytes(f.read_bytes())
    (cut / "processed").symlink_to(full / "processed")
    epochs: list[int] = []

    def stop_after_ten(stage, epoch, metrics):
        if stage == "gnn":
            epochs.append(epoch)
            if epoch == 9:
                raise _Stop

    with pytest.raises(_Stop):
        pipeline.run(validate(tiny_cfg(cache_dir=cut)), pipeline.Callbacks(on_epoch=stop_after_ten))
    (checkpoint,) = (cut / "stages").glob("gnn-*.epoch.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 8  # the tenth did not finish
    gnn_files = [p.name for p in (cut / "stages").glob("gnn-*.pt")]
    assert gnn_files == [checkpoint.name] and not list((cut / "stages").glob(".*.tmp"))  # no entry
    epochs.clear()
    resumed = pipeline.run(
        validate(tiny_cfg(cache_dir=cut)),
        pipeline.Callbacks(on_epoch=lambda stage, epoch, m: epochs.append(epoch) if stage == "gnn" else None),
    )
    assert epochs == list(range(9, 25))
    # the activation memory is measured in the first epoch the resumed run trains
    saved = resumed.metrics["fit_saved_mb_gnn"]
    assert saved == pytest.approx(reference.metrics["fit_saved_mb_gnn"], rel=0.2) and saved > 0
    assert not list((cut / "stages").glob("*.epoch.pt"))  # gone with the entry written
    (entry,) = (full / "stages").glob("gnn-*.pt")
    ok, whole = read_checked(entry, "gnn")
    ok2, again = read_checked(cut / "stages" / entry.name, "gnn")
    assert ok and ok2 and whole["state"].keys() == again["state"].keys()
    for name, w in whole["state"].items():
        assert torch.equal(w, again["state"][name]), name
    for k in ("eff_tech_pt0.5", "purity", "edges_per_event_gnn"):
        assert resumed.metrics[k] == reference.metrics[k], k


def test_a_crafted_checkpoint_is_not_run_and_the_training_starts_afresh(tmp_path, caplog):
    """A checkpoint replaced by a pickle that would run code is refused (read with
    weights_only=True): one warning, every epoch trained, the weights untouched by it."""
    from exatrkx_sweeps.stages.base import RunContext

    marker, checkpoint = tmp_path / "pwned", tmp_path / "gnn-0.epoch.pt"
    torch.save(_Evil(marker), checkpoint)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        epochs = list(RunContext(checkpoint=checkpoint).epochs(3, "gnn", {"model": model}))
    assert epochs == [0, 1, 2] and not marker.exists()
    assert "gnn: cannot resume from gnn-0.epoch.pt" in caplog.text and "training afresh" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2  # its own epochs replaced it


@pytest.mark.parametrize("stage", ["embedding", "gnn"])
def test_a_sigkilled_run_is_closed_by_the_next_run_on_its_host(tmp_path, started, stage):
    p = started([*TINY, f"{stage}.epochs=500"])
    run = _wait_for(lambda: _training(tmp_path, stage), 300, f"{stage} training")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nothing could close it
    r = _app([*TINY, "gnn.epochs=2"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    dead = client.get_run(run.info.run_id)
    assert dead.info.status == "KILLED" and f"pid {p.pid}" in dead.data.tags["status_reason"]


def test_a_reaped_trial_ends_its_mlflow_run(tmp_path):
    """A worker killed outright leaves its trial RUNNING in Optuna and its job's run
    RUNNING in MLflow; the worker that reaps the trial also ends the run."""
    import optuna

    from exatrkx_sweeps.sweeper import optuna_compat as compat
    from exatrkx_sweeps.sweeper.parent import StudyParent
    from exatrkx_sweeps.sweeper.runner import Outcome, Runner
    from exatrkx_sweeps.sweeper.study import build
    from exatrkx_sweeps.tracking.run import Run

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = build({"params": {"x": "1,2"}, "objectives": ["score"]}, "reap")
    runner = Runner(spec, lambda jobs: [Outcome(value={"score": 1.0})], storage=str(tmp_path / "o.db"),
                    grace_period=0.0, log=lambda _: None)  # fmt: skip
    study = runner.open()
    parent = StudyParent.open({"uri": uri}, study, tmp_path / "sweep", str(tmp_path / "o.db"))
    runner.on_finished = parent.trial_finished
    trial = study.ask()  # a dead worker's trial: RUNNING, with its job's RUNNING run
    orphan = Run.create(uri, "exatrkx", parent_id=parent.run.run_id)
    compat.set_user_attr(study, compat.trial_id(trial), "mlflow_run_id", orphan.run_id)  # as its job did
    assert runner.reap_stale() == [trial.number]
    run = MlflowClient(tracking_uri=uri).get_run(orphan.run_id)
    assert run.info.status == "KILLED" and "worker died" in run.data.tags["status_reason"]
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL


def test_sigterm_to_a_sweep_fails_its_trial_and_queues_it_again(tmp_path):
    env = {
        "RUNS_LOG": str(tmp_path / "runs.log"),
        "SWEEP_DIR": str(tmp_path / "sweep"),
        "HYDRA_FULL_ERROR": "0",
    }
    args = [sys.executable, str(SWEEPER_APP), "-m", "x=0,1", "sleep=60", "hydra.sweeper.objectives=score",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db", "hydra.sweeper.study_name=t"]  # fmt: skip
    with open(tmp_path / "out.txt", "w") as out:
        p = subprocess.Popen(
            args, cwd=tmp_path, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            _wait_for(lambda: (tmp_path / "runs.log").exists(), 120, "the first trial")
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
    text = (tmp_path / "out.txt").read_text()
    assert p.returncode == 1 and "terminated by SIGTERM; the running trials are queued again" in text, text
    assert "Traceback" not in text
    import optuna

    from exatrkx_sweeps.sweeper.storage import open_storage

    s = optuna.load_study(study_name="t", storage=open_storage(f"sqlite:///{tmp_path}/o.db"))
    failed = [t for t in s.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "terminated by SIGTERM"
    queued = [t for t in s.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(queued) == 1 and queued[0].state == optuna.trial.TrialState.WAITING


def test_the_suite_covers_the_readme_table():
    """The README's table of bad inputs lists what this file and the config tests check."""
    text = (ROOT / "README.md").read_text()
    assert "## Bad input, kills and secrets" in text
    section = text.split("## Bad input, kills and secrets")[1].split("\n## ")[0]
    assert section.count("\n|") >= 20
