"""Hough-transform edge features (``augment.hough``).

``params``: for every edge, the helix through the origin and both hits: transverse
curvature (1/m, signed; a pT estimate via pT = 0.3 B / kappa), its direction at the
origin phi0, and the r-z line through the two hits (polar angle and z intercept at
r = 0). ``votes``: the same parameters accumulated over all edges of the event into two
Hough histograms, (kappa, phi0) and (theta, z0); every edge also gets its two bins'
(log) vote counts, so edges on a common track candidate stand out.
"""

from __future__ import annotations

import math

import torch

from . import HOUGH_MODES as MODES

N_PARAMS = 5  # kappa/10, sin phi0, cos phi0, theta/pi, z0/1000 (m)
N_VOTES = 2
# the features' columns, in order, as an exported model's manifest names them
COLUMNS = {
    "none": (),
    "params": ("kappa (1/m) / 10", "sin phi0", "cos phi0", "theta / pi", "z0 / 1000 mm"),
}
COLUMNS["votes"] = (
    *COLUMNS["params"],
    "log votes of the (kappa, phi0) bin",
    "log votes of the (theta, z0) bin",
)
KAPPA_RANGE_PER_M = 15.0
Z0_RANGE_MM = 3000.0


def n_features(mode: str) -> int:
    if mode not in MODES:
        raise ValueError(f"augment.hough must be one of {MODES}, got {mode!r}.")
    return {"none": 0, "params": N_PARAMS, "votes": N_PARAMS + N_VOTES}[mode]


def helix_params(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """(E, 4): kappa (1/m), phi0 (rad), theta of the r-z line (rad), z0 (mm)."""
    a, b = pos[edge_index[0]].double(), pos[edge_index[1]].double()
    ra, rb = torch.hypot(a[:, 0], a[:, 1]), torch.hypot(b[:, 0], b[:, 1])
    chord = torch.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1])
    cross = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    kappa_mm = 2 * cross / (ra * rb * chord).clamp_min(1e-9)
    phi0 = torch.atan2(a[:, 1], a[:, 0]) - torch.asin((kappa_mm * ra / 2).clamp(-1, 1))
    dr, dz = rb - ra, b[:, 2] - a[:, 2]
    theta = torch.atan2(dr, dz)
    z0 = a[:, 2] - ra * dz / torch.where(dr.abs() > 1e-6, dr, torch.full_like(dr, 1e-6))
    return torch.stack([kappa_mm * 1000, phi0, theta, z0.clamp(-Z0_RANGE_MM, Z0_RANGE_MM)], 1).float()


def _votes(u: torch.Tensor, v: torch.Tensor, n_u: int, n_v: int) -> torch.Tensor:
    """Per entry, log(1 + count of its bin) in the 2-D histogram of (u, v) in [0, 1)^2."""
    iu = (u.clamp(0, 1 - 1e-6) * n_u).long()
    iv = (v.clamp(0, 1 - 1e-6) * n_v).long()
    flat = iu * n_v + iv
    counts = torch.bincount(flat, minlength=n_u * n_v)
    return torch.log1p(counts[flat].float())


def edge_features(pos: torch.Tensor, edge_index: torch.Tensor, mode: str) -> torch.Tensor | None:
    """(E, n_features(mode)) float32 features, or None for mode 'none'."""
    if n_features(mode) == 0:
        return None
    p = helix_params(pos, edge_index)
    kappa, phi0, theta, z0 = p.unbind(1)
    feats = [
        (kappa / 10).clamp(-2, 2),
        torch.sin(phi0),
        torch.cos(phi0),
        theta / math.pi,
        z0 / 1000,
    ]
    if mode == "votes":
        norm = math.log1p(max(edge_index.shape[1], 1))
        k = (kappa / KAPPA_RANGE_PER_M + 1) / 2
        f = (torch.remainder(phi0 + math.pi, 2 * math.pi)) / (2 * math.pi)
        feats.append(_votes(k, f, 48, 96) / norm)
        feats.append(_votes(theta / math.pi, (z0 / Z0_RANGE_MM + 1) / 2, 64, 32) / norm)
    return torch.stack(feats, 1)
