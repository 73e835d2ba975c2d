"""``train.device`` and ``train.precision``, checked without importing torch.

A config error must come back in about a second, before torch (about 1 s to import, 2 s
with torch_geometric) and before an MLflow run exists. What CUDA devices torch will see
is read from the installed torch build (``torch/version.py``: ``cuda`` is None on a CPU
build), the NVIDIA driver (``/proc/driver/nvidia/gpus``) and ``CUDA_VISIBLE_DEVICES``.
Where these cannot tell (a driver without ``/proc`` entries), the answer is "unknown" and
``stages/common.resolve_device`` asks torch itself before the run starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from .errors import ConfigError

PRECISIONS = ("32", "bf16", "16-mixed")  # train.precision
_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def parse_device(name: str) -> tuple[str, int | None]:
    """``train.device`` as (auto | cpu | cuda, index or None); ConfigError when malformed."""
    m = _DEVICE.fullmatch(str(name))
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ConfigError(f"train.device={name!r}: must be auto, cpu or cuda[:N].")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def cuda_devices_seen() -> int | None:
    """How many CUDA devices torch will see, or None when that cannot be told without
    importing torch."""
    spec = importlib.util.find_spec("torch")
    version = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
    if version is None or not version.is_file():
        return None
    build = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", version.read_text(), re.MULTILINE)
    if build is None:
        return None
    if build.group(1).strip() == "None":
        return 0  # a CPU build sees no CUDA device on any machine
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return 0
    gpus = Path("/proc/driver/nvidia/gpus")
    if not gpus.is_dir():
        return 0 if not any(Path("/dev").glob("nvidia[0-9]*")) else None
    n = sum(1 for _ in gpus.iterdir())
    if visible is not None:  # a list of indices or UUIDs; it can only hide devices
        n = min(n, len([v for v in visible.split(",") if v.strip()]))
    return n


def check_device(name: str, precision: str) -> str:
    """The device type a run will use (cpu, cuda, or auto when torch must decide), after
    checking ``train.device`` and ``train.precision`` against what is installed."""
    kind, index = parse_device(name)
    seen = cuda_devices_seen()
    if kind == "auto" and seen is not None:
        kind = "cuda" if seen else "cpu"
    if kind == "cuda" and seen is not None:
        check_visible(name, index, seen)
    check_precision(precision, kind)
    return kind


def check_visible(name: str, index: int | None, seen: int) -> None:
    """``train.device=cuda[:index]`` against the ``seen`` CUDA devices (ConfigError)."""
    if seen == 0:
        raise ConfigError(f"train.device={name}: no CUDA device is visible; use train.device=cpu or auto.")
    if (index or 0) >= seen:
        raise ConfigError(f"train.device={name}: only {seen} CUDA device(s) are visible.")


def check_precision(precision: str, device_type: str, key: str = "train.precision") -> str:
    """A precision (``key``) if a device of ``device_type`` can run it (ConfigError otherwise)."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}={precision!r}: must be one of {', '.join(PRECISIONS)}.")
    if precision == "16-mixed" and device_type == "cpu":
        raise ConfigError(f"{key}=16-mixed: needs a CUDA device; use {key}=bf16 on CPU.")
    return precision
