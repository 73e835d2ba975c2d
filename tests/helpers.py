"""Shared helpers for tests: a tiny configuration composed through Hydra, and waiting
for a condition on servers and processes that change in the background."""

from __future__ import annotations

import time
from collections.abc import Callable

from hydra import compose, initialize_config_module

TINY = [
    "data.n_train=8",
    "data.n_val=1",
    "data.n_test=2",
    "data.simulation.mu=4",
    "data.pt_cut=0.5",
    "data.noise_fraction=0.0",
    "embedding.epochs=6",
    "embedding.hidden=32",
    "filter.epochs=2",
    "filter.hidden=32",
    "gnn.epochs=25",
    "gnn.hidden=32",
    "gnn.iterations=3",
    "tracking.log_models=false",  # on in test_export.py, which checks it
]


def tiny_cfg(*overrides: str, cache_dir=None):
    extra = [f"cache.dir={cache_dir}"] if cache_dir else []
    with initialize_config_module("exatrkx_sweeps.conf", version_base=None):
        return compose("config", overrides=[*TINY, *extra, *overrides])


def wait_until(condition: Callable[[], object], timeout: float, every: float = 0.2) -> bool:
    """Call ``condition`` every ``every`` seconds until it returns something true (then
    True) or ``timeout`` seconds have passed (then False, after one last call)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True
