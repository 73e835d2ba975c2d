"""Reader and writer of the official TrackML format (docs/physics.md section 1).

An event is ``event<9 digits>-{hits,cells,particles,truth}.csv[.gz]``; a dataset
directory may also hold ``detectors.csv[.gz]``. Everything read here is checked, and a
problem raises one :class:`TrackMLFormatError` that names the file and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .geometry import DETECTOR_COLUMNS, Detector

HITS_COLUMNS = ["hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id"]
CELLS_COLUMNS = ["hit_id", "ch0", "ch1", "value"]
PARTICLES_COLUMNS = ["particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits"]
PARTICLES_COLUMNS_TYPED = ["particle_id", "particle_type", *PARTICLES_COLUMNS[1:]]
TRUTH_COLUMNS = ["hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight"]
FILE_KINDS = ("hits", "cells", "particles", "truth")

_INT_COLUMNS = {
    "hit_id",
    "volume_id",
    "layer_id",
    "module_id",
    "ch0",
    "ch1",
    "particle_id",
    "particle_type",
    "q",
    "nhits",
}
_EVENT_RE = re.compile(r"^event(\d{9})-(hits|cells|particles|truth)\.csv(\.gz)?$")


class TrackMLFormatError(ValueError):
    """A TrackML file is missing or malformed; the message names the file and the fix."""


@dataclass
class Event:
    """One event in the official format. ``cells`` is None when the event has no cells file."""

    event_id: int
    hits: pd.DataFrame
    particles: pd.DataFrame
    truth: pd.DataFrame
    cells: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return f"event{self.event_id:09d}"


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".csv.gz"):
        p = directory / f"{stem}{suffix}"
        if p.exists():
            return p
    return None


def _read_csv(path: Path, expected: list[str], alternatives: tuple[list[str], ...] = ()) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except Exception as exc:  # unreadable, empty, bad gzip
        raise TrackMLFormatError(f"{path}: cannot be read as CSV ({exc}).") from None
    header = [h.strip() for h in header]
    if header not in (expected, *alternatives):
        wanted = " or ".join(",".join(c) for c in (expected, *alternatives))
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected and all(c not in a for a in alternatives)]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        raise TrackMLFormatError(
            f"{path}: wrong columns {header} ({'; '.join(detail) or 'wrong order'}). "
            f"The TrackML format needs exactly: {wanted}."
        )
    dtypes = {c: (np.int64 if c in _INT_COLUMNS else np.float64) for c in header}
    try:
        frame = pd.read_csv(path, dtype=dtypes)
    except (ValueError, TypeError) as exc:
        raise TrackMLFormatError(
            f"{path}: a value does not parse as a number ({exc}). Fix or regenerate the file."
        ) from None
    frame.columns = header
    return frame


def _check_finite(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    values = frame[columns].to_numpy(float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise TrackMLFormatError(
            f"{path}: {int(bad.any(axis=1).sum())} rows have NaN or infinite {columns} "
            f"(first: row {row + 2}, column '{columns[col]}'). Drop or repair those rows."
        )


def _check_unique_hit_ids(frame: pd.DataFrame, path: Path) -> None:
    dup = frame.hit_id.duplicated()
    if dup.any():
        raise TrackMLFormatError(
            f"{path}: {int(dup.sum())} duplicate hit_id values (first: "
            f"{int(frame.hit_id[dup].iloc[0])}). Each hit must appear once."
        )


def event_files(directory: str | Path, event_id: int) -> dict[str, Path | None]:
    directory = Path(directory)
    return {k: _find(directory, f"event{event_id:09d}-{k}") for k in FILE_KINDS}


def list_events(directory: str | Path) -> list[int]:
    """Event ids of a dataset directory (events that have at least a hits file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TrackMLFormatError(
            f"{directory}: no such directory. Point data.path at a folder of TrackML "
            "event<9 digits>-hits.csv[.gz] files."
        )
    ids = sorted({int(m.group(1)) for p in directory.iterdir() if (m := _EVENT_RE.match(p.name))})
    if not ids:
        raise TrackMLFormatError(
            f"{directory}: holds no TrackML events (files named event<9 digits>-hits.csv[.gz])."
        )
    return ids


def read_event(
    directory: str | Path,
    event_id: int,
    cells: bool | None = None,
    detector: Detector | None = None,
) -> Event:
    """Read and check one event. ``cells``: True requires the cells file, False skips it,
    None reads it when present. With ``detector`` every hit's module must exist in it."""
    directory = Path(directory)
    files = event_files(directory, event_id)
    prefix = directory / f"event{event_id:09d}"
    required = ["hits", "particles", "truth"] + (["cells"] if cells else [])
    for kind in required:
        if files[kind] is None:
            raise TrackMLFormatError(
                f"{prefix}-{kind}.csv[.gz]: missing; every TrackML event needs its "
                f"{'/'.join(required)} files."
            )
    hits = _read_csv(files["hits"], HITS_COLUMNS)
    _check_unique_hit_ids(hits, files["hits"])
    _check_finite(hits, ["x", "y", "z"], files["hits"])
    particles = _read_csv(files["particles"], PARTICLES_COLUMNS, (PARTICLES_COLUMNS_TYPED,))
    _check_finite(particles, ["vx", "vy", "vz", "px", "py", "pz"], files["particles"])
    truth = _read_csv(files["truth"], TRUTH_COLUMNS)
    _check_unique_hit_ids(truth, files["truth"])
    _check_finite(truth, ["tx", "ty", "tz", "weight"], files["truth"])
    if len(hits) != len(truth) or not np.array_equal(
        np.sort(hits.hit_id.to_numpy()), np.sort(truth.hit_id.to_numpy())
    ):
        only_hits = np.setdiff1d(hits.hit_id, truth.hit_id)
        only_truth = np.setdiff1d(truth.hit_id, hits.hit_id)
        raise TrackMLFormatError(
            f"{files['truth']}: hit ids differ from {files['hits'].name} "
            f"({len(only_hits)} only in hits, e.g. {only_hits[:3].tolist()}; "
            f"{len(only_truth)} only in truth, e.g. {only_truth[:3].tolist()}). "
            "Hits and truth must describe the same hits."
        )
    cell_frame = None
    if cells is not False and files["cells"] is not None:
        cell_frame = _read_csv(files["cells"], CELLS_COLUMNS)
        _check_finite(cell_frame, ["value"], files["cells"])
        unknown = ~np.isin(cell_frame.hit_id.to_numpy(), hits.hit_id.to_numpy())
        if unknown.any():
            raise TrackMLFormatError(
                f"{files['cells']}: {int(unknown.sum())} cells belong to hit ids absent from "
                f"{files['hits'].name} (e.g. {int(cell_frame.hit_id[unknown].iloc[0])})."
            )
    if detector is not None:
        rows = detector.module_rows(hits.volume_id, hits.layer_id, hits.module_id)
        if (rows < 0).any():
            bad = hits[rows < 0].iloc[0]
            raise TrackMLFormatError(
                f"{files['hits']}: {int((rows < 0).sum())} hits lie on modules the detector "
                f"file lacks (first: volume {bad.volume_id}, layer {bad.layer_id}, module "
                f"{bad.module_id}). Use the detectors.csv of the data set these events come from."
            )
    return Event(event_id, hits, particles, truth, cell_frame)


def write_event(directory: str | Path, event: Event, compress: bool = False) -> dict[str, Path]:
    """Write an event in the official format; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".csv.gz" if compress else ".csv"
    frames = {"hits": event.hits, "particles": event.particles, "truth": event.truth}
    if event.cells is not None:
        frames["cells"] = event.cells
    columns = {"hits": HITS_COLUMNS, "cells": CELLS_COLUMNS, "truth": TRUTH_COLUMNS}
    written = {}
    for kind, frame in frames.items():
        cols = columns.get(kind)
        if kind == "particles":
            cols = PARTICLES_COLUMNS_TYPED if "particle_type" in frame else PARTICLES_COLUMNS
        path = directory / f"{event.name}-{kind}{suffix}"
        _atomic_csv(frame[cols], path)
        written[kind] = path
    return written


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    compression = "gzip" if path.name.endswith(".gz") else None
    frame.to_csv(tmp, index=False, float_format="%.7g", compression=compression)
    tmp.replace(path)


def read_detectors(path: str | Path) -> Detector:
    """Read a ``detectors.csv[.gz]`` (a file, or a dataset directory holding one)."""
    path = Path(path)
    if path.is_dir():
        found = _find(path, "detectors")
        if found is None:
            raise TrackMLFormatError(f"{path}: no detectors.csv[.gz] in this directory.")
        path = found
    if not path.exists():
        raise TrackMLFormatError(f"{path}: no such detector file.")
    frame = _read_csv(path, DETECTOR_COLUMNS)
    _check_finite(frame, DETECTOR_COLUMNS[3:], path)
    return Detector.from_frame(frame)


def write_detectors(path: str | Path, detector: Detector) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_csv(detector.modules[DETECTOR_COLUMNS], path)
    return path
