"""Content-addressed stage cache.

A stage's output is stored under a key hashing the stage's resolved config, the keys
of every upstream stage, the data config and seed, and the stage's code version, so a
trial that changes only ``gnn.*`` reuses the dataset, embedding and filter. Writes are
atomic (temporary file + rename); a lock file makes concurrent workers that need the
same key wait for the one building it instead of training twice; each entry carries
a SHA-256 checksum, and an entry that fails it (a torn or corrupted file) is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .locks import file_lock


def stage_key(stage: str, config: Any, upstream: list[str] | tuple[str, ...] = (), version: str = "1") -> str:
    """Deterministic key of a stage's output."""
    blob = json.dumps(
        {
            "stage": stage,
            "config": config,
            "upstream": list(upstream),
            "version": version,
            "package": __version__,
        },
        sort_keys=True,
        default=str,
    )
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


class StageCache:
    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.hits: dict[str, bool] = {}

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        d = self.root / "stages"
        return d / f"{key}.pt", d / f"{key}.sha256", d / f"{key}.lock"

    def _load(self, key: str) -> tuple[bool, Any]:
        payload, checksum, _ = self._paths(key)
        if not (payload.exists() and checksum.exists()):
            return False, None
        raw = payload.read_bytes()
        if hashlib.sha256(raw).hexdigest() != checksum.read_text().strip():
            return False, None  # corrupt: rebuild
        try:
            return True, torch.load(io.BytesIO(raw), weights_only=False)
        except Exception:
            return False, None

    def _store(self, key: str, value: Any) -> None:
        payload, checksum, _ = self._paths(key)
        buf = io.BytesIO()
        torch.save(value, buf)
        raw = buf.getvalue()
        for path, data in ((payload, raw), (checksum, hashlib.sha256(raw).hexdigest().encode())):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)

    def _lock(self, key: str):
        return file_lock(self._paths(key)[2])

    def get_or_build(self, name: str, key: str, build: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``build()`` stored under it. Records in
        ``hits[name]`` whether it came from the cache."""
        if not self.enabled:
            self.hits[name] = False
            return build()
        ok, value = self._load(key)
        if not ok:
            with self._lock(key):
                ok, value = self._load(key)  # built by another worker while we waited
                if not ok:
                    value = build()
                    self._store(key, value)
        self.hits[name] = ok
        return value
