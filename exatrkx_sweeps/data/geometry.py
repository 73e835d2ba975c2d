"""The TrackML detector: module table, layers, material and magnetic field.

A :class:`Detector` is the module table of the official ``detectors.csv`` (one row per
module: centre, rotation, thickness, half-sizes, pitches) plus what the simulator needs
to know per layer (barrel or disk, nominal radius or z, material). It is built either
from the parameters of docs/physics.md section 2 (:func:`build_trackml_detector`) or from a
real ``detectors.csv`` (:func:`Detector.from_frame` via ``trackml.read_detectors``).

Conventions (read off the real file):

* global = R @ (u, v, w) + c, the columns of R are the local axes in global frame;
  ``rot_xu`` is row x, column u.
* barrel: v along +z, w (normal) is the radial direction turned by the stave tilt,
  u = (-sin a, cos a, 0) with a the normal's azimuth. Module ids run over z rings
  (from -z), then over staves in phi starting at phi = -pi + dphi / 2. Alternate z rings
  sit at r + stagger and r - stagger.
* disks: v is radial, w = +-z (pointing away from the interaction point), modules of
  all rings of a disk are numbered together in phi. Rings alternate in |z| by a
  fixed pattern around the disk's nominal |z|.
* units: mm, tesla.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

DETECTOR_COLUMNS = [
    "volume_id",
    "layer_id",
    "module_id",
    "cx",
    "cy",
    "cz",
    "rot_xu",
    "rot_xv",
    "rot_xw",
    "rot_yu",
    "rot_yv",
    "rot_yw",
    "rot_zu",
    "rot_zv",
    "rot_zw",
    "module_t",
    "module_minhu",
    "module_maxhu",
    "module_hv",
    "pitch_u",
    "pitch_v",
]

# Effective Bz (tesla) against |z| (mm), docs/physics.md section 2: value i holds for
# BZ_EDGES_MM[i] <= |z| < BZ_EDGES_MM[i + 1].
BZ_EDGES_MM = np.array([0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000])
BZ_TESLA = np.array([2.00, 1.98, 1.95, 1.92, 1.84, 1.71, 1.49, 0.99, 0.53, 0.46])

X0_SI_MM = 93.7
X0_BE_MM = 352.8

PIXEL_VOLUMES = (7, 8, 9)
SHORT_STRIP_VOLUMES = (12, 13, 14)
LONG_STRIP_VOLUMES = (16, 17, 18)
BARREL_VOLUMES = (8, 13, 17)


def bz_tesla(z_mm: np.ndarray) -> np.ndarray:
    """Effective solenoid field Bz (T) at longitudinal position ``z_mm`` (mm)."""
    idx = np.searchsorted(BZ_EDGES_MM, np.abs(z_mm), side="right") - 1
    return BZ_TESLA[np.clip(idx, 0, len(BZ_TESLA) - 1)]


def volume_family(volume_id: np.ndarray) -> np.ndarray:
    """'pixel', 'short_strip' or 'long_strip' for each volume id."""
    vol = np.asarray(volume_id)
    out = np.full(vol.shape, "long_strip", dtype=object)
    out[np.isin(vol, PIXEL_VOLUMES)] = "pixel"
    out[np.isin(vol, SHORT_STRIP_VOLUMES)] = "short_strip"
    return out


@dataclass(frozen=True)
class _Barrel:
    volume: int
    layers: tuple[int, ...]
    radii: tuple[float, ...]
    staves: tuple[int, ...]
    n_z: int
    z_step: float
    stagger: float
    tilt: float
    thickness: float
    hu: float
    hv: float
    pitch: tuple[float, float]


@dataclass(frozen=True)
class _Ring:
    radius: float
    n_phi: int
    dz_abs: tuple[float, ...]  # |z| offsets from the disk's nominal |z|, cycled in phi
    minhu: float
    maxhu: float


@dataclass(frozen=True)
class _Endcap:
    volumes: tuple[int, int]  # (-z volume, +z volume)
    z_abs: tuple[float, ...]  # disks from the interaction point outwards
    rings: tuple[_Ring, ...]
    thickness: float
    hv: float
    pitch: tuple[float, float]


# docs/physics.md section 2, with the ring staggers read off the real file.
_BARRELS = (
    _Barrel(
        8,
        (2, 4, 6, 8),
        (32, 72, 116, 172),
        (16, 32, 52, 78),
        14,
        70.0,
        0.25,
        0.14,
        0.15,
        8.4,
        36.0,
        (0.05, 0.05625),
    ),
    _Barrel(
        13,
        (2, 4, 6, 8),
        (260, 360, 500, 660),
        (40, 56, 78, 102),
        21,
        103.0,
        1.5,
        -0.15,
        0.25,
        24.0,
        54.0,
        (0.08, 1.2),
    ),
    _Barrel(17, (2, 4), (820, 1020), (120, 152), 21, 103.0, 1.5, -0.15, 0.35, 24.0, 54.0, (0.12, 10.8)),
)
_STRIP_DISKS_MM = (1220, 1500, 1800, 2150, 2550, 2950)
_ENDCAPS = (
    _Endcap(
        (7, 9),
        (600, 700, 820, 960, 1100, 1300, 1500),
        (_Ring(66, 40, (2.5, -2.0, 2.0, -2.5), 8.4, 8.4), _Ring(140, 68, (2.0, -2.0), 8.4, 8.4)),
        0.15,
        36.0,
        (0.05, 0.05625),
    ),
    _Endcap(
        (12, 14),
        _STRIP_DISKS_MM,
        (
            _Ring(318, 54, (-1.5, -4.5), 16.4, 24.2),
            _Ring(470, 56, (4.5, 1.5), 24.2, 32.2),
            _Ring(622, 60, (-1.5, -4.5), 32.2, 40.0),
        ),
        0.25,
        78.0,
        (0.08, 1.2),
    ),
    _Endcap(
        (16, 18),
        _STRIP_DISKS_MM,
        (_Ring(828, 48, (-2.5, -5.5), 54.0, 64.2), _Ring(942, 50, (5.5, 2.5), 66.0, 72.0)),
        0.35,
        78.0,
        (0.12, 10.4),
    ),
)

# Silicon-equivalent material per layer crossing (mm), docs/physics.md section 2.
_MATERIAL_SI_MM = {7: 1.5, 8: 1.5, 9: 1.5, 12: 2.5, 13: 2.0, 14: 2.5, 16: 3.5, 17: 2.5, 18: 3.5}


def _rows(volume, layer, cx, cy, cz, rot, t, minhu, maxhu, hv, pitch):
    n = len(cx)
    return pd.DataFrame(
        {
            "volume_id": np.full(n, volume, dtype=np.int64),
            "layer_id": np.full(n, layer, dtype=np.int64),
            "module_id": np.arange(1, n + 1, dtype=np.int64),
            "cx": cx,
            "cy": cy,
            "cz": cz,
            "rot_xu": rot[:, 0, 0],
            "rot_xv": rot[:, 0, 1],
            "rot_xw": rot[:, 0, 2],
            "rot_yu": rot[:, 1, 0],
            "rot_yv": rot[:, 1, 1],
            "rot_yw": rot[:, 1, 2],
            "rot_zu": rot[:, 2, 0],
            "rot_zv": rot[:, 2, 1],
            "rot_zw": rot[:, 2, 2],
            "module_t": np.full(n, t),
            "module_minhu": np.broadcast_to(minhu, n).astype(float),
            "module_maxhu": np.broadcast_to(maxhu, n).astype(float),
            "module_hv": np.full(n, hv),
            "pitch_u": np.full(n, pitch[0]),
            "pitch_v": np.full(n, pitch[1]),
        }
    )


def _barrel_layer(b: _Barrel, i: int) -> pd.DataFrame:
    n_phi = b.staves[i]
    dphi = 2 * np.pi / n_phi
    phi = -np.pi + (np.arange(n_phi) + 0.5) * dphi
    z = (np.arange(b.n_z) - (b.n_z - 1) / 2) * b.z_step
    r = b.radii[i] + np.where(np.arange(b.n_z) % 2 == 0, b.stagger, -b.stagger)
    phi_g, z_g = np.meshgrid(phi, z)  # z-major: ids run over phi inside each z ring
    r_g = np.broadcast_to(r[:, None], phi_g.shape)
    phi_g, z_g, r_g = phi_g.ravel(), z_g.ravel(), r_g.ravel()
    a = phi_g + b.tilt
    rot = np.zeros((len(a), 3, 3))
    rot[:, 0, 0], rot[:, 1, 0] = -np.sin(a), np.cos(a)  # u
    rot[:, 2, 1] = 1.0  # v = +z
    rot[:, 0, 2], rot[:, 1, 2] = np.cos(a), np.sin(a)  # w (normal)
    return _rows(
        b.volume,
        b.layers[i],
        r_g * np.cos(phi_g),
        r_g * np.sin(phi_g),
        z_g,
        rot,
        b.thickness,
        b.hu,
        b.hu,
        b.hv,
        b.pitch,
    )


def _endcap_disk(e: _Endcap, volume: int, layer: int, z_abs: float) -> pd.DataFrame:
    side = -1.0 if volume == e.volumes[0] else 1.0
    parts = []
    for ring in e.rings:
        dphi = 2 * np.pi / ring.n_phi
        phi = -np.pi + (np.arange(ring.n_phi) + 0.5) * dphi
        dz = np.resize(np.array(ring.dz_abs), ring.n_phi)
        parts.append(
            pd.DataFrame(
                {
                    "phi": phi,
                    "r": np.full(ring.n_phi, float(ring.radius)),
                    "z": side * (z_abs + dz),
                    "minhu": ring.minhu,
                    "maxhu": ring.maxhu,
                }
            )
        )
    m = pd.concat(parts, ignore_index=True)
    # All rings of a disk share one id sequence ordered in azimuth (by the phi of the
    # module's outer edge, which reproduces most of the real file's interleaving).
    m = m.iloc[np.argsort((m.phi - m.maxhu / m.r).to_numpy(), kind="stable")]
    phi = m.phi.to_numpy()
    c, s = np.cos(phi), np.sin(phi)
    rot = np.zeros((len(m), 3, 3))
    # v radial; w = side * z; u = v x w keeps the frame right-handed.
    rot[:, 0, 1], rot[:, 1, 1] = c, s
    rot[:, 2, 2] = side
    rot[:, 0, 0], rot[:, 1, 0] = side * s, -side * c
    r = m.r.to_numpy()
    return _rows(
        volume,
        layer,
        r * c,
        r * s,
        m.z.to_numpy(),
        rot,
        e.thickness,
        m.minhu.to_numpy(),
        m.maxhu.to_numpy(),
        e.hv,
        e.pitch,
    )


def build_trackml_detector() -> Detector:
    """The full TrackML detector (9 volumes, 48 layers, 18,728 modules) from docs/physics.md."""
    frames = []
    for e in _ENDCAPS[:1]:
        # -z pixel endcap: layer 2 is the disk farthest from the interaction point.
        n = len(e.z_abs)
        frames += [_endcap_disk(e, e.volumes[0], 2 + 2 * k, e.z_abs[n - 1 - k]) for k in range(n)]
    frames += [_barrel_layer(_BARRELS[0], i) for i in range(len(_BARRELS[0].layers))]
    frames += [_endcap_disk(_ENDCAPS[0], 9, 2 + 2 * k, z) for k, z in enumerate(_ENDCAPS[0].z_abs)]
    for b, e in zip(_BARRELS[1:], _ENDCAPS[1:], strict=True):
        n = len(e.z_abs)
        frames += [_endcap_disk(e, e.volumes[0], 2 + 2 * k, e.z_abs[n - 1 - k]) for k in range(n)]
        frames += [_barrel_layer(b, i) for i in range(len(b.layers))]
        frames += [_endcap_disk(e, e.volumes[1], 2 + 2 * k, z) for k, z in enumerate(e.z_abs)]
    return Detector.from_frame(pd.concat(frames, ignore_index=True))


@dataclass
class Detector:
    """Module table plus per-layer summaries. Build with :func:`build_trackml_detector`
    or :meth:`from_frame` (a ``detectors.csv`` already read into a DataFrame)."""

    modules: pd.DataFrame
    layers: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        m = self.modules
        r = np.hypot(m.cx, m.cy)
        barrel = np.abs(m.rot_zw.to_numpy()) < 0.5
        grouped = pd.DataFrame(
            {
                "volume_id": m.volume_id,
                "layer_id": m.layer_id,
                "barrel": barrel,
                "r": r,
                "z": m.cz,
                "abs_z": np.abs(m.cz),
                "half": np.maximum(m.module_maxhu, m.module_hv),
            }
        ).groupby(["volume_id", "layer_id"], sort=True)
        layers = grouped.agg(
            barrel=("barrel", "first"),
            r_mean=("r", "mean"),
            r_min=("r", "min"),
            r_max=("r", "max"),
            z_mean=("z", "mean"),
            z_min=("z", "min"),
            z_max=("z", "max"),
            half=("half", "max"),
            n_modules=("r", "size"),
        ).reset_index()
        layers["material_si_mm"] = layers.volume_id.map(_MATERIAL_SI_MM).fillna(2.0)
        self.layers = layers

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Detector:
        frame = frame[DETECTOR_COLUMNS].sort_values(["volume_id", "layer_id", "module_id"])
        return cls(frame.reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.modules)

    @cached_property
    def rotations(self) -> np.ndarray:
        """(N, 3, 3) local-to-global rotations; column k is local axis k (u, v, w)."""
        cols = ["rot_xu", "rot_xv", "rot_xw", "rot_yu", "rot_yv", "rot_yw", "rot_zu", "rot_zv", "rot_zw"]
        return self.modules[cols].to_numpy(float).reshape(-1, 3, 3)

    @cached_property
    def centres(self) -> np.ndarray:
        return self.modules[["cx", "cy", "cz"]].to_numpy(float)

    @cached_property
    def layer_index(self) -> np.ndarray:
        """Row of ``layers`` for every module."""
        keys = self.layers.volume_id.to_numpy() * 100 + self.layers.layer_id.to_numpy()
        mkeys = self.modules.volume_id.to_numpy() * 100 + self.modules.layer_id.to_numpy()
        return np.searchsorted(keys, mkeys)

    @cached_property
    def module_key(self) -> np.ndarray:
        """Sorted unique int64 key volume*10^9 + layer*10^6 + module of every module row."""
        return module_keys(self.modules.volume_id, self.modules.layer_id, self.modules.module_id)

    def module_rows(self, volume_id, layer_id, module_id) -> np.ndarray:
        """Row index of each (volume, layer, module); -1 where the detector lacks it."""
        keys = module_keys(volume_id, layer_id, module_id)
        idx = np.clip(np.searchsorted(self.module_key, keys), 0, len(self.module_key) - 1)
        return np.where(self.module_key[idx] == keys, idx, -1)


def module_keys(volume_id, layer_id, module_id) -> np.ndarray:
    return (
        np.asarray(volume_id, np.int64) * 1_000_000_000
        + np.asarray(layer_id, np.int64) * 1_000_000
        + np.asarray(module_id, np.int64)
    )
