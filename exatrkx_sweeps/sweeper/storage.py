"""Optuna storages from one URL string, with one clear error when they cannot be used.

=====================================  ===============================================
``null`` (default)                     SQLite at ``$EXATRKX_OPTUNA_DB`` or ``~/.exatrkx/optuna.db``
``sqlite:///path/to/file.db``          SQLite (a relative path is made absolute)
``path/to/file.db``                    the same
``journal:///path/to/file.log``        Optuna's journal file storage (NFS-safe file locks)
``path/to/file.log`` / ``.jsonl``      the same
``postgresql://user:pw@host/db``       PostgreSQL (psycopg 3 or psycopg2 as driver)
``mysql+pymysql://...``                MySQL
=====================================  ===============================================

All of them are shared by every worker that opens the same URL: processes on one
machine (SQLite, journal file) or on a cluster (PostgreSQL, or a journal file on a
shared file system).

The storages' methods run with SIGTERM and SIGINT held (:func:`errors.signals_held`): a
signal's exception raised inside SQLAlchemy could leave a SQLite write transaction open,
whose lock then held up the sweeper's own next write (failing the stopped trial) for the
120 s timeout, so that the sweep did not stop. A signal now ends the call first.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
from contextlib import contextmanager
from pathlib import Path
from types import FunctionType

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ..errors import one_line, signals_held
from ..locks import file_lock
from ..redaction import redact


class StorageError(RuntimeError):
    """The Optuna storage cannot be opened; the message says why and what to do."""


def _held(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with signals_held():
            return method(*args, **kwargs)

    return call


def _hold_signals(cls: type) -> type:
    """Gives ``cls`` held-signal versions of the methods its storage base class defines."""
    (base,) = cls.__bases__
    for name, value in vars(base).items():
        if isinstance(value, FunctionType) and not name.startswith("__"):
            setattr(cls, name, _held(value))
    return cls


@_hold_signals
class SignalSafeRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage (SQLite, PostgreSQL, MySQL), each call whole under signals."""


@_hold_signals
class SignalSafeJournalStorage(JournalStorage):
    """Optuna's journal file storage, each call whole under signals."""


def default_path() -> Path:
    env = os.environ.get("EXATRKX_OPTUNA_DB")
    return Path(env).expanduser().resolve() if env else Path.home() / ".exatrkx" / "optuna.db"


def resolve(url: str | None) -> str:
    """A canonical URL: absolute paths, an explicit scheme, a driver that is installed."""
    if not url:
        return f"sqlite:///{default_path()}"
    url = str(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path == ":memory:":
            raise StorageError(
                "storage=sqlite:///:memory: is private to one process; workers and the jobs that "
                "report to their trial could not share it. Use a file path."
            )
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    if url.startswith("journal:"):
        path = url[len("journal:///") :] if url.startswith("journal:///") else url[len("journal:") :]
        return f"journal:///{Path(path).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        if importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql://{rest}"
        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
        raise StorageError(
            f"storage={redact(url)}: no PostgreSQL driver is installed; pip install 'psycopg[binary]'."
        )
    if "://" in url:
        return url  # any other SQLAlchemy URL (postgresql+driver://, mysql://, ...)
    path = Path(url).expanduser().resolve()
    if path.suffix in (".log", ".jsonl", ".journal"):
        return f"journal:///{path}"
    return f"sqlite:///{path}"


def open_storage(url: str | None):
    """An Optuna storage for ``url`` (see :func:`resolve`); raises :class:`StorageError`."""
    url = resolve(url)
    if url.startswith("journal:///"):
        path = Path(url[len("journal:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return SignalSafeJournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"storage=journal:///{path}: cannot write there ({exc}).") from None
    engine_kwargs: dict = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage={url}: cannot create {path.parent} ({exc}).") from None
        # several worker processes write to one file: wait for the lock instead of failing
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(5):
            try:
                return SignalSafeRDBStorage(url, engine_kwargs=engine_kwargs)
            except Exception as exc:
                # workers that start together race to create the tables of a new database
                text = f"{type(exc).__name__} {exc}"
                racing = any(
                    m in text for m in ("IntegrityError", "UniqueViolation", "already exists", "locked")
                )
                if not racing or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"storage={redact(url)}: the database driver {exc.name!r} is not installed (pip install it)."
        ) from None
    except Exception as exc:
        raise StorageError(
            f"storage={redact(url)}: cannot open the Optuna storage ({one_line(exc)[:300]}). Check that the "
            "database server is running and the URL (user, password, host, port, database) is right, "
            "or leave storage unset for the local SQLite file."
        ) from None


@contextmanager
def claim_lock(url: str | None):
    """Serialises check-then-write steps (taking a queued trial, queueing slots) between
    processes that share a SQLite file. Python's sqlite3 reads outside a transaction, so
    two workers could both see a trial WAITING and both mark it RUNNING; PostgreSQL
    (row locks) and the journal file (ordered log replay) decide such races themselves."""
    url = resolve(url)
    if not url.startswith("sqlite:///"):
        yield
        return
    with file_lock(url[len("sqlite:///") :] + ".lock"):
        yield
