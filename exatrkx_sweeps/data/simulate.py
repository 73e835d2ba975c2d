"""A TrackML-faithful event generator (docs/physics.md sections 2-3).

Particles come from pile-up vertices (and an optional hard scatter) with the real
data's pT, eta, species and vertex distributions; a fraction are secondaries from
displaced vertices. Each charged particle is propagated as a helix in the measured
Bz(z) field, stepping in 3D path length; at every layer (and beam pipe / support tube)
it gets Highland multiple scattering and, optionally, ionisation energy loss. A hit is
made at every module-plane crossing inside the module's bounds (found by Newton's
method on the exact helix), so overlap duplicates arise by themselves. Particles stop
when their transverse radius starts to fall (no hits on the inward leg of a looper,
as in the real data). Positions are smeared with per-volume resolutions, cells come
from the track's path through the sensor on the pitch grid, and noise hits are spread
uniformly over modules. The result is an official-format :class:`~.trackml.Event`.

Everything is vectorised numpy; the only Python loop is over propagation steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .. import checks
from ..progress import progress as show_progress
from .geometry import (
    X0_BE_MM,
    X0_SI_MM,
    Detector,
    build_trackml_detector,
    bz_tesla,
    volume_family,
)
from .trackml import Event, write_detectors, write_event

C_LIGHT = 0.299792458  # GeV / (T m)
# Species: PDG code, mass (GeV), share (docs/physics.md section 3).
SPECIES_PDG = np.array([211, 2212, 321])
SPECIES_MASS = np.array([0.13957, 0.938272, 0.493677])
SPECIES_SHARE = np.array([0.79, 0.14, 0.07])
# Survival function of the particle pT spectrum, P(pT > x), through the real data's
# quantiles; above 5 GeV it continues as the same power law (~pT^-2.3).
_PT_KNOTS_GEV = np.array([0.1, 0.36, 0.5, 1.0, 2.0, 5.0, 1000.0])
_PT_SURVIVAL = np.array([1.0, 0.5, 0.34, 0.11, 0.025, 0.003, 0.003 * (200.0) ** -2.31])
# Per-volume-family resolution in module coordinates (mm): (sigma_u, sigma_v).
RESOLUTION_MM = {"pixel": (0.010, 0.012), "short_strip": (0.017, 0.3), "long_strip": (0.024, 3.0)}
# Passive cylinders: (radius mm, thickness mm, X0 mm, dE/dx MeV/mm): beam pipe, support tube.
_PASSIVE = ((19.0, 0.8, X0_BE_MM, 0.295), (200.0, 1.8, X0_BE_MM, 0.295))
_DEDX_SI_MEV_PER_MM = 0.388
_CHARGE_PER_MM = 1.5  # pixel cell value per mm of path in silicon
_R_OUTER_MM, _Z_OUTER_MM = 1100.0, 3100.0


@dataclass(frozen=True)
class SimulationConfig:
    """Physics knobs of the generator; defaults reproduce a real PU200 TrackML event.

    Each field carries its check, which is also the schema of ``data.simulation``."""

    mu: float = checks.field(200.0, checks.POSITIVE)  # mean number of pile-up interactions
    hard_scatter: bool = checks.field(True, checks.boolean())  # add a hard (ttbar-like) interaction
    # charged particles per vertex, pT > pt_min, |eta| < eta_max
    particles_per_vertex: float = checks.field(52.0, checks.POSITIVE)
    hard_scatter_particles: float = checks.field(120.0, checks.number(0))
    pt_min_gev: float = checks.field(0.1, checks.POSITIVE)
    eta_max: float = checks.field(4.0, checks.number(0, 6, lo_open=True))
    # share of particles from displaced vertices
    secondary_fraction: float = checks.field(0.3, checks.FRACTION)
    secondary_r_max_mm: float = checks.field(600.0, checks.POSITIVE)
    sigma_z_mm: float = checks.field(55.0, checks.number(0))
    sigma_xy_mm: float = checks.field(0.015, checks.number(0))
    noise_share: float = checks.field(0.15, checks.number(0, 0.99))  # noise hits / all hits
    multiple_scattering: bool = checks.field(True, checks.boolean())
    energy_loss: bool = checks.field(True, checks.boolean())
    step_mm: float = checks.field(10.0, checks.number(0, 50, lo_open=True))
    max_steps: int = checks.field(1000, checks.integer(1))

    def __post_init__(self) -> None:
        checks.check_fields(self, "simulation")


# ---------------------------------------------------------------- particles ----


def sample_pt(rng: np.random.Generator, n: int, pt_min: float = 0.1) -> np.ndarray:
    """pT (GeV) from the real data's spectrum, truncated below ``pt_min``."""
    log_s = np.log(_PT_SURVIVAL)
    s_min = np.exp(np.interp(np.log(pt_min), np.log(_PT_KNOTS_GEV), log_s))
    u = np.log(rng.uniform(_PT_SURVIVAL[-1], s_min, n))  # inverse-CDF sampling
    return np.exp(np.interp(u, log_s[::-1], np.log(_PT_KNOTS_GEV)[::-1]))


def sample_eta(rng: np.random.Generator, n: int, eta_max: float = 4.0) -> np.ndarray:
    """eta with density ~ 550 + 750 exp(-eta^2/2) per 0.5 unit: a central peak on a plateau."""
    gauss_weight = 1500.0 * np.sqrt(2 * np.pi)
    flat_weight = 1100.0 * 2 * eta_max
    central = rng.uniform(size=n) < gauss_weight / (gauss_weight + flat_weight)
    eta = rng.uniform(-eta_max, eta_max, n)
    g = rng.normal(0.0, 1.0, central.sum())
    g = np.where(np.abs(g) < eta_max, g, rng.uniform(-eta_max, eta_max, g.size))
    eta[central] = g
    return eta


def generate_particles(cfg: SimulationConfig, rng: np.random.Generator) -> pd.DataFrame:
    """The particles of one event (official columns plus 'pt', 'eta', 'mass', 'secondary')."""
    n_pu = max(int(rng.poisson(cfg.mu)), 1)
    n_vtx = n_pu + int(cfg.hard_scatter)
    vtx = np.column_stack(
        [
            rng.normal(0, cfg.sigma_xy_mm, n_vtx),
            rng.normal(0, cfg.sigma_xy_mm, n_vtx),
            rng.normal(0, cfg.sigma_z_mm, n_vtx),
        ]
    )
    counts = rng.poisson(cfg.particles_per_vertex, n_vtx)
    if cfg.hard_scatter:
        counts[0] = rng.poisson(cfg.hard_scatter_particles)
    vertex = np.repeat(np.arange(n_vtx), counts)
    n = vertex.size
    pt = sample_pt(rng, n, cfg.pt_min_gev)
    eta = sample_eta(rng, n, cfg.eta_max)
    if cfg.hard_scatter:  # harder, more central spectrum for the hard interaction
        hs = vertex == 0
        pt[hs] = cfg.pt_min_gev * 5 * rng.pareto(1.5, hs.sum()) + 0.5
        eta[hs] = np.clip(rng.normal(0, 1.5, hs.sum()), -cfg.eta_max, cfg.eta_max)
    phi = rng.uniform(-np.pi, np.pi, n)
    species = rng.choice(3, n, p=SPECIES_SHARE)
    q = rng.choice(np.array([-1, 1]), n)
    pos = vtx[vertex].copy()
    secondary = rng.uniform(size=n) < cfg.secondary_fraction
    n_sec = int(secondary.sum())
    if n_sec:
        # Displaced production: along a direction near the particle's own (a parent's).
        r_prod = rng.uniform(1.0, cfg.secondary_r_max_mm, n_sec)
        dphi = phi[secondary] + rng.normal(0, 0.2, n_sec)
        pos[secondary, 0] += r_prod * np.cos(dphi)
        pos[secondary, 1] += r_prod * np.sin(dphi)
        pos[secondary, 2] += r_prod * np.sinh(eta[secondary])
    # TrackML ids: vertex in bits 52+, primary number in bits 36-51, secondary in 0-35.
    primary_number = np.arange(n) - np.concatenate([[0], np.cumsum(counts)])[vertex] + 1
    pid = (
        ((vertex.astype(np.int64) + 1) << 52)
        | (primary_number.astype(np.int64) << 36)
        | secondary.astype(np.int64)
    )
    pz = pt * np.sinh(eta)
    return pd.DataFrame(
        {
            "particle_id": pid,
            "particle_type": SPECIES_PDG[species] * q,
            "vx": pos[:, 0],
            "vy": pos[:, 1],
            "vz": pos[:, 2],
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": pz,
            "q": q.astype(np.int64),
            "nhits": np.zeros(n, np.int64),
            "pt": pt,
            "eta": eta,
            "mass": SPECIES_MASS[species],
            "secondary": secondary,
        }
    )


# -------------------------------------------------------------- propagation ----


def _helix(pos, d, omega, s):
    """Point and unit direction at 3D path length ``s`` along a helix in uniform Bz.

    pos, d: (n, 3); omega: (n,) signed transverse curvature (1/mm); s: (n,) mm."""
    sin_t = np.hypot(d[:, 0], d[:, 1])
    phi0 = np.arctan2(d[:, 1], d[:, 0])
    phi1 = phi0 + omega * s * sin_t
    x = pos[:, 0] + (np.sin(phi1) - np.sin(phi0)) / omega
    y = pos[:, 1] - (np.cos(phi1) - np.cos(phi0)) / omega
    z = pos[:, 2] + s * d[:, 2]
    direction = np.column_stack([sin_t * np.cos(phi1), sin_t * np.sin(phi1), d[:, 2]])
    return np.column_stack([x, y, z]), direction


def _omega(q, pt, z):
    """Signed transverse curvature (1/mm); positive particles bend clockwise in +Bz."""
    return -q * C_LIGHT * bz_tesla(z) / (pt * 1000.0)


def _scatter(rng, d, p, beta, x_over_x0):
    """Rotate directions by Highland multiple-scattering angles."""
    x_over_x0 = np.maximum(x_over_x0, 1e-6)
    theta0 = 0.0136 / (beta * p) * np.sqrt(x_over_x0) * (1 + 0.038 * np.log(x_over_x0 / beta**2))
    theta0 = np.maximum(theta0, 0.0)
    axis = np.where(np.abs(d[:, 2:3]) < 0.99, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0, 0]]))
    e1 = np.cross(d, axis)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    a = rng.normal(size=(len(d), 2)) * theta0[:, None]
    out = d + a[:, :1] * e1 + a[:, 1:] * e2
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class _Surfaces:
    """Nominal surfaces the stepper watches: cylinders (barrel layers, passive tubes)
    and disk planes (endcap layers grouped by |z|)."""

    cyl_r: np.ndarray
    cyl_zmax: np.ndarray
    cyl_layer: np.ndarray  # row of Detector.layers, -1 for passive material
    cyl_x0: np.ndarray  # thickness / X0
    cyl_dedx: np.ndarray  # MeV lost at normal incidence
    disk_z: np.ndarray  # sorted plane positions
    disk_layers: list[np.ndarray]  # per plane: rows of Detector.layers
    layer_rmin: np.ndarray
    layer_rmax: np.ndarray
    layer_x0: np.ndarray
    layer_dedx: np.ndarray

    @classmethod
    def from_detector(cls, det: Detector) -> _Surfaces:
        L = det.layers
        layer_x0 = (L.material_si_mm / X0_SI_MM).to_numpy()
        layer_dedx = (L.material_si_mm * _DEDX_SI_MEV_PER_MM).to_numpy()
        barrel = L.barrel.to_numpy()
        rows = np.flatnonzero(barrel)
        cyl = [
            (L.r_mean[i], max(abs(L.z_min[i]), abs(L.z_max[i])) + L.half[i], i, layer_x0[i], layer_dedx[i])
            for i in rows
        ]
        cyl += [(r, _Z_OUTER_MM, -1, t / x0, t * dedx) for r, t, x0, dedx in _PASSIVE]
        cyl.sort()
        disks = np.flatnonzero(~barrel)
        zkey = np.round(L.z_mean.to_numpy()[disks], -1)
        planes = np.unique(zkey)
        return cls(
            cyl_r=np.array([c[0] for c in cyl]),
            cyl_zmax=np.array([c[1] for c in cyl]),
            cyl_layer=np.array([c[2] for c in cyl]),
            cyl_x0=np.array([c[3] for c in cyl]),
            cyl_dedx=np.array([c[4] for c in cyl]),
            disk_z=planes,
            disk_layers=[disks[zkey == z] for z in planes],
            layer_rmin=(L.r_min - L.half).to_numpy(),
            layer_rmax=(L.r_max + L.half).to_numpy(),
            layer_x0=layer_x0,
            layer_dedx=layer_dedx,
        )


def _propagate(cfg, rng, surf: _Surfaces, particles: pd.DataFrame) -> dict[str, np.ndarray]:
    """Step every particle through the detector; return its layer crossings (the helix
    state at the start of the step in which it crossed, and the nominal path length)."""
    pos = particles[["vx", "vy", "vz"]].to_numpy(float).copy()
    d = particles[["px", "py", "pz"]].to_numpy(float)
    p = np.linalg.norm(d, axis=1)
    d = d / p[:, None]
    q = particles.q.to_numpy().astype(float)
    mass = particles.mass.to_numpy()
    alive = np.arange(len(particles))
    path = np.zeros(len(particles))
    rec: dict[str, list] = {k: [] for k in _RECORD_KEYS}
    ds = cfg.step_mm

    for _ in range(cfg.max_steps):
        if alive.size == 0:
            break
        P, D, pp, qq = pos[alive], d[alive], p[alive], q[alive]
        pt = pp * np.hypot(D[:, 0], D[:, 1])
        omega = _omega(qq, np.maximum(pt, 1e-4), P[:, 2])
        P1, D1 = _helix(P, D, omega, np.full(alive.size, ds))
        step = _Step(P, D, P1, D1, omega, pp, alive, path[alive], np.zeros(alive.size), np.zeros(alive.size))
        _cross_cylinders(surf, step, ds, rec)
        _cross_disks(surf, step, rec)
        _material(cfg, rng, step, mass[alive])
        pos[alive], d[alive], p[alive] = P1, step.D1, step.p
        path[alive] += ds
        pt_new = step.p * np.hypot(step.D1[:, 0], step.D1[:, 1])
        keep = (step.r1 >= step.r0) & (step.r1 < _R_OUTER_MM) & (np.abs(P1[:, 2]) < _Z_OUTER_MM)
        alive = alive[keep & (pt_new > 0.02)]

    out = {
        k: np.concatenate(v) if v else np.zeros((0, 3) if k in ("pos", "d") else 0) for k, v in rec.items()
    }
    out["particle"] = out["particle"].astype(np.int64)
    out["layer"] = out["layer"].astype(np.int64)
    return out


@dataclass
class _Step:
    """One propagation step of the particles still alive: the helix state at its start
    (P, D) and end (P1, D1), and the material it crossed (x0 in radiation lengths' mm,
    dedx in MeV), filled in by the crossing searches."""

    P: np.ndarray
    D: np.ndarray
    P1: np.ndarray
    D1: np.ndarray
    omega: np.ndarray
    p: np.ndarray
    alive: np.ndarray  # particle indices
    path: np.ndarray  # path length at the start of the step
    x0: np.ndarray
    dedx: np.ndarray

    @cached_property
    def r0(self) -> np.ndarray:
        return np.hypot(self.P[:, 0], self.P[:, 1])

    @cached_property
    def r1(self) -> np.ndarray:
        return np.hypot(self.P1[:, 0], self.P1[:, 1])

    def record(self, rec: dict[str, list], i: np.ndarray, layer: np.ndarray, s_guess: np.ndarray) -> None:
        state = (self.P[i], self.D[i], self.omega[i], self.path[i], self.p[i])
        _record(rec, self.alive[i], layer, s_guess, *state)


def _cross_cylinders(surf: _Surfaces, st: _Step, ds: float, rec: dict[str, list]) -> None:
    """Cylinders crossed outward in the step (r0 < R <= r1): material, and the active
    layers' crossings recorded."""
    r0, r1 = st.r0, st.r1
    i0 = np.searchsorted(surf.cyl_r, r0, side="left")
    i1 = np.searchsorted(surf.cyl_r, r1, side="left")
    hit = np.flatnonzero(i1 > i0)
    if not hit.size:
        return
    k = i0[hit]
    s_guess = ds * (surf.cyl_r[k] - r0[hit]) / np.maximum(r1[hit] - r0[hit], 1e-9)
    zc = st.P[hit, 2] + s_guess * st.D[hit, 2]
    inside = np.abs(zc) <= surf.cyl_zmax[k]
    hit, k, s_guess = hit[inside], k[inside], s_guess[inside]
    D1, P1 = st.D1, st.P1
    cos_inc = np.abs(D1[hit, 0] * P1[hit, 0] + D1[hit, 1] * P1[hit, 1]) / np.maximum(r1[hit], 1e-9)
    cos_inc = np.maximum(cos_inc, 0.05)
    st.x0[hit] += surf.cyl_x0[k] / cos_inc
    st.dedx[hit] += surf.cyl_dedx[k] / cos_inc
    layer = surf.cyl_layer[k]
    active = layer >= 0
    st.record(rec, hit[active], layer[active], s_guess[active])


def _cross_disks(surf: _Surfaces, st: _Step, rec: dict[str, list]) -> None:
    """Disk planes crossed in the step (either direction): material, and the crossings
    of the disk layers whose radial range holds the step recorded."""
    j0 = np.searchsorted(surf.disk_z, st.P[:, 2], side="right")
    j1 = np.searchsorted(surf.disk_z, st.P1[:, 2], side="right")
    hit = np.flatnonzero(j1 != j0)
    if not hit.size:
        return
    plane = np.where(j1[hit] > j0[hit], j0[hit], j0[hit] - 1)
    plane = np.clip(plane, 0, len(surf.disk_z) - 1)
    s_guess = (surf.disk_z[plane] - st.P[hit, 2]) / st.D[hit, 2]
    rc = 0.5 * (st.r0[hit] + st.r1[hit])
    layer = np.full(hit.size, -1)
    for pl in np.unique(plane):
        sel = plane == pl
        for li in surf.disk_layers[pl]:
            layer[sel & (rc >= surf.layer_rmin[li]) & (rc <= surf.layer_rmax[li])] = li
    ok = layer >= 0
    hit, layer, s_guess = hit[ok], layer[ok], s_guess[ok]
    cos_inc = np.maximum(np.abs(st.D1[hit, 2]), 0.05)
    st.x0[hit] += surf.layer_x0[layer] / cos_inc
    st.dedx[hit] += surf.layer_dedx[layer] / cos_inc
    st.record(rec, hit, layer, s_guess)


def _material(cfg, rng, st: _Step, mass: np.ndarray) -> None:
    """Energy loss and multiple scattering at the end of the step, where material was crossed."""
    mat = np.flatnonzero(st.x0 > 0)
    if not mat.size:
        return
    energy = np.sqrt(st.p[mat] ** 2 + mass[mat] ** 2)
    if cfg.energy_loss:
        energy = np.maximum(energy - st.dedx[mat] * 1e-3, mass[mat] * 1.0001)
        st.p[mat] = np.sqrt(energy**2 - mass[mat] ** 2)
    if cfg.multiple_scattering:
        beta = st.p[mat] / energy
        st.D1[mat] = _scatter(rng, st.D1[mat], st.p[mat], beta, st.x0[mat])


_RECORD_KEYS = ("particle", "layer", "s", "pos", "d", "omega", "path", "p")


def _record(rec, *values):
    for key, val in zip(_RECORD_KEYS, values, strict=True):
        rec[key].append(val)


# ------------------------------------------------------------ module hits ----


class _ModuleIndex:
    """Per-layer KD-trees over module centres, to find the modules near a point."""

    K = 8

    def __init__(self, det: Detector):
        self.det = det
        li = det.layer_index
        self.rows = [np.flatnonzero(li == i) for i in range(len(det.layers))]
        self.trees = [cKDTree(det.centres[r]) for r in self.rows]
        m = det.modules
        self.reach = np.hypot(np.maximum(m.module_maxhu, m.module_minhu), m.module_hv).to_numpy() + 15.0

    def candidates(self, layer: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (index into points, module row) with the module centre within reach."""
        pairs_i, pairs_m = [], []
        for li in np.unique(layer):
            sel = np.flatnonzero(layer == li)
            k = min(self.K, len(self.rows[li]))
            dist, idx = self.trees[li].query(points[sel], k=k)
            dist, idx = dist.reshape(len(sel), k), idx.reshape(len(sel), k)
            mod = self.rows[li][idx]
            near = dist <= self.reach[mod]
            pairs_i.append(np.repeat(sel, k).reshape(len(sel), k)[near])
            pairs_m.append(mod[near])
        if not pairs_i:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(pairs_i), np.concatenate(pairs_m)


def _module_hits(det: Detector, index: _ModuleIndex, cross: dict[str, np.ndarray], step_mm: float):
    """Intersect each crossing's helix with the planes of nearby modules of its layer."""
    approx = cross["pos"] + cross["s"][:, None] * cross["d"]
    ci, mod = index.candidates(cross["layer"], approx)
    pos, d, omega = cross["pos"][ci], cross["d"][ci], cross["omega"][ci]
    c = det.centres[mod]
    rot = det.rotations[mod]
    n = rot[:, :, 2]
    s = cross["s"][ci].copy()
    for _ in range(5):  # Newton on f(s) = n . (h(s) - c)
        h, hd = _helix(pos, d, omega, s)
        f = np.einsum("ij,ij->i", n, h - c)
        fp = np.einsum("ij,ij->i", n, hd)
        s = s - f / np.where(np.abs(fp) > 1e-6, fp, 1e-6)
    h, hd = _helix(pos, d, omega, s)
    local = np.einsum("ikj,ik->ij", rot, h - c)  # R^T (h - c)
    m = det.modules
    hv = m.module_hv.to_numpy()[mod]
    minhu, maxhu = m.module_minhu.to_numpy()[mod], m.module_maxhu.to_numpy()[mod]
    half_u = minhu + (maxhu - minhu) * (local[:, 1] + hv) / (2 * hv)
    turn = np.abs(omega * s * np.hypot(d[:, 0], d[:, 1]))
    ok = (
        (np.abs(local[:, 2]) < 1e-3)
        & (np.abs(local[:, 1]) <= hv)
        & (np.abs(local[:, 0]) <= half_u)
        & (s > -3 * step_mm)
        & (s < 4 * step_mm)
        & (turn < np.pi / 2)
    )
    return {
        "crossing": ci[ok],
        "module": mod[ok],
        "true_pos": h[ok],
        "dir": hd[ok],
        "local": local[ok, :2],
        "path": cross["path"][ci[ok]] + s[ok],
        "p": cross["p"][ci[ok]],
    }


def _cells(rng, det: Detector, mod, local_true, local_dir, is_noise):
    """Cells along each hit's path through its sensor; returns (hit index, ch0, ch1, value)."""
    m = det.modules
    t = m.module_t.to_numpy()[mod]
    pu, pv = m.pitch_u.to_numpy()[mod], m.pitch_v.to_numpy()[mod]
    maxhu, hv = m.module_maxhu.to_numpy()[mod], m.module_hv.to_numpy()[mod]
    dw = np.maximum(np.abs(local_dir[:, 2]), 0.02)
    half = 0.5 * t / dw
    delta = local_dir[:, :2] * half[:, None]  # half the projected path on the (u, v) plane
    delta[is_noise] = rng.normal(0, 0.3, (is_noise.sum(), 2)) * np.column_stack([pu, pv])[is_noise]
    path_len = np.where(is_noise, t, 2 * half)
    span = np.maximum(np.abs(2 * delta[:, 0]) / pu, np.abs(2 * delta[:, 1]) / pv)  # in cells
    n_samples = np.clip(np.ceil(3 * span), 1, 200).astype(int) + 1
    hit = np.repeat(np.arange(len(mod)), n_samples)
    first = np.repeat(np.cumsum(n_samples) - n_samples, n_samples)
    frac = (np.arange(hit.size) - first + 0.5) / n_samples[hit] * 2 - 1  # in (-1, 1)
    u = local_true[hit, 0] + frac * delta[hit, 0]
    v = local_true[hit, 1] + frac * delta[hit, 1]
    n_u = np.ceil(2 * maxhu / pu).astype(np.int64)
    n_v = np.ceil(2 * hv / pv).astype(np.int64)
    ch0 = np.clip(np.floor((u + maxhu[hit]) / pu[hit]).astype(np.int64), 0, n_u[hit] - 1)
    ch1 = np.clip(np.floor((v + hv[hit]) / pv[hit]).astype(np.int64), 0, n_v[hit] - 1)
    key = (hit.astype(np.int64) << 24) | (ch0 << 12) | ch1
    ukey, counts = np.unique(key, return_counts=True)
    chit = (ukey >> 24).astype(np.int64)
    pixel = volume_family(m.volume_id.to_numpy()[mod]) == "pixel"
    charge = counts / n_samples[chit] * path_len[chit] * _CHARGE_PER_MM
    charge *= rng.gamma(8.0, 1 / 8.0, chit.size)  # Landau-like fluctuation of the deposit
    value = np.where(pixel[chit], charge, 1.0)
    return chit, (ukey >> 12) & 0xFFF, ukey & 0xFFF, value


# ------------------------------------------------------------------- truth ----


def trackml_weights(particle_index, order, n_hits_of_particle, pt, noise) -> np.ndarray:
    """TrackML hit weights: order weight (first and last hits count most) times pT weight
    (0.2 below 0.5 GeV rising linearly to 1 at 3 GeV), zero for noise and for particles
    with fewer than 4 hits, normalised to sum 1."""
    from_end = n_hits_of_particle - 1 - order
    ends = np.array([10.0, 8.0, 6.0, 5.0])
    w_order = np.maximum(
        np.where(order < 4, ends[np.minimum(order, 3)], 3.0),
        np.where(from_end < 4, ends[np.minimum(from_end, 3)], 3.0),
    )
    w_pt = np.clip(0.2 + 0.8 * (pt - 0.5) / 2.5, 0.2, 1.0)
    w = w_order * w_pt
    w[noise | (n_hits_of_particle < 4)] = 0.0
    total = w.sum()
    return w / total if total > 0 else w


# ------------------------------------------------------------------- event ----


def simulate_event(
    cfg: SimulationConfig | None = None,
    seed: int = 0,
    event_id: int = 0,
    detector: Detector | None = None,
) -> Event:
    """One event in the official TrackML format, deterministic for (seed, event_id)."""
    cfg = cfg or SimulationConfig()
    det = detector or default_detector()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(event_id)]))
    particles = generate_particles(cfg, rng)
    surf, index = _cached_surfaces(det)
    cross = _propagate(cfg, rng, surf, particles)
    sig = _module_hits(det, index, cross, cfg.step_mm)
    pidx = cross["particle"][sig["crossing"]]
    n_sig = len(pidx)
    nmod, noise_local = _noise_hits(cfg, rng, det, n_sig)
    n_noise = len(nmod)
    mod = np.concatenate([sig["module"], nmod])
    local_true = np.concatenate([sig["local"], noise_local])
    rot = det.rotations[mod]
    dir_local = np.einsum("ikj,ik->ij", rot[:n_sig], sig["dir"])
    dir_local = np.concatenate([dir_local, np.tile([0.0, 0.0, 1.0], (n_noise, 1))])
    noise = np.arange(n_sig + n_noise) >= n_sig
    xyz = _measured(rng, det, mod, local_true, noise)

    # truth: ids, true positions and momenta, and weights from the order along each path
    pid_all = np.concatenate([particles.particle_id.to_numpy()[pidx], np.zeros(n_noise, np.int64)])
    part_all = np.concatenate([pidx, np.full(n_noise, -1)])
    order, nh = _order_along_path(particles, pidx, sig["path"], n_noise)
    pt_all = np.concatenate([particles.pt.to_numpy()[pidx], np.zeros(n_noise)])
    weight = trackml_weights(part_all, order, nh, pt_all, noise)
    true_pos = np.concatenate([sig["true_pos"], xyz[n_sig:]])
    mom = np.concatenate([sig["dir"] * sig["p"][:, None], np.zeros((n_noise, 3))])
    if n_noise:
        mom[n_sig:] = xyz[n_sig:] / np.linalg.norm(xyz[n_sig:], axis=1, keepdims=True) * 1e6

    # official row order: sorted by volume, layer, module; random inside a module
    m = det.modules
    vol, lay, mid = (m[c].to_numpy()[mod] for c in ("volume_id", "layer_id", "module_id"))
    srt = np.lexsort((rng.uniform(size=mod.size), mid, lay, vol))
    hit_id = np.empty(mod.size, np.int64)
    hit_id[srt] = np.arange(1, mod.size + 1)
    hits = pd.DataFrame(
        {"hit_id": hit_id, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
        | {"volume_id": vol, "layer_id": lay, "module_id": mid}
    )
    truth = pd.DataFrame(
        {"hit_id": hit_id, "particle_id": pid_all}
        | {f"t{a}": true_pos[:, i] for i, a in enumerate("xyz")}
        | {f"tp{a}": mom[:, i] for i, a in enumerate("xyz")}
        | {"weight": weight}
    )
    chit, ch0, ch1, value = _cells(rng, det, mod, local_true, dir_local, noise)
    cells = pd.DataFrame({"hit_id": hit_id[chit], "ch0": ch0, "ch1": ch1, "value": value})
    cells = cells.sort_values(["hit_id", "ch0", "ch1"], kind="stable").reset_index(drop=True)
    official = particles[["particle_id", "particle_type", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits"]]
    return Event(
        int(event_id),
        hits.iloc[srt].reset_index(drop=True),
        official.copy(),
        truth.iloc[srt].reset_index(drop=True),
        cells,
    )


def _noise_hits(cfg: SimulationConfig, rng, det: Detector, n_sig: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise hits uniform over the modules, at the nominal share of all hits: their
    module rows and (u, v) positions on the module."""
    n_noise = int(rng.poisson(cfg.noise_share / (1 - cfg.noise_share) * n_sig)) if n_sig else 0
    nmod = rng.integers(0, len(det), n_noise)
    m = det.modules
    hv, minhu, maxhu = (m[c].to_numpy()[nmod] for c in ("module_hv", "module_minhu", "module_maxhu"))
    nv = rng.uniform(-1, 1, n_noise) * hv
    nu = rng.uniform(-1, 1, n_noise) * (minhu + (maxhu - minhu) * (nv + hv) / (2 * hv))
    return nmod, np.column_stack([nu, nv])


def _measured(rng, det: Detector, mod: np.ndarray, local_true: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Measured global positions: true (u, v) smeared by the volume's resolution, kept
    inside the module (noise hits are not smeared)."""
    m = det.modules
    fam = volume_family(m.volume_id.to_numpy()[mod])
    sig_u = np.select([fam == k for k in RESOLUTION_MM], [v[0] for v in RESOLUTION_MM.values()])
    sig_v = np.select([fam == k for k in RESOLUTION_MM], [v[1] for v in RESOLUTION_MM.values()])
    hv_all = m.module_hv.to_numpy()[mod]
    meas = local_true + rng.normal(size=local_true.shape) * np.column_stack([sig_u, sig_v])
    meas[:, 1] = np.clip(meas[:, 1], -hv_all, hv_all)
    meas[noise] = local_true[noise]
    rot = det.rotations[mod]
    return det.centres[mod] + rot[:, :, 0] * meas[:, :1] + rot[:, :, 1] * meas[:, 1:2]


def _order_along_path(particles: pd.DataFrame, pidx: np.ndarray, path: np.ndarray, n_noise: int):
    """Each hit's rank along its particle's path and its particle's hit count (0 for
    noise); sets the particles' ``nhits``."""
    n_sig = len(pidx)
    order = np.zeros(n_sig + n_noise, np.int64)
    nh = np.zeros(n_sig + n_noise, np.int64)
    if n_sig:
        srt = np.lexsort((path, pidx))
        counts = np.bincount(pidx, minlength=len(particles))
        starts = np.cumsum(counts) - counts
        order[srt] = np.arange(n_sig) - starts[pidx[srt]]
        nh[:n_sig] = counts[pidx]
        particles["nhits"] = counts
    return order, nh


_DEFAULT_DETECTOR: Detector | None = None


def default_detector() -> Detector:
    """The built-in TrackML detector (built once per process)."""
    global _DEFAULT_DETECTOR
    if _DEFAULT_DETECTOR is None:
        _DEFAULT_DETECTOR = build_trackml_detector()
    return _DEFAULT_DETECTOR


def _cached_surfaces(det: Detector) -> tuple[_Surfaces, _ModuleIndex]:
    """The detector's propagation surfaces and module index, built once per detector object."""
    cached = det.__dict__.get("_simulation_index")
    if cached is None:
        cached = det.__dict__["_simulation_index"] = (_Surfaces.from_detector(det), _ModuleIndex(det))
    return cached


def simulate_dataset(
    directory: str | Path,
    n_events: int,
    cfg: SimulationConfig | None = None,
    seed: int = 0,
    first_event: int = 1000,
    compress: bool = False,
    detector: Detector | None = None,
    progress: bool = False,
) -> list[int]:
    """Write ``n_events`` simulated events and ``detectors.csv`` to ``directory``."""
    det = detector or default_detector()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_detectors(directory / ("detectors.csv.gz" if compress else "detectors.csv"), det)
    ids = list(range(first_event, first_event + n_events))
    for event_id in show_progress(ids, "simulate", "event", enabled=progress, leave=True):
        write_event(directory, simulate_event(cfg, seed, event_id, det), compress=compress)
    return ids


__all__ = [
    "SimulationConfig",
    "default_detector",
    "generate_particles",
    "sample_eta",
    "sample_pt",
    "simulate_dataset",
    "simulate_event",
    "trackml_weights",
]
