"""Random reflections of a training event (``augment.reflect``: any of x, y, z,
beamline).

Each listed reflection is applied with probability 1/2 per event and epoch: hit
positions, the node features (r, phi, z) and the global cell-shape angles follow.
``beamline`` flips x and y together: a turn by pi about the beam axis, which maps the
detector onto itself, every barrel module onto one tilted the same way (the stave
tilt), and keeps each track's charge. A single x or y reflection does not: it mirrors
the barrel's tilted staves, so the reflected event comes from a detector whose staves
tilt the other way, and a network learns two detectors at once: most likely through the
cluster shapes (``use_cells``, whose size across a module follows the track's angle to
the tilted module), which were not told apart from the hit positions. At pile-up 200
the filter trained without reflections keeps 93.9% of
the validation event's true edges and 77.6% of its x-reflected copy's; trained with
``[x, y]`` its validation efficiency swung between 78% and 93% from epoch to epoch and
ended at 92.6% (at 6.8 edges per hit, against 93.9% at 5.9 unreflected; docs/pu200.md,
"Reflections"). The seed used x and y reflections, with x and y symmetries of the
detector up to the charge sign; a z reflection is not a symmetry of the vertex and
material layout seen by the network, and the seed found it destroys performance, so a
study can show it.
"""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data

_GETA, _GPHI = 7, 8  # columns of the cell features


def reflect(data: Data, flip: dict[str, bool]) -> Data:
    """A copy of ``data`` with the reflections marked True in ``flip`` (keys as in
    ``augment.reflect``) applied; ``data`` itself where they cancel."""
    turn = bool(flip.get("beamline"))  # x and y flipped together
    sign = torch.tensor(
        [
            -1.0 if bool(flip.get("x")) != turn else 1.0,
            -1.0 if bool(flip.get("y")) != turn else 1.0,
            -1.0 if flip.get("z") else 1.0,
        ]
    )
    if bool((sign > 0).all()):  # none, or x, y and beamline, which cancel
        return data
    out = data.clone()
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
