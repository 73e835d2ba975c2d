import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to the user's cache, MLflow store or Optuna storage."""
    monkeypatch.setenv("EXATRKX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXATRKX_MLFLOW_DB", str(tmp_path / "user" / "mlflow.db"))
    monkeypatch.setenv("EXATRKX_OPTUNA_DB", str(tmp_path / "user" / "optuna.db"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server on a loopback port (skipped where none can start)."""
    initdb = shutil.which("initdb") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None
    )
    if not initdb:
        pytest.fail(
            "PostgreSQL server binaries (initdb) are not installed: .ci/run installs Debian's postgresql"
        )
    bindir = Path(initdb).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="exatrkx-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root and no postgres user to run the server (Debian's postgresql creates it)"
            )
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -h 127.0.0.1"
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
