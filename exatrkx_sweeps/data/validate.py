"""Simulator validation against the real-data figures of docs/physics.md section 3.

    python -m exatrkx_sweeps.data.validate [--events 3] [--mu 200] [--seed 0]

prints, per figure, the simulated value (mean over events) beside the reference and
its tolerance. :func:`validation_figures` computes the same figures for any events,
simulated or read from real TrackML files.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .geometry import volume_family
from .simulate import SimulationConfig, default_detector, simulate_event
from .trackml import Event


@dataclass(frozen=True)
class Reference:
    value: float
    tolerance: float  # absolute
    scales_with_mu: bool = False  # figure given for mu = 200


# docs/physics.md section 3, with the tolerances the test and the table apply.
REFERENCE: dict[str, Reference] = {
    "hits_per_event": Reference(117_500, 20_000, scales_with_mu=True),
    "particles_per_event": Reference(11_000, 2_000, scales_with_mu=True),
    "particles_per_half_eta_central": Reference(1300, 250, scales_with_mu=True),
    "particles_per_half_eta_forward": Reference(550, 120, scales_with_mu=True),
    "noise_fraction": Reference(0.15, 0.02),
    "duplicate_fraction": Reference(0.24, 0.08),
    "duplicate_fraction_pixel_barrel": Reference(0.19, 0.08),
    "duplicate_fraction_pixel_endcap": Reference(0.38, 0.12),
    "duplicate_fraction_short_strip_barrel": Reference(0.21, 0.08),
    "duplicate_fraction_short_strip_endcap": Reference(0.09, 0.08),
    "duplicate_fraction_long_strip": Reference(0.21, 0.10),
    "median_hits_per_primary": Reference(11.0, 2.0),
    "pt_median_gev": Reference(0.36, 0.04),
    "pt_frac_above_0.5": Reference(0.34, 0.03),
    "pt_frac_above_1": Reference(0.11, 0.02),
    "pt_frac_above_2": Reference(0.025, 0.01),
    "pt_frac_above_5": Reference(0.003, 0.003),
    "secondary_particle_fraction": Reference(0.30, 0.05),
    "secondary_hit_fraction": Reference(0.16, 0.06),
    "hits_from_pt_below_1_gev": Reference(0.86, 0.05),
    "cells_per_hit_pixel_barrel": Reference(7.0, 2.0),
    "cells_per_hit_other": Reference(2.3, 0.8),
    **{
        f"hit_share_volume_{v}": Reference(s, max(0.25 * s, 0.015))
        for v, s in {
            7: 0.13,
            8: 0.24,
            9: 0.13,
            12: 0.07,
            13: 0.23,
            14: 0.06,
            16: 0.03,
            17: 0.08,
            18: 0.03,
        }.items()
    },
}

_DUP_GROUPS = {
    "pixel_barrel": (8,),
    "pixel_endcap": (7, 9),
    "short_strip_barrel": (13,),
    "short_strip_endcap": (12, 14),
    "long_strip": (16, 17, 18),
}


def event_figures(event: Event) -> dict[str, float]:
    """The section-3 figures of one event."""
    hits = event.hits.merge(event.truth[["hit_id", "particle_id"]], on="hit_id")
    parts = event.particles
    pt = np.hypot(parts.px, parts.py)
    p_abs = np.sqrt(pt**2 + parts.pz**2)
    eta = np.arctanh(np.clip(parts.pz / np.maximum(p_abs, 1e-12), -1 + 1e-12, 1 - 1e-12))
    sel = (pt > 0.1) & (np.abs(eta) < 4)
    secondary = (parts.particle_id.to_numpy() & ((1 << 36) - 1)) != 0
    f: dict[str, float] = {
        "hits_per_event": len(hits),
        "particles_per_event": float(sel.sum()),
        "noise_fraction": float((hits.particle_id == 0).mean()),
        "particles_per_half_eta_central": float((sel & (np.abs(eta) < 0.25)).sum()),
        "particles_per_half_eta_forward": float((sel & (np.abs(eta) > 2.5)).sum() / 6),
    }
    sig = hits[hits.particle_id != 0]
    # A duplicate is a particle's second (third...) hit on one layer: the share of
    # non-noise hits beyond the first per (particle, layer).
    dup = sig.duplicated(["particle_id", "volume_id", "layer_id"]).to_numpy()
    f["duplicate_fraction"] = float(dup.mean())
    for name, vols in _DUP_GROUPS.items():
        m = sig.volume_id.isin(vols).to_numpy()
        f[f"duplicate_fraction_{name}"] = float(dup[m].mean()) if m.any() else np.nan
    nh = parts.nhits.to_numpy()
    f["median_hits_per_primary"] = float(np.median(nh[(~secondary) & (nh > 0)]))
    ptsel = pt[sel].to_numpy()
    f["pt_median_gev"] = float(np.median(ptsel))
    for cut in (0.5, 1, 2, 5):
        f[f"pt_frac_above_{cut}"] = float((ptsel > cut).mean())
    f["secondary_particle_fraction"] = float(secondary[sel.to_numpy()].mean())
    sec_ids = parts.particle_id.to_numpy()[secondary]
    f["secondary_hit_fraction"] = float(np.isin(sig.particle_id.to_numpy(), sec_ids).mean())
    pt_of = pd.Series(pt.to_numpy(), index=parts.particle_id.to_numpy())
    f["hits_from_pt_below_1_gev"] = float((pt_of.reindex(sig.particle_id).to_numpy() < 1).mean())
    share = hits.volume_id.value_counts(normalize=True)
    for v in (7, 8, 9, 12, 13, 14, 16, 17, 18):
        f[f"hit_share_volume_{v}"] = float(share.get(v, 0.0))
    if event.cells is not None:
        n_cells = event.cells.groupby("hit_id").size()
        fam = pd.Series(volume_family(event.hits.volume_id.to_numpy()), index=event.hits.hit_id)
        f["cells_per_hit_pixel_barrel"] = float(
            n_cells.reindex(event.hits.hit_id[event.hits.volume_id == 8]).mean()
        )
        f["cells_per_hit_other"] = float(n_cells.reindex(fam.index[fam.to_numpy() != "pixel"]).mean())
    return f


def validation_figures(events: Iterable[Event]) -> dict[str, float]:
    """Mean of :func:`event_figures` over events."""
    frame = pd.DataFrame([event_figures(e) for e in events])
    return frame.mean().to_dict()


def compare(figures: dict[str, float], mu: float = 200.0) -> pd.DataFrame:
    """Side-by-side table: simulated, reference, tolerance, within tolerance."""
    rows = []
    for name, value in figures.items():
        ref = REFERENCE.get(name)
        if ref is None:
            rows.append((name, value, np.nan, np.nan, ""))
            continue
        scale = mu / 200.0 if ref.scales_with_mu else 1.0
        ok = abs(value - ref.value * scale) <= ref.tolerance * scale
        rows.append((name, value, ref.value * scale, ref.tolerance * scale, "yes" if ok else "NO"))
    return pd.DataFrame(rows, columns=["figure", "simulated", "reference", "tolerance", "within"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument("--mu", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    det = default_detector()
    cfg = SimulationConfig(mu=args.mu)
    events, times = [], []
    for i in range(args.events):
        t0 = time.perf_counter()
        events.append(simulate_event(cfg, seed=args.seed, event_id=i, detector=det))
        times.append(time.perf_counter() - t0)
    table = compare(validation_figures(events), args.mu)
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(
            f"Simulated {args.events} events at mu={args.mu:g} "
            f"({np.mean(times):.2f} s per event) vs docs/physics.md section 3:"
        )
        print(table.to_string(index=False))
    n_bad = int((table.within == "NO").sum())
    print(
        f"\n{len(table) - n_bad - int((table.within == '').sum())} figures within tolerance, {n_bad} outside."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
