import shutil
import tempfile
from pathlib import Path

import pytest

from . import servers

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_DETECTORS = SHARED / "data" / "trackml" / "detectors.csv.gz"


@pytest.fixture(scope="session")
def real_detectors_path() -> Path:
    if not REAL_DETECTORS.exists():
        pytest.skip(f"reference data absent: {REAL_DETECTORS} (../shared is not beside this checkout)")
    return REAL_DETECTORS


@pytest.fixture(scope="session")
def detector():
    from exatrkx_sweeps.data.simulate import default_detector

    return default_detector()


@pytest.fixture(scope="session")
def small_event(detector):
    from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_event

    return simulate_event(SimulationConfig(mu=10), seed=3, event_id=7, detector=detector)


@pytest.fixture(scope="session", autouse=True)
def _isolated_tmp(tmp_path_factory):
    """Libraries' scratch files land under pytest's temporary directory, not in /tmp:
    MLflow, for one, leaves a lock file there for every SQLite store it opens (one per
    test). Subprocesses (the app, MLflow servers, SLURM jobs) inherit TMPDIR."""
    tmp = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        yield tmp


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to the user's cache, MLflow store or Optuna storage."""
    monkeypatch.setenv("EXATRKX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXATRKX_MLFLOW_DB", str(tmp_path / "user" / "mlflow.db"))
    monkeypatch.setenv("EXATRKX_OPTUNA_DB", str(tmp_path / "user" / "optuna.db"))


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server on a loopback port."""
    try:
        with servers.postgres() as url:
            yield url
    except servers.Missing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def mlflow_server(tmp_path):
    """An MLflow server on a SQLite store; yields its URL."""
    with servers.MlflowServer(tmp_path, f"sqlite:///{tmp_path / 'server.db'}") as server:
        yield server.url


@pytest.fixture
def mlflow_pg_server(tmp_path, postgres_url):
    """An MLflow server whose backend store is a fresh PostgreSQL database."""
    (tmp_path / "mlflow-server").mkdir()
    with servers.MlflowServer(tmp_path / "mlflow-server", servers.new_database(postgres_url)) as server:
        yield server


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM cluster (slurmctld, slurmd, munge) on this machine."""
    root = Path(tempfile.mkdtemp(prefix="exatrkx-slurm-", dir="/tmp"))
    try:
        cluster = servers.SlurmCluster(root).start()
    except servers.Missing as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
