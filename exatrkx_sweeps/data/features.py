"""Node features of hits: cylindrical coordinates and the nine cell (cluster-shape) features.

The cell features follow the Exa.TrkX definition: the cluster's extent on the module
(``lx``, ``ly``: channel span times pitch; ``lz``: sensor thickness) gives a local
direction whose pseudorapidity and azimuth are ``leta``, ``lphi``; the same vector
rotated to the global frame gives ``geta``, ``gphi``. ``cell_count`` is the number of
cells and ``cell_val`` their summed value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .geometry import Detector

NODE_FEATURES = ("r", "phi", "z")  # scaled: r / 1000 mm, phi / pi, z / 1000 mm
CELL_FEATURES = ("cell_count", "cell_val", "leta", "lphi", "lx", "ly", "lz", "geta", "gphi")


def node_features(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, 3) float32: r / 1000, phi / pi, z / 1000 (mm in, dimensionless out)."""
    r = np.hypot(x, y)
    return np.column_stack([r / 1000.0, np.arctan2(y, x) / np.pi, z / 1000.0]).astype(np.float32)


def _eta_of(vx: np.ndarray, vy: np.ndarray, vz: np.ndarray) -> np.ndarray:
    theta = np.arctan2(np.hypot(vx, vy), vz)
    return -np.log(np.tan(np.clip(theta, 1e-6, np.pi - 1e-6) / 2))


def cell_features(hits: pd.DataFrame, cells: pd.DataFrame | None, detector: Detector) -> np.ndarray:
    """(N, 9) float32 in the order of CELL_FEATURES, one row per row of ``hits``.
    Without a cells file every cell feature is 0."""
    n = len(hits)
    out = np.zeros((n, len(CELL_FEATURES)), np.float32)
    if cells is None or len(cells) == 0:
        return out
    agg = cells.groupby("hit_id").agg(
        cell_count=("value", "size"), cell_val=("value", "sum"),
        ch0_min=("ch0", "min"), ch0_max=("ch0", "max"), ch1_min=("ch1", "min"), ch1_max=("ch1", "max"),
    ).reindex(hits.hit_id.to_numpy())  # fmt: skip
    rows = detector.module_rows(hits.volume_id, hits.layer_id, hits.module_id)
    has = agg.cell_count.notna().to_numpy() & (rows >= 0)
    a = agg[has]
    mods = detector.modules.iloc[rows[has]]
    lx = (a.ch0_max - a.ch0_min + 1).to_numpy() * mods.pitch_u.to_numpy()
    ly = (a.ch1_max - a.ch1_min + 1).to_numpy() * mods.pitch_v.to_numpy()
    lz = mods.module_t.to_numpy()
    g = np.einsum("nij,nj->ni", detector.rotations[rows[has]], np.column_stack([lx, ly, lz]))
    out[has] = np.column_stack([
        a.cell_count.to_numpy(), a.cell_val.to_numpy(), _eta_of(lx, ly, lz), np.arctan2(ly, lx),
        lx, ly, lz, _eta_of(g[:, 0], g[:, 1], g[:, 2]), np.arctan2(g[:, 1], g[:, 0]),
    ]).astype(np.float32)  # fmt: skip
    return out
