"""The VRAM budget (GPU_MEMORY_BUDGET) and what each stage's model calls take of it.

The setting is GiB ("14", "14GiB", "14G") or a share of the card ("0.9", "90%"; a bare number up to 1
is a share); unset, the budget leaves 10% of the card free. It becomes bytes once the engine knows its
device (`BudgetSetting.resolve`); on CPU no budget applies.

What a stage's model calls take is measured around each call (`AdaptiveBatch` runs every call of the
batched stages), from the allocators:
- torch: the peak its caching allocator reached during the call above what was allocated before
  (`max_memory_allocated`). The peak counters are reset only when no other measured call is running;
  a call overlapping another counts its neighbour's allocations too, an overestimate, on the safe side.
- everything else: CTranslate2 (faster-whisper's ASR) has no allocator figures in its Python API
  (4.x), nor has ONNX Runtime (CAM++, segmentation), so their share is the process's device memory
  from NVML less torch's reservation, and a call's figure is how much that share grew during it. These
  runtimes keep what they allocated, so growth shows when a call first needs more: what one more
  concurrent call of that size would need again.
The largest figure per item seen predicts what a bigger batch or one more worker would take; the
out-of-memory backoff (engine/oom.py) stays the safety net for what a prediction misses.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_SHARE = 0.90  # unset: 10% of the card left free
FORMS = "give GiB (14, 14GiB, 14G) or a share of the card (0.9, 90%)"
_SIZE = re.compile(r"^(-?(?:\d+(?:\.\d*)?|\.\d+))\s*(%|gib|gb|g)?$")


@dataclass(frozen=True)
class BudgetSetting:
    """GPU_MEMORY_BUDGET as given: GiB, a share of the card, or neither (the default share)."""

    gib: float | None = None
    share: float | None = None

    def resolve(self, total_bytes: int) -> int:
        """The budget in bytes on a card of `total_bytes` (never more than the card)."""
        if self.gib is not None:
            return min(int(self.gib * GIB), total_bytes)
        return int((self.share if self.share is not None else DEFAULT_SHARE) * total_bytes)

    def describe(self) -> str:
        if self.gib is not None:
            return f"GPU_MEMORY_BUDGET={self.gib:g} GiB"
        if self.share is not None:
            return f"GPU_MEMORY_BUDGET={self.share:.0%} of the card"
        return "default: 10% of the card left free"


def parse_budget(text: str | None) -> BudgetSetting:
    """GPU_MEMORY_BUDGET's value; ValueError with the reason for anything else."""
    raw = (text or "").strip().lower()
    if not raw:
        return BudgetSetting()
    match = _SIZE.match(raw)
    if match is None:
        raise ValueError(f"not a size: {FORMS}")
    value, unit = float(match[1]), match[2]
    if value <= 0:
        raise ValueError("must be more than 0")
    if unit == "%":
        if value > 100:
            raise ValueError("more than the whole card (100%)")
        return BudgetSetting(share=value / 100)
    if unit is None and value <= 1:
        return BudgetSetting(share=value)
    return BudgetSetting(gib=value)


@dataclass(frozen=True)
class StageVram:
    """What one stage's model calls took: the most one call did, and the most per item in a call."""

    calls: int
    peak_call_bytes: int
    peak_item_bytes: float


@dataclass(frozen=True)
class VramSnapshot:
    """The engine's device memory against its budget. On CPU `budget_bytes` and the figures are None:
    no budget applies (nothing is faked as zero)."""

    setting: str  # how the budget was given ("default: 10% of the card left free", ...)
    budget_bytes: int | None
    used_bytes: int | None
    total_bytes: int | None
    used_by: str | None = None  # what used_bytes counts: "process" (NVML's figure for this one) or "device"
    stages: dict[str, StageVram] = field(default_factory=dict)
    device: int | None = None  # the CUDA device the budget is of

    @property
    def over(self) -> bool:
        return (
            self.budget_bytes is not None
            and self.used_bytes is not None
            and self.used_bytes > self.budget_bytes
        )


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _room(vram: VramSnapshot | None, stage: str, extra_items: int, what: str) -> str | None:
    """Why `extra_items` more items in flight in `stage`'s calls would pass the budget; None when they
    fit, when no budget applies, or when the stage has no measured call yet (the backoff covers it)."""
    if vram is None or vram.budget_bytes is None or vram.used_bytes is None:
        return None
    budget, used = vram.budget_bytes, vram.used_bytes
    if used > budget:
        return f"VRAM {gib(used)} GiB already over the {gib(budget)} GiB budget"
    peak = vram.stages.get(stage)
    if peak is None or peak.calls == 0 or extra_items <= 0:
        return None
    extra = peak.peak_item_bytes * extra_items
    if used + extra <= budget:
        return None
    return (
        f"{what} would take VRAM to {gib(used + extra)} GiB, over the {gib(budget)} GiB budget "
        f"({gib(used)} in use, {peak.peak_item_bytes / 2**20:.1f} MiB per item measured)"
    )


def workers_over_budget(
    vram: VramSnapshot | None, stage: str, workers_from: int, workers_to: int, batch: int | None
) -> str | None:
    """Why growing `stage` to `workers_to` workers would pass the budget, or None. Each worker is taken
    to run a call of the current batch at once (workers that share one batcher run fewer: the
    prediction errs high)."""
    extra_workers = workers_to - workers_from
    what = f"{extra_workers} more worker{'s' if extra_workers != 1 else ''}"
    return _room(vram, stage, extra_workers * max(batch or 1, 1), what)


def batch_over_budget(
    vram: VramSnapshot | None, stage: str, batch_from: int, batch_to: int, workers: int
) -> str | None:
    """Why growing `stage`'s batch to `batch_to` would pass the budget, or None."""
    return _room(vram, stage, (batch_to - batch_from) * max(workers, 1), f"batch {batch_to}")


class VramMeter:
    """Measures every model call of the stages on one CUDA device (see the module's notes)."""

    def __init__(self, device_index: int, memory_use: Callable[[], tuple[int, str] | None]) -> None:
        self.device_index = device_index
        # NVML's figure: (bytes, "process") for this process, (bytes, "device") where it cannot tell
        # processes apart, None without NVML (GpuMonitor.memory_use).
        self._memory_use = memory_use
        self._lock = threading.Lock()
        self._running = 0
        self._stages: dict[str, StageVram] = {}

    @contextmanager
    def measure(self, stage: str, items: int) -> Iterator[None]:
        with self._lock:
            self._running += 1
            alone = self._running == 1
        try:
            before = self._before(alone)
            yield
            if before is not None:
                self._record(stage, items, before)
        finally:
            with self._lock:
                self._running -= 1

    def _before(self, alone: bool) -> tuple[int, tuple[int, str] | None] | None:
        try:
            cuda = _torch_cuda()
            torch_base = 0
            if cuda is not None:
                if alone:
                    cuda.reset_peak_memory_stats(self.device_index)
                torch_base = cuda.memory_allocated(self.device_index)
            other = self._other(cuda)
            if cuda is None and other is None:
                return None  # nothing to measure with: no figure rather than a zero
            return torch_base, other
        except Exception as exc:  # a figure that cannot be read is left out, never the call
            log.debug("VRAM figures unavailable: %s", exc)
            return None

    def _other(self, cuda: Any) -> tuple[int, str] | None:
        """Device memory outside torch's allocator (CTranslate2, ONNX Runtime, CUDA contexts)."""
        use = self._memory_use()
        if use is None:
            return None
        reserved = cuda.memory_reserved(self.device_index) if cuda is not None else 0
        return max(use[0] - reserved, 0), use[1]

    def _record(self, stage: str, items: int, before: tuple[int, tuple[int, str] | None]) -> None:
        torch_base, other_base = before
        try:
            cuda = _torch_cuda()
            taken = max(cuda.max_memory_allocated(self.device_index) - torch_base, 0) if cuda else 0
            other = self._other(cuda)
        except Exception as exc:
            log.debug("VRAM figures unavailable: %s", exc)
            return
        if other is not None and other_base is not None and other[1] == other_base[1]:
            taken += max(other[0] - other_base[0], 0)
        with self._lock:
            last = self._stages.get(stage, StageVram(0, 0, 0.0))
            self._stages[stage] = StageVram(
                calls=last.calls + 1,
                peak_call_bytes=max(last.peak_call_bytes, taken),
                peak_item_bytes=max(last.peak_item_bytes, taken / max(items, 1)),
            )

    def stages(self) -> dict[str, StageVram]:
        with self._lock:
            return dict(self._stages)


def _torch_cuda() -> Any:
    """torch.cuda when torch already holds a CUDA context; never imports torch or opens one to ask."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def device_index(device: str) -> int:
    """ "cuda" -> 0, "cuda:1" -> 1."""
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def device_total_bytes(index: int) -> int | None:
    """The memory of CUDA device `index` as CUDA gives it to this process (a MIG slice's own size, not
    the whole card's as NVML reports for the parent GPU); None when torch holds no CUDA context."""
    cuda = _torch_cuda()
    if cuda is None:
        return None
    try:
        return int(cuda.mem_get_info(index)[1])
    except Exception as exc:  # a driver that cannot say: NVML's figure is used instead
        log.debug("CUDA memory query failed for device %d: %s", index, exc)
        return None
