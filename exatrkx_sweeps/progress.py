"""Progress of long loops (simulation, processing, training epochs, testing).

On a terminal, a tqdm bar. Otherwise (stderr to a file: a SLURM log, a sweep's job log) a
bar would write one carriage-return line per update, thousands per run; instead one plain
log line at most every ``EXATRKX_PROGRESS_EVERY`` seconds (default 60) and one at the end,
through ``logging``, so they land in Hydra's job log file too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("exatrkx_sweeps.progress")


def _interval() -> float:
    try:
        return float(os.environ.get("EXATRKX_PROGRESS_EVERY", "60"))
    except ValueError:
        return 60.0


def progress(
    items: Iterable[T], desc: str, unit: str, enabled: bool = True, leave: bool = False, done: int = 0
) -> Iterable[T]:
    """``items``, reporting progress when ``enabled``: a bar on a terminal, else log lines.
    ``done``: how many came before these (a resumed training's finished epochs), counted
    in the numbers shown but not in the rate."""
    if not enabled:
        return items
    if sys.stderr.isatty():
        total = done + len(items) if hasattr(items, "__len__") else None
        return tqdm(items, desc=desc, unit=unit, leave=leave, initial=done, total=total)
    return _logged(items, desc, unit, done)


def _logged(items: Iterable[T], desc: str, unit: str, done: int = 0) -> Iterator[T]:
    seq = list(items)
    n, every = done + len(seq), _interval()
    t0 = last = time.perf_counter()
    i = done
    try:
        for i, item in enumerate(seq, done + 1):
            yield item
            now = time.perf_counter()
            if i == n or now - last >= every:
                last = now
                rate = (now - t0) / (i - done)
                tail = f", about {rate * (n - i):.0f} s left" if i < n else ""
                log.info(f"{desc}: {i}/{n} {unit}s in {now - t0:.0f} s ({rate:.2f} s/{unit}{tail})")
    finally:
        if i < n:  # the loop stopped early (early stopping, an error, a kill) in its i-th item
            where = f"in {unit} {i}/{n}" if i > done else f"before {unit} {done + 1}/{n}"
            log.info(f"{desc}: stopped {where}, {time.perf_counter() - t0:.0f} s")
