"""Stage timers and peak-memory meters (CPU and CUDA).

``Profiler.measure(stage, phase)`` times a block and records its peak memory:

* CPU: the process's peak resident set size during the block, above its RSS at the
  block's start (Linux: the kernel's high-water mark, reset at the start through
  /proc/self/clear_refs; elsewhere a 5 ms sampling thread);
* CUDA: ``torch.cuda.max_memory_allocated`` after a reset, and the device is
  synchronised before the clock stops, so GPU work is counted where it happens.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_mb()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self.join()
        return max(self.peak, _rss_mb())


@dataclass
class Measurement:
    seconds: float = 0.0
    calls: int = 0
    events: int = 0
    rss_peak_mb: float = 0.0  # above the RSS at the block's start
    cuda_peak_mb: float = 0.0


@dataclass
class Profiler:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    records: dict[tuple[str, str], Measurement] = field(default_factory=lambda: defaultdict(Measurement))

    @contextmanager
    def measure(self, stage: str, phase: str, events: int = 0):
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            cuda_start = torch.cuda.memory_allocated(self.device)
        start_rss = _rss_mb()
        sampler = None if _reset_hwm() else _Sampler()
        if sampler:
            sampler.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0
            peak = sampler.stop() if sampler else (_hwm_mb() or _rss_mb())
            m = self.records[(stage, phase)]
            m.seconds += dt
            m.calls += 1
            m.events += events
            m.rss_peak_mb = max(m.rss_peak_mb, peak - start_rss)
            if cuda:
                m.cuda_peak_mb = max(
                    m.cuda_peak_mb, (torch.cuda.max_memory_allocated(self.device) - cuda_start) / 2**20
                )

    def metrics(self) -> dict[str, float]:
        """Flat metrics: time_train_<stage>_s, time_infer_<stage>_s (per event),
        mem_peak_<phase>_<stage>_mb (RSS above start), cuda_peak_<phase>_<stage>_mb."""
        out: dict[str, float] = {}
        for (stage, phase), m in self.records.items():
            if phase == "infer":
                out[f"time_infer_{stage}_s"] = m.seconds / max(m.events, 1)
                out[f"time_infer_{stage}_total_s"] = m.seconds
            else:
                out[f"time_{phase}_{stage}_s"] = m.seconds
            out[f"mem_peak_{phase}_{stage}_mb"] = m.rss_peak_mb
            if self.device.type == "cuda":
                out[f"cuda_peak_{phase}_{stage}_mb"] = m.cuda_peak_mb
        return out
