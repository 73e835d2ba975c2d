"""``train.device`` and ``train.precision``, checked without importing torch.

``train.precision=auto`` (the default) trains in bf16 where the hardware does bf16
natively (a CPU with AVX-512 BF16 or AMX, a CUDA device that supports it) and in fp32
elsewhere: on a 2-core CPU with AVX-512 BF16 bf16 autocast made the default GNN's training
25% faster at the same physics, while a CPU without bf16 units (AVX2 only) emulates it, a
Linear layer 7.6x slower than in fp32 (docs/pu200.md, "Which CPU").
The CPU case is decided here (``/proc/cpuinfo``), the CUDA case by torch when the run
starts (``pipeline.run``); a cache key holds the precision it resolved to.

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

PRECISIONS = ("auto", "32", "bf16", "16-mixed")  # train.precision, eval.precision
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


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX flags)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no way to tell, so no bf16
        return False
    flags = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return bool(flags) and bool({"avx512_bf16", "amx_bf16"} & set(flags.group(1).split()))


def resolve_precision(precision: str, device_type: str, cuda_bf16: bool = False) -> str:
    """``auto`` as bf16 or 32 for a device of ``device_type`` (``cuda_bf16``: torch's
    answer for a CUDA device); any other precision unchanged. A device type still
    ``auto`` (torch must tell) leaves it ``auto``."""
    precision = str(precision)
    if precision != "auto" or device_type not in ("cpu", "cuda"):
        return precision
    native = cpu_has_bf16() if device_type == "cpu" else cuda_bf16
    return "bf16" if native else "32"


def check_precision(precision: str, device_type: str, key: str = "train.precision") -> str:
    """A precision (``key``) if a device of ``device_type`` can run it (ConfigError otherwise)."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}={precision!r}: must be one of {', '.join(PRECISIONS)}.")
    if precision == "16-mixed" and device_type == "cpu":
        raise ConfigError(f"{key}=16-mixed: needs a CUDA device; use {key}=bf16 on CPU.")
    return precision
