"""GPU telemetry from NVML (nvidia-ml-py), sampled in the background.

On a machine without an NVIDIA GPU or driver, `available` is False and nothing is logged: a CPU host
is a normal place to run, not an error. The devices are the ones this process's CUDA sees, numbered as
CUDA numbers them (`visible_handles`), so device 0 here is the engine's device 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from typing import Any

from voxdock.engine.metrics import GpuSnapshot

log = logging.getLogger(__name__)
HISTORY = 300  # samples kept per device (5 minutes at the default interval)


def visible_handles(nvml: object, visible: str | None) -> list[object]:
    """NVML handles of the devices CUDA numbers 0, 1, ... for this process. NVML counts every card of
    the host in its own order and ignores CUDA_VISIBLE_DEVICES: on a host where the engine was given
    the fourth card, NVML's device 0 is another job's, and its memory and load are not ours. The list
    follows CUDA_VISIBLE_DEVICES (indices, or GPU-/MIG- UUIDs, up to the first invalid entry, as CUDA
    reads it); unset, every card in NVML's order."""
    n: Any = nvml
    if visible is None:
        return [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
    handles: list[object] = []
    for entry in (e.strip() for e in visible.split(",")):
        try:
            if entry.isdigit():
                handles.append(n.nvmlDeviceGetHandleByIndex(int(entry)))
            elif entry.startswith(("GPU-", "MIG-")):
                handles.append(n.nvmlDeviceGetHandleByUUID(entry))
            else:
                break
        except Exception:  # an entry CUDA cannot use ends its list there too
            break
    return handles


class GpuMonitor:
    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._latest: list[GpuSnapshot] = []
        self._history: dict[int, deque[GpuSnapshot]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handles: list[object] = []
        self._available: bool | None = None  # NVML is opened when first needed, not on construction

    @property
    def available(self) -> bool:
        with self._lock:
            if self._available is None:
                self._available = self._init()
            return self._available

    def _init(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handles = visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except Exception:  # no library, no driver, no device: all mean "no GPU" here
            return False
        self._nvml = pynvml
        return bool(self._handles)

    def start(self) -> None:
        if not self.available or self._thread is not None:
            return
        self.sample()
        self._thread = threading.Thread(target=self._run, name="voxdock-gpu", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> list[GpuSnapshot]:
        nvml = self._nvml
        if nvml is None:
            return []
        samples = []
        for index, handle in enumerate(self._handles):
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception as exc:  # a device that stops answering is reported once per sample
                log.debug("NVML query failed for GPU %d: %s", index, exc)
                continue
            try:
                utilization: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # NVML_ERROR_NOT_SUPPORTED on a MIG slice: its memory is still shown
                utilization = None
            samples.append(
                GpuSnapshot(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_pct=utilization,
                    memory_used_mb=mem.used / 2**20,
                    memory_total_mb=mem.total / 2**20,
                )
            )
        with self._lock:
            self._latest = samples
            for s in samples:
                self._history.setdefault(s.index, deque(maxlen=HISTORY)).append(s)
        return samples

    def memory_use(self, index: int) -> tuple[int, str] | None:
        """Device memory this process holds on GPU `index` in bytes, with "process"; where NVML cannot
        tell processes apart (no per-process figure, another PID namespace), the whole device's use,
        with "device". None without NVML. A fresh query: the VRAM meter reads it around model calls."""
        nvml = self._nvml
        if nvml is None or index >= len(self._handles):
            return None
        handle = self._handles[index]
        try:
            pid = os.getpid()
            for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and process.usedGpuMemory is not None:
                    return int(process.usedGpuMemory), "process"
            return int(nvml.nvmlDeviceGetMemoryInfo(handle).used), "device"
        except Exception as exc:
            log.debug("NVML memory query failed for GPU %d: %s", index, exc)
            return None

    def total_bytes(self, index: int) -> int | None:
        """GPU `index`'s memory in bytes; None without NVML."""
        nvml = self._nvml
        if nvml is None or index >= len(self._handles):
            return None
        try:
            return int(nvml.nvmlDeviceGetMemoryInfo(self._handles[index]).total)
        except Exception as exc:
            log.debug("NVML memory query failed for GPU %d: %s", index, exc)
            return None

    def latest(self) -> list[GpuSnapshot]:
        with self._lock:
            return list(self._latest)

    def history(self, index: int) -> list[GpuSnapshot]:
        with self._lock:
            return list(self._history.get(index, ()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
