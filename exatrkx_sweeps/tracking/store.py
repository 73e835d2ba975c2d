"""Where runs are logged: the tracking URI, its checks, the client and experiments.

By default a SQLite file at an absolute path (``$EXATRKX_MLFLOW_DB`` or
``~/.exatrkx/mlflow.db``) with artifacts beside it, so it never moves with Hydra's job
directory. ``http(s)://`` points at an MLflow server, checked for reachability before
anything runs.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from ..errors import TrackingError, one_line
from ..redaction import redact

if TYPE_CHECKING:  # MLflow takes about 1 s to import: only once a run starts
    from mlflow.tracking import MlflowClient

__all__ = ["TrackingError", "check_reachable", "client", "default_db_path", "experiment_id", "resolve_uri"]


def default_db_path() -> Path:
    env = os.environ.get("EXATRKX_MLFLOW_DB")
    return Path(env).expanduser().resolve() if env else (Path.home() / ".exatrkx" / "mlflow.db")


_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
_DATABASES = ("postgresql", "postgres", "mysql")
ACCEPTED = "a path (a SQLite file), sqlite:////abs/path.db, http(s)://host:port, postgresql:// or mysql://"


def resolve_uri(uri: str | None, write: bool = True) -> str:
    """The tracking URI to use, checked without contacting anything: an absolute
    ``sqlite:///`` URI for a path (its folder created and writable when ``write``), or
    a server or database URI of a known scheme. One TrackingError otherwise."""
    if not uri:
        return _sqlite(default_db_path(), write)
    m = _SCHEME.match(uri)
    if m is None:  # a bare path: a SQLite file
        return _sqlite(Path(uri).expanduser(), write)
    scheme = m.group("scheme").lower()
    base = scheme.split("+")[0]
    if base == "sqlite":
        if not uri.startswith("sqlite:///") or len(uri) == len("sqlite:///"):
            raise TrackingError(
                f"tracking.uri={redact(uri)}: a SQLite URI is sqlite:/// and a path "
                "(sqlite:////abs/mlflow.db), or give the path alone."
            )
        return _sqlite(Path(uri[len("sqlite:///") :]).expanduser(), write)
    if base in ("http", "https"):
        if not uri.startswith(f"{m.group('scheme')}://") or not urlsplit(uri).hostname:
            raise TrackingError(f"tracking.uri={redact(uri)}: an MLflow server is http(s)://host:port.")
        return _credentials_to_environment(uri)
    if base in _DATABASES:
        return uri
    if base == "file":
        raise TrackingError(
            f"tracking.uri={redact(uri)}: MLflow's file store is not supported; "
            "give a path instead (tracking.uri=/abs/mlflow.db: a SQLite file)."
        )
    raise TrackingError(f"tracking.uri={redact(uri)}: unknown scheme {scheme!r}; use {ACCEPTED}.")


def _credentials_to_environment(uri: str) -> str:
    """``http(s)://user:password@host``: the credentials go where MLflow reads them
    (MLFLOW_TRACKING_USERNAME / _PASSWORD, also for child processes) and the URI is
    used without them, so that MLflow, which prints run URLs, never sees them."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=netloc).geturl()


def _sqlite(path: Path, write: bool) -> str:
    path = path.resolve()
    if write:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking.uri: cannot create {path.parent} ({exc.strerror}).") from None
        if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise TrackingError(
                f"tracking.uri: {path} is not writable; give a store you can write "
                "(tracking.uri=/abs/mlflow.db)."
            )
    return f"sqlite:///{path}"


class NoAnswer(TrackingError):
    """The MLflow server or database does not answer (it may be restarting)."""


def check_reachable(uri: str, timeout: float = 5.0, wait: float = 0.0) -> None:
    """One clear error, within ``timeout`` seconds, if an MLflow server or a database
    store does not answer (SQLite files are checked by :func:`resolve_uri`). With
    ``wait``, a store that does not answer is asked again every second for that many
    seconds first (a job of a sweep outlives a server's restart; a wrong address or
    credentials still fail at once)."""
    base = uri.split(":", 1)[0].split("+")[0].lower()
    check = {"http": _check_server, "https": _check_server}.get(base)
    check = check or (_check_database if base in _DATABASES else None)
    if check is None:
        return
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            return check(uri, timeout)
        except NoAnswer as exc:
            if time.monotonic() >= deadline:
                raise
            if not told:
                print(f"warning: {exc} Waiting up to {wait:.0f} s (tracking.wait_s).", file=sys.stderr)
                told = True
            time.sleep(1.0)


def _check_server(uri: str, timeout: float) -> None:
    parts = urlsplit(uri)
    plain = uri.replace(f"{parts.username}:{parts.password}@", "") if parts.password else uri
    request = urllib.request.Request(plain.rstrip("/") + "/health")
    user = unquote(parts.username or "") or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = unquote(parts.password or "") or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(
                    f"tracking.uri={redact(uri)}: the MLflow server answered HTTP {r.status} on /health."
                )
    except urllib.error.HTTPError as exc:
        hint = (
            " (credentials: user:password in the URI, or MLFLOW_TRACKING_USERNAME / _PASSWORD)"
            if exc.code in (401, 403)
            else ""
        )
        raise TrackingError(
            f"tracking.uri={redact(uri)}: the MLflow server answered HTTP {exc.code}{hint}."
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NoAnswer(
            f"tracking.uri={redact(uri)}: no MLflow server answers ({reason}). Start one "
            "(mlflow server --port ...) or drop tracking.uri to use the local SQLite store."
        ) from None


def _check_database(uri: str, timeout: float) -> None:
    """A database store: its port answers, then a connection opens (short timeouts)."""
    url = make_url(uri)
    host = url.host or "localhost"
    port = url.port or (3306 if url.get_backend_name() == "mysql" else 5432)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise NoAnswer(
            f"tracking.uri={redact(uri)}: no database answers at {host}:{port} ({exc.strerror or exc})."
        ) from None
    try:
        engine = create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise TrackingError(
            f"tracking.uri={redact(uri)}: the database driver {exc.name!r} is not installed."
        ) from None
    except Exception as exc:
        raise TrackingError(
            f"tracking.uri={redact(uri)}: cannot connect ({redact(one_line(exc))[:300]})."
        ) from None


def client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a SQLite store) if missing."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        artifact_location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another worker
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
