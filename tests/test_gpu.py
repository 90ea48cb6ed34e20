"""GPU telemetry on a machine without a GPU: none, no error, no noise."""

from __future__ import annotations

import logging

import pytest

from voxdock.engine.gpu import GpuMonitor


def test_no_gpu_reports_none_quietly(caplog: pytest.LogCaptureFixture) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        has_gpu = False
    caplog.set_level(logging.DEBUG)
    monitor = GpuMonitor(interval_s=0.05)
    monitor.start()
    if has_gpu:  # on a GPU host the same API reports the devices instead
        assert monitor.available and monitor.latest()
    else:
        assert monitor.available is False
        assert monitor.latest() == [] and monitor.sample() == []
        assert not [r for r in caplog.records if r.name.startswith("voxdock")]
    monitor.stop()
