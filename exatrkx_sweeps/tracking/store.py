"""Where runs are logged: the tracking URI, its checks, the client and experiments.

By default a SQLite file at an absolute path (``$EXATRKX_MLFLOW_DB`` or
``~/.exatrkx/mlflow.db``) with artifacts beside it, so it never moves with Hydra's job
directory. ``http(s)://`` points at an MLflow server, checked for reachability before
anything runs.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from ..errors import TrackingError

__all__ = ["TrackingError", "check_reachable", "client", "default_db_path", "experiment_id", "resolve_uri"]


def default_db_path() -> Path:
    env = os.environ.get("EXATRKX_MLFLOW_DB")
    return Path(env).expanduser().resolve() if env else (Path.home() / ".exatrkx" / "mlflow.db")


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use: an absolute sqlite:// URI by default."""
    if not uri:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :]).expanduser()
        if not path.is_absolute():
            path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://", "file:", "postgresql", "mysql")):
        return uri
    path = Path(uri).expanduser().resolve()  # a bare path: a SQLite file
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """One clear error if an MLflow server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(
                    f"tracking.uri={uri}: the MLflow server answered HTTP {r.status} on /health."
                )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking.uri={uri}: no MLflow server answers ({reason}). Start one (mlflow server --port ...) "
            "or drop tracking.uri to use the local SQLite store."
        ) from None


def client(uri: str) -> MlflowClient:
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
