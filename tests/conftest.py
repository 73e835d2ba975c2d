from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_DETECTORS = SHARED / "data" / "trackml" / "detectors.csv.gz"


@pytest.fixture(scope="session")
def real_detectors_path() -> Path:
    if not REAL_DETECTORS.exists():
        pytest.skip(f"reference data absent: {REAL_DETECTORS} (../shared is not beside this checkout)")
    return REAL_DETECTORS


@pytest.fixture(scope="session")
def detector():
    from exatrkx_sweeps.data.simulate import default_detector

    return default_detector()


@pytest.fixture(scope="session")
def small_event(detector):
    from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_event

    return simulate_event(SimulationConfig(mu=10), seed=3, event_id=7, detector=detector)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to the user's cache, MLflow store or Optuna storage."""
    monkeypatch.setenv("EXATRKX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXATRKX_MLFLOW_DB", str(tmp_path / "user" / "mlflow.db"))
    monkeypatch.setenv("EXATRKX_OPTUNA_DB", str(tmp_path / "user" / "optuna.db"))
