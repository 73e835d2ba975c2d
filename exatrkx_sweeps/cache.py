"""The content-addressed stage cache, and ``python -m exatrkx_sweeps.cache``.

Location: ``cache.dir``, else ``$EXATRKX_CACHE``, else ``~/.cache/exatrkx_sweeps``. It
holds ``processed/`` (processed events, one folder per data configuration) and
``stages/`` (fitted stages and their outputs on the training and validation events).

A stage's entry is stored under a key that hashes the settings the stage declares,
the keys of the stages upstream of it (hence the data) and the fingerprint of its code
(:mod:`.fingerprint`), so a trial that changes only ``gnn.*`` reuses the data, the
embedding and the filter, and editing a model's source retrains that model only.
Entries hold tensors and plain containers only and are read with
``torch.load(weights_only=True)``. Writes are atomic (temporary file + rename); a lock
makes concurrent workers that need the same key wait for the one building it instead
of training twice (the lock file goes when the entry is written); each entry carries a
SHA-256 checksum, and an entry that fails it, or does not load, is rebuilt.

    python -m exatrkx_sweeps.cache list                 # entries: stage, size, last use
    python -m exatrkx_sweeps.cache clean --older-than 30
    python -m exatrkx_sweeps.cache clean --stage gnn    # or --all
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .locks import file_lock, is_locked

log = logging.getLogger(__name__)


def default_dir() -> Path:
    env = os.environ.get("EXATRKX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "exatrkx_sweeps"


def stage_key(kind: str, config: Any, upstream: list[str] | tuple[str, ...] = (), code: str = "") -> str:
    """Deterministic key ``<kind>-<hash>`` of an entry: its settings, upstream keys and code."""
    blob = json.dumps(
        {"kind": kind, "config": config, "upstream": list(upstream), "code": code},
        sort_keys=True,
        default=str,
    )
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def write_checked(path: Path, value: Any) -> None:
    """Save ``value`` (tensors and plain containers) to ``path`` with a SHA-256 sidecar
    (``path.sha256``), each written atomically (temporary file + rename)."""
    buf = io.BytesIO()
    torch.save(value, buf)
    raw = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path, raw), (_sidecar(path), hashlib.sha256(raw).hexdigest().encode())):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)


def read_checked(path: Path, what: str) -> tuple[bool, Any]:
    """(True, value) for a file written by :func:`write_checked` that passes its checksum
    and holds only tensors and plain containers (read with ``weights_only=True``, so it
    never runs code); (False, None) otherwise, with one warning line when the file is
    there but fails (it is then rebuilt by the caller). ``what`` names it in the warning."""
    checksum = _sidecar(path)
    if not path.exists():
        return False, None
    raw = path.read_bytes()
    if not checksum.exists() or hashlib.sha256(raw).hexdigest() != checksum.read_text().strip():
        log.warning(
            f"{what} ({path}) fails its checksum (damaged, or not written by exatrkx-sweeps): rebuilding it"
        )
        return False, None
    try:
        value = torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:
        log.warning(
            f"{what} ({path}) holds more than tensors and plain containers: rebuilding it, not loading it"
        )
        return False, None
    os.utime(path)  # last use, for `clean --older-than`
    return True, value


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name[: -len(path.suffix)] + ".sha256")


class StageCache:
    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.hits: dict[str, bool] = {}

    def _path(self, key: str) -> Path:
        return self.root / "stages" / f"{key}.pt"

    def checkpoint(self, key: str) -> Path | None:
        """Where a training of ``key`` keeps its last finished epoch until its entry is
        written (None when the cache is off); ``cache list`` shows it with its stage."""
        return self.root / "stages" / f"{key}.epoch.pt" if self.enabled else None

    def contains(self, key: str) -> bool:
        """Whether an entry of ``key`` is on disk (its checksum is checked when read)."""
        return self.enabled and self._path(key).exists()

    def get(self, name: str, key: str) -> Any | None:
        """The cached value of ``key``, or None (also when the cache is off)."""
        if not self.enabled:
            return None
        ok, value = read_checked(self._path(key), f"the cached {name}")
        self.hits[name] = ok
        return value if ok else None

    def put(self, name: str, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (nothing when the cache is off)."""
        self.hits[name] = False
        if self.enabled:
            path = self._path(key)
            with file_lock(path.with_suffix(".lock"), remove=True):
                write_checked(path, value)

    def get_or_build(self, name: str, key: str, build: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``build()`` stored under it. Records in
        ``hits[name]`` whether it came from the cache."""
        if not self.enabled:
            self.hits[name] = False
            return build()
        path = self._path(key)
        ok, value = read_checked(path, f"the cached {name}")
        if not ok:
            with file_lock(path.with_suffix(".lock"), remove=True):
                ok, value = read_checked(path, f"the cached {name}")  # built meanwhile by another worker
                if not ok:
                    value = build()
                    write_checked(path, value)
        self.hits[name] = ok
        return value


# ------------------------------------------------------------------- the CLI ----


@dataclass
class Entry:
    kind: str  # the stage (and, for outputs, the split), or "data"
    paths: list[Path]
    size: int
    last_use: float  # epoch seconds

    @property
    def stage(self) -> str:
        return self.kind.split(".")[0]


def entries(root: Path) -> list[Entry]:
    out = []
    for payload in sorted((root / "stages").glob("*.pt")):
        key = payload.name[: -len(".pt")]
        files = [payload, _sidecar(payload)]
        size = sum(p.stat().st_size for p in files if p.exists())
        out.append(Entry(key.rsplit("-", 1)[0], files, size, payload.stat().st_mtime))
    for d in sorted((root / "processed").glob("*")):
        files = list(d.glob("*.pt"))
        if d.is_dir():
            last = max([p.stat().st_mtime for p in files] or [d.stat().st_mtime])
            out.append(Entry("data", [d], sum(p.stat().st_size for p in files), last))
    return out


def leftovers(root: Path, min_age_s: float = 3600.0) -> list[Path]:
    """Lock files nobody holds, and temporary files of writers killed over an hour ago."""
    now = time.time()
    out = [p for p in root.rglob("*.lock") if not is_locked(p)]
    out += [p for p in root.rglob(".*.tmp") if now - p.stat().st_mtime > min_age_s]
    return out


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} d" if days >= 1 else f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m exatrkx_sweeps.cache",
        description="List or clean the stage cache (processed events, fitted stages, their outputs).",
    )
    ap.add_argument("action", choices=("list", "clean"))
    ap.add_argument("--dir", help=f"the cache (default: $EXATRKX_CACHE or {default_dir()})")
    ap.add_argument("--stage", help="only entries of this stage (embedding, graph, filter, gnn, data)")
    ap.add_argument("--older-than", type=float, metavar="DAYS", help="only entries unused for DAYS days")
    ap.add_argument("--all", action="store_true", help="clean: every entry")
    args = ap.parse_args(argv)
    root = Path(args.dir).expanduser() if args.dir else default_dir()
    if not root.is_dir():
        print(f"no cache at {root}", file=sys.stderr)
        return 0 if args.action == "list" else 1
    now = time.time()
    chosen = [
        e
        for e in entries(root)
        if (args.stage is None or e.stage == args.stage)
        and (args.older_than is None or now - e.last_use > args.older_than * 86400)
    ]
    if args.action == "list":
        print(f"{'stage':<14} {'size':>9} {'last use':>9}  entry")
        for e in chosen:
            print(f"{e.kind:<14} {_size(e.size):>9} {_age(now - e.last_use):>9}  {e.paths[0].name}")
        print(f"{len(chosen)} entries, {_size(sum(e.size for e in chosen))} in {root}")
        return 0
    if args.stage is None and args.older_than is None and not args.all:
        ap.error("clean needs --all, --stage or --older-than")
    for e in chosen:
        for p in e.paths:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    stale = leftovers(root)
    for p in stale:
        p.unlink(missing_ok=True)
    print(
        f"removed {len(chosen)} entries ({_size(sum(e.size for e in chosen))}) "
        f"and {len(stale)} stale lock or temporary files from {root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
