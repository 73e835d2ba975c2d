"""Real servers for the tests and benchmarks, started on this machine from Debian's
packages and PyPI: PostgreSQL, an MLflow server (SQLite or PostgreSQL store) that can be
killed and restarted, a proxy in front of it that loses answers, and a single-node SLURM
cluster.

``.ci/run`` installs what they need (postgresql, slurmctld, slurmd, slurm-client,
munge); where something is missing they raise :class:`Missing`, and the fixtures fail
rather than skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from .helpers import wait_until


class Missing(RuntimeError):
    """A server's binaries are not installed, or it did not come up."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ PostgreSQL --


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a loopback port; yields its URL."""
    initdb = shutil.which("initdb") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None
    )
    if not initdb:
        raise Missing(
            "PostgreSQL server binaries (initdb) are not installed: .ci/run installs Debian's postgresql"
        )
    bindir = Path(initdb).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="exatrkx-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise Missing("running as root and no postgres user (Debian's postgresql creates it)") from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), root / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    opts = f"-p {port} -k {root} -h 127.0.0.1 -c max_connections=300"
    subprocess.run(
        [*pg_ctl, "-o", opts, "-l", str(root / "log"), "-w", "start"], check=True, capture_output=True
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(url: str) -> str:
    """A new empty database on the server of ``url``; its SQLAlchemy URL (psycopg 3)."""
    import psycopg

    name = f"db_{os.getpid()}_{time.time_ns() % 10**10}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name


# --------------------------------------------------------------- MLflow server --


class MlflowServer:
    """``mlflow server`` on a loopback port with its backend store and a local artifact
    root; :meth:`kill` (SIGKILL, as a crash would) and :meth:`start` again on its port.
    A context manager: started on entry, stopped on exit."""

    def __init__(self, root: Path, backend: str):
        self.root, self.backend = Path(root), backend
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", port,
             "--backend-store-uri", self.backend, "--artifacts-destination", str(self.root / "artifacts"),
             "--workers", "1"],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "a"),  # noqa: SIM115
            start_new_session=True,  # its workers die with it
        )  # fmt: skip
        if wait_until(self.healthy, timeout, every=0.3):
            return self
        self.kill()
        raise Missing(f"the MLflow server did not start; see {self.root / 'server.log'}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1):
                return True
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)


class LosingProxy:
    """A TCP proxy in front of an HTTP server that loses chosen answers the way a server
    killed as it answers does: the request reaches the server and is done there, then
    the client gets only the status line and headers (``headers=True``) or nothing, and
    a closed connection. :meth:`lose` arms one loss for the next request whose path
    contains a fragment; :attr:`lost` lists the requests whose answer was lost."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.armed: list[tuple[str, bool]] = []
        self.lost: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def lose(self, fragment: str, headers: bool = True) -> None:
        with self._lock:
            self.armed.append((fragment, headers))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.upstream)
            state: dict = {"cut": None}  # the answer to lose on this connection: headers or not
            threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, state), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        # HTTP/1.1 clients send a request once the previous answer is read: an answer
        # that comes after a request line is that request's
        while data := _recv(client):
            for line in data.split(b"\r\n"):
                parts = line.split(b" ")
                if len(parts) == 3 and parts[2].startswith(b"HTTP/1."):
                    path = parts[1].decode(errors="replace")
                    with self._lock:
                        hit = next((a for a in self.armed if a[0] in path), None)
                        if hit:
                            self.armed.remove(hit)
                            self.lost.append(path)
                            state["cut"] = hit[1]
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(client, upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        buffer = b""
        while data := _recv(upstream):
            if state["cut"] is None:
                try:
                    client.sendall(data)
                except OSError:
                    break
                continue
            buffer += data
            end = buffer.find(b"\r\n\r\n")
            if end >= 0 or not state["cut"]:
                if state["cut"]:
                    client.sendall(buffer[: end + 4])
                break
        _close(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


# ----------------------------------------------------------------------- SLURM --

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


def _binary(name: str) -> str:
    for folder in ("", "/usr/sbin/", "/usr/bin/"):
        path = shutil.which(name) if not folder else folder + name
        if path and Path(path).exists():
            return path
    raise Missing(
        f"SLURM is not installed ({name} not found): .ci/run installs Debian's "
        "slurmctld, slurmd, slurm-client and munge"
    )


class SlurmCluster:
    """Start with :meth:`start`; ``env`` is what a client command needs (SLURM_CONF)."""

    def __init__(self, root: Path, cpus: int | None = None, kill_wait: int = 5):
        self.root = root
        self.cpus = cpus or os.cpu_count() or 2
        self.kill_wait = kill_wait
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: list[subprocess.Popen] = []

    def _write_conf(self) -> None:
        r, user = self.root, pwd.getpwuid(os.geteuid()).pw_name
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=exatrkx-test",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r / 'munge.sock'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    f"SlurmctldLogFile={r / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    f"KillWait={self.kill_wait}",  # SIGTERM, then SIGKILL this many seconds later
                    "MinJobAge=600",
                    f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory}",
                    "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 60) -> SlurmCluster:
        for name in DAEMONS:
            _binary(name)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._write_conf()
        r = self.root
        subprocess.run(
            [
                _binary("munged"),
                "--force",
                f"--socket={r / 'munge.sock'}",
                f"--key-file={key}",
                f"--pid-file={r / 'munged.pid'}",
                f"--log-file={r / 'munged.log'}",
                f"--seed-file={r / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
        )
        for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", [])):
            self._procs.append(
                subprocess.Popen(
                    [_binary(daemon), "-D", *extra, "-f", str(self.conf)],
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(r / f"{daemon}.err", "w"),  # noqa: SIM115
                )
            )
        state = ""

        def idle() -> bool:
            nonlocal state
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            return state == "idle"

        if wait_until(idle, timeout, every=0.5):
            return self
        self.stop()
        raise Missing(f"the SLURM node did not come up (sinfo: {state!r}); see {r}/slurmd.log")

    def run(self, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_binary(command), *args], env=self.env, capture_output=True, text=True, check=check, timeout=30
        )

    def jobs(self) -> list[dict[str, str]]:
        """Jobs in the queue: id, state (RUNNING, PENDING, ...) and name."""
        out = self.run("squeue", "-h", "-o", "%i|%T|%j", check=False).stdout
        return [dict(zip(("id", "state", "name"), ln.split("|"), strict=True)) for ln in out.splitlines()]

    def stop(self) -> None:
        self.run("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False)
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        pid = self.root / "munged.pid"
        if pid.exists():
            try:
                munged = int(pid.read_text().strip())
                os.kill(munged, signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                return
            # munged writes its seed file as it exits: wait for that, or the caller's
            # rmtree runs first and the file is left behind in a directory of its own
            wait_until(lambda: not _alive(munged), 10, every=0.05)
