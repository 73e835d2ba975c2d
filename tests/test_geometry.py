import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from exatrkx_sweeps.data.geometry import DETECTOR_COLUMNS, build_trackml_detector, bz_tesla
from exatrkx_sweeps.data.trackml import read_detectors, write_detectors


def test_built_detector_shape(detector):
    m = detector.modules
    assert len(m) == 18_728
    assert sorted(m.volume_id.unique()) == [7, 8, 9, 12, 13, 14, 16, 17, 18]
    assert len(detector.layers) == 48
    # rotations are proper (orthonormal, det +1)
    r = detector.rotations
    assert np.allclose(np.einsum("nji,njk->nik", r, r), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    # trapezoids only in the strip endcaps
    trap = m.module_minhu != m.module_maxhu
    assert set(m.volume_id[trap].unique()) == {12, 14, 16, 18}


def test_matches_real_detector_file(real_detectors_path, detector):
    real = pd.read_csv(real_detectors_path)
    gen = detector.modules
    counts_real = real.groupby(["volume_id", "layer_id"]).size()
    counts_gen = gen.groupby(["volume_id", "layer_id"]).size()
    pd.testing.assert_series_equal(counts_real, counts_gen)
    good = 0
    for (v, l), rr in real.groupby(["volume_id", "layer_id"]):
        gg = gen[(gen.volume_id == v) & (gen.layer_id == l)]
        dist, idx = cKDTree(gg[["cx", "cy", "cz"]].to_numpy()).query(rr[["cx", "cy", "cz"]].to_numpy())
        n_real = rr[["rot_xw", "rot_yw", "rot_zw"]].to_numpy()
        n_gen = gg[["rot_xw", "rot_yw", "rot_zw"]].to_numpy()[idx]
        angle = np.arccos(np.clip((n_real * n_gen).sum(1), -1, 1))
        good += int(((dist < 5.0) & (angle < 0.01)).sum())
        for col in ("module_t", "module_minhu", "module_maxhu", "module_hv", "pitch_u", "pitch_v"):
            assert np.allclose(gg[col].to_numpy()[idx], rr[col].to_numpy()), (v, l, col)
    assert good / len(real) >= 0.99


def test_real_file_reads_and_round_trips(real_detectors_path, tmp_path):
    det = read_detectors(real_detectors_path)
    assert len(det) == 18_728
    out = write_detectors(tmp_path / "detectors.csv", det)
    again = read_detectors(out)
    assert list(again.modules.columns) == DETECTOR_COLUMNS
    assert np.allclose(again.centres, det.centres, atol=1e-3)


def test_barrel_module_id_convention():
    det = build_trackml_detector()
    m = det.modules
    first = m[(m.volume_id == 8) & (m.layer_id == 2) & (m.module_id <= 16)]
    assert np.allclose(first.cz, -455.0)  # ids run over phi inside the first z ring
    phi = np.arctan2(first.cy, first.cx).to_numpy()
    assert np.all(np.diff(phi) > 0) and abs(phi[0] + np.pi - np.pi / 16) < 1e-6


def test_field_falls_with_abs_z():
    assert bz_tesla(np.array([0.0]))[0] == 2.0
    assert bz_tesla(np.array([-1800.0]))[0] == bz_tesla(np.array([1800.0]))[0] == 0.99
    b = bz_tesla(np.linspace(0, 2999, 50))
    assert np.all(np.diff(b) <= 0)
