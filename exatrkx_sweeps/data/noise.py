"""Noise-hit selection: keep a chosen share of an event's nominal noise.

Each processed event stores every noise hit with a fixed random rank in [0, 1). A
view that keeps ``fraction`` of the noise keeps the hits whose rank is below it, so the
same event can be looked at with 0%, 50% or 100% of its noise (``data.noise_fraction``
for training, ``eval.noise_fraction`` for test events) without being re-processed, and
a larger fraction always contains the hits of a smaller one.
"""

from __future__ import annotations

import numpy as np


def noise_ranks(rng: np.random.Generator, is_noise: np.ndarray) -> np.ndarray:
    """Uniform ranks for noise hits; signal hits get -1 (always kept)."""
    ranks = np.full(is_noise.shape, -1.0, np.float32)
    ranks[is_noise] = rng.uniform(size=int(is_noise.sum()))
    return ranks


def keep_mask(ranks: np.ndarray, fraction: float) -> np.ndarray:
    """Hits kept when ``fraction`` (0-1) of the nominal noise is kept."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noise_fraction must lie in [0, 1], got {fraction}.")
    return ranks < fraction
