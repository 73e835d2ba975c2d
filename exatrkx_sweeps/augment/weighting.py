"""Per-edge loss weights from hit importance (``augment.edge_weighting``).

A hit's importance s_i is its TrackML truth weight (which already up-weights the first
and last hits of a track and high-pT particles) divided by the mean weight of the
event's weighted hits, and zero for hits of secondaries produced away from the
interaction region (|z_vertex| > 165 mm or r_vertex > 2 mm). A true edge gets
w_ij = p (s_i + s_j) / 2, a false edge 1.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Data

SECONDARY_Z_MM = 165.0
SECONDARY_R_MM = 2.0


def hit_importance(data: Data) -> torch.Tensor:
    w = data.weight.clone().float()
    positive = w > 0
    if positive.any():
        w = w / w[positive].mean()
    secondary = (data.vz.abs() > SECONDARY_Z_MM) | (data.vr > SECONDARY_R_MM)
    w[secondary] = 0.0
    return w


def edge_weights(data: Data, edge_index: torch.Tensor, y: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    s = hit_importance(data)
    true_w = p * (s[edge_index[0]] + s[edge_index[1]]) / 2
    return torch.where(y.bool(), true_w, torch.ones_like(true_w))
