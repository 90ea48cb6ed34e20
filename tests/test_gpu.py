"""GPU telemetry on a machine without a GPU: none, no error, no noise; and the VRAM budget's logic on
given numbers (parsing, resolution on a card, prediction, the meter)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from voxdock.engine.gpu import GpuMonitor
from voxdock.engine.vram import (
    GIB,
    BudgetSetting,
    StageVram,
    VramMeter,
    VramSnapshot,
    batch_over_budget,
    device_index,
    parse_budget,
    workers_over_budget,
)


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
        assert monitor.memory_use(0) is None and monitor.total_bytes(0) is None
        assert not [r for r in caplog.records if r.name.startswith("voxdock")]
    monitor.stop()


# --- the VRAM budget (engine/vram.py): pure logic on given numbers --------------------------------

H200 = 150_754_820_096  # bytes NVML reports for one H200 (140.4 GiB)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (None, BudgetSetting()),
        ("", BudgetSetting()),
        ("14", BudgetSetting(gib=14.0)),
        ("14GiB", BudgetSetting(gib=14.0)),
        ("14 gib", BudgetSetting(gib=14.0)),
        ("14G", BudgetSetting(gib=14.0)),
        ("13.5GB", BudgetSetting(gib=13.5)),
        ("0.9", BudgetSetting(share=0.9)),
        ("1", BudgetSetting(share=1.0)),
        ("1.5", BudgetSetting(gib=1.5)),
        ("90%", BudgetSetting(share=0.9)),
        (" 50 % ", BudgetSetting(share=0.5)),
    ],
)
def test_budget_setting_forms(text: str | None, expect: BudgetSetting) -> None:
    assert parse_budget(text) == expect


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("lots", "not a size"),
        ("14MB", "not a size"),
        ("0", "more than 0"),
        ("-2", "more than 0"),
        ("0%", "more than 0"),
        ("150%", "whole card"),
    ],
)
def test_bad_budget_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_budget(text)


def test_budget_resolved_from_the_card() -> None:
    assert BudgetSetting().resolve(H200) == int(0.9 * H200)  # 10% left free by default
    assert BudgetSetting(gib=14).resolve(H200) == 14 * GIB
    assert BudgetSetting(share=0.5).resolve(H200) == H200 // 2
    assert BudgetSetting(gib=200).resolve(80 * GIB) == 80 * GIB  # never more than the card
    assert "10% of the card left free" in BudgetSetting().describe()
    assert device_index("cuda") == 0 and device_index("cuda:1") == 1


def budget_view(used_gib: float, per_item_mib: float | None, budget_gib: float = 14.0) -> VramSnapshot:
    stages = {} if per_item_mib is None else {"asr": StageVram(10, 0, per_item_mib * 2**20)}
    return VramSnapshot("14 GiB", int(budget_gib * GIB), int(used_gib * GIB), 80 * GIB, "process", stages, 0)


def test_growth_predicted_against_the_budget() -> None:
    # 10 GiB in use, 256 MiB per item: one more ASR worker at batch 8 takes 2 GiB (fits in 14),
    # two more take 4 GiB (14.0: fits exactly), three more 6 GiB (does not).
    view = budget_view(10.0, 256.0)
    assert workers_over_budget(view, "asr", 2, 3, 8) is None
    assert workers_over_budget(view, "asr", 2, 4, 8) is None
    reason = workers_over_budget(view, "asr", 2, 5, 8)
    assert reason is not None and "16.0 GiB, over the 14.0 GiB budget" in reason
    # a batch from 8 to 16 with 2 workers: 16 more items, 4 GiB: fits; to 24: 8 GiB, does not
    assert batch_over_budget(view, "asr", 8, 16, 2) is None
    assert batch_over_budget(view, "asr", 8, 24, 2) is not None
    # already over: nothing grows, measured or not
    assert "already over" in (workers_over_budget(budget_view(14.5, None), "asr", 1, 2, 8) or "")
    # nothing measured yet, or no budget (CPU): no prediction holds anything back
    assert workers_over_budget(budget_view(13.9, None), "asr", 1, 2, 8) is None
    cpu = VramSnapshot("default", None, None, None)
    assert workers_over_budget(cpu, "asr", 1, 9, 8) is None and not cpu.over


def test_meter_takes_each_call_from_the_allocators_figures() -> None:
    """Without torch on a device, a call's figure is how much the process's device memory (NVML) grew
    during it; the largest per item is kept. Figures that cannot be read give none, not zero."""
    readings = iter([(1000, "process"), (1000 + 8 * 300, "process"), (3400, "process"), (3400, "process")])
    meter = VramMeter(0, lambda: next(readings))
    with meter.measure("asr", 8):
        pass
    with meter.measure("asr", 4):  # the runtime's cache already holds it: no growth
        pass
    assert meter.stages() == {"asr": StageVram(calls=2, peak_call_bytes=2400, peak_item_bytes=300.0)}
    blind = VramMeter(0, lambda: None)
    with blind.measure("text", 64):
        pass
    assert blind.stages() == {}
    failing = iter([(0, "process")])
    meter = VramMeter(0, lambda: next(failing))
    with pytest.raises(RuntimeError), meter.measure("voice", 2):  # a failed call records nothing
        raise RuntimeError("CUDA out of memory")
    assert meter.stages() == {}


def test_an_engine_on_cpu_has_no_budget_and_measures_nothing(tmp_path: Path) -> None:
    """The engine's wiring without a store or models: on CPU the snapshot says no budget applies
    (figures None, not zero); a CUDA device NVML cannot see gets none either, and says so."""
    from conftest import test_settings

    from voxdock.engine.engine import Engine

    engine = Engine(test_settings(tmp_path, gpu_memory_budget="14G"), db=None, plan=None)  # type: ignore[arg-type]
    assert engine.snapshot().vram is None  # the device is not known before the models load
    engine.models = SimpleNamespace(device="cpu", names={})  # type: ignore[assignment]
    engine._set_up_vram("cpu")
    vram = engine.snapshot().vram
    assert vram == VramSnapshot("GPU_MEMORY_BUDGET=14 GiB", None, None, None)
    assert engine.adaptive_batches["asr"].call(lambda size: size) == 8
    assert engine.vram_meter is None
    if not engine.gpu.available:
        engine._set_up_vram("cuda:0")
        assert engine.vram_meter is None and engine.vram_budget_bytes is None
        assert any("none applies" in e.message for e in engine.events.recent())


def test_nvml_devices_follow_what_cuda_sees() -> None:
    """NVML numbers every card of the host; CUDA only those in CUDA_VISIBLE_DEVICES, in that order.
    A stand-in for NVML's lookups on a 4-card host (this machine has none)."""
    from voxdock.engine.gpu import visible_handles

    cards = {i: f"card{i}" for i in range(4)}
    uuids = {"GPU-aaaa": "card2", "MIG-bbbb": "card3/mig0"}

    def by_uuid(uuid: str) -> str:
        if uuid not in uuids:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return uuids[uuid]

    nvml = SimpleNamespace(
        nvmlDeviceGetCount=lambda: 4,
        nvmlDeviceGetHandleByIndex=lambda i: cards[i],
        nvmlDeviceGetHandleByUUID=by_uuid,
    )
    assert visible_handles(nvml, None) == ["card0", "card1", "card2", "card3"]
    assert visible_handles(nvml, "3") == ["card3"]  # the engine's cuda:0 is the host's fourth card
    assert visible_handles(nvml, "2,0") == ["card2", "card0"]
    assert visible_handles(nvml, "GPU-aaaa,MIG-bbbb") == ["card2", "card3/mig0"]
    assert visible_handles(nvml, "1,GPU-zzzz,0") == ["card1"]  # CUDA stops at the first bad entry
    assert visible_handles(nvml, "") == [] and visible_handles(nvml, "-1") == []  # no GPU for CUDA


def test_a_mig_slice_is_sampled_without_utilisation() -> None:
    """NVML answers a MIG slice's memory but not its utilisation (NVML_ERROR_NOT_SUPPORTED): the
    slice is still sampled, its utilisation None; a whole card beside it is sampled as before. A
    stand-in for NVML (this machine has no GPU)."""
    from voxdock.formatting import utilization_label

    class NotSupported(Exception):
        pass

    def utilization(handle: str) -> SimpleNamespace:
        if handle.startswith("MIG"):
            raise NotSupported("Not Supported")
        return SimpleNamespace(gpu=37)

    monitor = GpuMonitor()
    monitor._nvml = SimpleNamespace(
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=2 * GIB, total=35 * GIB),
        nvmlDeviceGetName=lambda handle: b"NVIDIA H200" if handle == "card" else b"NVIDIA H200 MIG 2g.35gb",
    )
    monitor._handles = ["MIG-slice", "card"]
    mig, card = monitor.sample()
    assert (mig.utilization_pct, mig.memory_total_mb) == (None, 35 * 1024)
    assert mig.name == "NVIDIA H200 MIG 2g.35gb"
    assert card.utilization_pct == 37.0
    assert (utilization_label(mig), utilization_label(card)) == ("n/a", " 37%")
    assert monitor.history(0) == [mig]
