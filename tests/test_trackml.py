import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from exatrkx_sweeps.data.trackml import (
    PARTICLES_COLUMNS,
    TrackMLFormatError,
    list_events,
    read_detectors,
    read_event,
    write_detectors,
    write_event,
)


@pytest.fixture
def event_dir(tmp_path, small_event, detector):
    write_event(tmp_path, small_event)
    write_detectors(tmp_path / "detectors.csv", detector)
    return tmp_path


def _path(d, kind, eid=7):
    return d / f"event{eid:09d}-{kind}.csv"


def test_round_trip_csv_and_gz(tmp_path, small_event, detector):
    for compress in (False, True):
        d = tmp_path / str(compress)
        write_event(d, small_event, compress=compress)
        ev = read_event(d, 7, detector=detector)
        assert list_events(d) == [7]
        pd.testing.assert_frame_equal(
            ev.hits[["hit_id", "volume_id", "layer_id", "module_id"]],
            small_event.hits[["hit_id", "volume_id", "layer_id", "module_id"]],
        )
        assert np.allclose(ev.hits[["x", "y", "z"]], small_event.hits[["x", "y", "z"]], atol=1e-3)
        assert (ev.truth.particle_id.to_numpy() == small_event.truth.particle_id.to_numpy()).all()
        assert ev.truth.particle_id.dtype == np.int64
        assert len(ev.cells) == len(small_event.cells)


def test_64bit_particle_ids_survive(tmp_path, small_event):
    ev = small_event
    big = (np.int64(4000) << 52) | (np.int64(12345) << 36) | 3  # > 2**53: lost as float
    parts = ev.particles.copy()
    old = parts.particle_id.iloc[0]
    parts.loc[parts.index[0], "particle_id"] = big
    truth = ev.truth.copy()
    truth.loc[truth.particle_id == old, "particle_id"] = big
    write_event(tmp_path, type(ev)(ev.event_id, ev.hits, parts, truth, ev.cells))
    back = read_event(tmp_path, ev.event_id)
    assert back.particles.particle_id.iloc[0] == big
    assert (back.truth.particle_id == big).sum() == (truth.particle_id == big).sum()


def test_particles_without_particle_type(event_dir):
    p = _path(event_dir, "particles")
    pd.read_csv(p).drop(columns="particle_type").to_csv(p, index=False)
    ev = read_event(event_dir, 7)
    assert list(ev.particles.columns) == PARTICLES_COLUMNS


def test_cells_optional(event_dir):
    _path(event_dir, "cells").unlink()
    assert read_event(event_dir, 7).cells is None
    with pytest.raises(TrackMLFormatError, match="cells.csv"):
        read_event(event_dir, 7, cells=True)


def test_missing_file_named(event_dir):
    _path(event_dir, "truth").unlink()
    with pytest.raises(TrackMLFormatError, match=r"event000000007-truth\.csv.*missing"):
        read_event(event_dir, 7)


def test_misnamed_column(event_dir):
    p = _path(event_dir, "hits")
    pd.read_csv(p).rename(columns={"z": "zz"}).to_csv(p, index=False)
    with pytest.raises(TrackMLFormatError, match=r"hits\.csv.*missing \['z'\]"):
        read_event(event_dir, 7)


def test_nan_coordinates(event_dir):
    p = _path(event_dir, "hits")
    h = pd.read_csv(p)
    h.loc[5, "y"] = np.nan
    h.to_csv(p, index=False)
    with pytest.raises(TrackMLFormatError, match=r"NaN or infinite.*row 7, column 'y'"):
        read_event(event_dir, 7)


def test_hits_and_truth_disagree(event_dir):
    p = _path(event_dir, "truth")
    pd.read_csv(p).iloc[:-3].to_csv(p, index=False)
    with pytest.raises(TrackMLFormatError, match="hit ids differ.*3 only in hits"):
        read_event(event_dir, 7)


def test_duplicate_hit_ids(event_dir):
    p = _path(event_dir, "hits")
    h = pd.read_csv(p)
    h.loc[1, "hit_id"] = h.loc[0, "hit_id"]
    h.to_csv(p, index=False)
    with pytest.raises(TrackMLFormatError, match="duplicate hit_id"):
        read_event(event_dir, 7)


def test_detector_lacking_a_module(event_dir):
    d = pd.read_csv(event_dir / "detectors.csv")
    h = pd.read_csv(_path(event_dir, "hits"))
    v, l, m = h.iloc[0][["volume_id", "layer_id", "module_id"]]
    d = d[~((d.volume_id == v) & (d.layer_id == l) & (d.module_id == m))]
    d.to_csv(event_dir / "detectors.csv", index=False)
    det = read_detectors(event_dir)
    with pytest.raises(TrackMLFormatError, match=f"volume {v}, layer {l}, module {m}"):
        read_event(event_dir, 7, detector=det)


def test_malformed_gzip_and_empty_dir(tmp_path, event_dir):
    src = _path(event_dir, "hits")
    bad = tmp_path / "bad"
    bad.mkdir()
    for kind in ("hits", "particles", "truth"):
        shutil.copy(_path(event_dir, kind), bad / _path(event_dir, kind).name)
    (bad / src.name).unlink()
    (bad / (src.name + ".gz")).write_bytes(b"not gzip at all")
    with pytest.raises(TrackMLFormatError, match="cannot be read as CSV"):
        read_event(bad, 7)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrackMLFormatError, match="holds no TrackML events"):
        list_events(empty)
    assert gzip  # gz files are read through pandas' compression inference
