"""Inter-process file locks (``flock``): the stage cache and the SQLite Optuna storage
use them so that concurrent workers on one machine never do the same thing twice."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    With ``remove`` the holder deletes the file when it is done, so that locks leave
    nothing behind. That is safe because a process that obtains the lock checks that
    the file it locked is still the one at ``path`` and otherwise starts over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            current = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        f.close()  # removed (or replaced) by the holder we waited for: lock the new one
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def is_locked(path: str | Path) -> bool:
    """Whether another process holds the lock on ``path`` now."""
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
