"""Random reflections of a training event (``augment.reflect``: any of x, y, z).

Each listed axis is flipped with probability 1/2 per event and epoch: hit positions,
the node features (r, phi, z) and the global cell-shape angles follow. x and y
reflections are symmetries of the detector up to the charge sign; a z reflection is
not a symmetry of the vertex and material layout seen by the network, and the seed
found it destroys performance, so a study can show it.
"""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data

from . import REFLECT_AXES as AXES

_GETA, _GPHI = 7, 8  # columns of the cell features


def reflect(data: Data, flip: dict[str, bool]) -> Data:
    """A copy of ``data`` with the axes marked True in ``flip`` reflected."""
    if not any(flip.values()):
        return data
    out = data.clone()
    sign = torch.tensor([-1.0 if flip.get(a) else 1.0 for a in AXES])
    out.pos = data.pos * sign
    r = torch.hypot(out.pos[:, 0], out.pos[:, 1])
    out.x = torch.stack(
        [r / 1000, torch.atan2(out.pos[:, 1], out.pos[:, 0]) / math.pi, out.pos[:, 2] / 1000], 1
    )
    if data.cell is not None and data.cell.shape[1] > _GPHI:
        cell = data.cell.clone()
        gphi = cell[:, _GPHI]
        gx, gy = torch.cos(gphi) * sign[0], torch.sin(gphi) * sign[1]
        cell[:, _GPHI] = torch.atan2(gy, gx)
        cell[:, _GETA] = cell[:, _GETA] * sign[2]
        out.cell = cell
    return out


def random_reflect(data: Data, axes: tuple[str, ...], generator: torch.Generator) -> Data:
    if not axes:
        return data
    coins = torch.rand(len(axes), generator=generator) < 0.5
    return reflect(data, {a: bool(c) for a, c in zip(axes, coins, strict=True)})
