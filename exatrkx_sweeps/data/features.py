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
import torch

from .geometry import Detector

NODE_FEATURES = ("r", "phi", "z")  # scaled: r / 1000 mm, phi / pi, z / 1000 mm
CELL_FEATURES = ("cell_count", "cell_val", "leta", "lphi", "lx", "ly", "lz", "geta", "gphi")
# Scales that bring each cell feature to order one for the networks.
CELL_SCALE = (0.1, 1.0, 0.25, 1 / np.pi, 1.0, 0.1, 1.0, 0.25, 1 / np.pi)
# the networks' node inputs as scaled, in order (an exported model's manifest names them)
NODE_COLUMNS = ("r / 1000 mm", "phi / pi", "z / 1000 mm")
CELL_COLUMNS = tuple(f"{name} x {scale:.4g}" for name, scale in zip(CELL_FEATURES, CELL_SCALE, strict=True))


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
    agg = (
        cells.groupby("hit_id")
        .agg(
            cell_count=("value", "size"),
            cell_val=("value", "sum"),
            ch0_min=("ch0", "min"),
            ch0_max=("ch0", "max"),
            ch1_min=("ch1", "min"),
            ch1_max=("ch1", "max"),
        )
        .reindex(hits.hit_id.to_numpy())
    )
    rows = detector.module_rows(hits.volume_id, hits.layer_id, hits.module_id)
    has = agg.cell_count.notna().to_numpy() & (rows >= 0)
    a = agg[has]
    mods = detector.modules.iloc[rows[has]]
    lx = (a.ch0_max - a.ch0_min + 1).to_numpy() * mods.pitch_u.to_numpy()
    ly = (a.ch1_max - a.ch1_min + 1).to_numpy() * mods.pitch_v.to_numpy()
    lz = mods.module_t.to_numpy()
    g = np.einsum("nij,nj->ni", detector.rotations[rows[has]], np.column_stack([lx, ly, lz]))
    out[has] = np.column_stack(
        [
            a.cell_count.to_numpy(),
            a.cell_val.to_numpy(),
            _eta_of(lx, ly, lz),
            np.arctan2(ly, lx),
            lx,
            ly,
            lz,
            _eta_of(g[:, 0], g[:, 1], g[:, 2]),
            np.arctan2(g[:, 1], g[:, 0]),
        ]
    ).astype(np.float32)
    return out


PAIR_FEATURES = ("dr", "dphi", "dz", "deta", "phi_slope", "z0")
# as scaled by pair_features, in order (an exported model's manifest names them)
PAIR_COLUMNS = ("dr / 100 mm", "dphi x 10", "dz / 100 mm", "deta x 10", "dphi/dr (rad/m) / 5", "z0 / 1000 mm")


def pair_features(pos: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(E, 6) float32 geometry of each hit pair (i -> j), scaled to order one: dr / 100 mm,
    wrapped dphi x 10, dz / 100 mm, d(eta of the position) x 10, dphi / dr (rad / m) / 5,
    z intercept at r = 0 (m).

    Each hit's r, phi and eta are computed once and gathered to its pairs (a PU200 graph
    has 40 pairs per hit): 0.16 s instead of 0.41 s for the 5M edges of one event, and
    the same numbers, bit for bit, as computing them per pair (tests/test_dataset.py)."""
    r = torch.hypot(pos[:, 0], pos[:, 1])
    phi = torch.atan2(pos[:, 1], pos[:, 0])
    eta = torch.asinh(pos[:, 2] / r.clamp_min(1e-3))
    i, j = edges[0], edges[1]
    ra, za = r[i], pos[i, 2]
    dr = r[j] - ra
    dphi = torch.remainder(phi[j] - phi[i] + torch.pi, 2 * torch.pi) - torch.pi
    dz = pos[j, 2] - za
    dr_safe = torch.where(dr.abs() > 1e-3, dr, torch.full_like(dr, 1e-3))
    z0 = (za - ra * dz / dr_safe).clamp(-3000, 3000)
    slope = (dphi / dr_safe * 1000).clamp(-20, 20)
    return torch.stack(
        [dr / 100, dphi * 10, dz / 100, (eta[j] - eta[i]) * 10, slope / 5, z0 / 1000], 1
    ).float()
