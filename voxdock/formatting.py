"""Small text formatters shared by the headless display and the console."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxdock.engine.metrics import GpuSnapshot
    from voxdock.engine.vram import VramSnapshot


def fmt_duration(seconds: float | None) -> str:
    """h:mm:ss or mm:ss; '--:--' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    total = round(seconds)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def fmt_clock(seconds: float) -> str:
    """m:ss.s (or h:mm:ss.s): a time in a recording, to a tenth of a second."""
    tenths = round(max(0.0, seconds) * 10)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = (
        f"{minutes:02d}:{rest // 10:02d}.{rest % 10}" if hours else f"{minutes}:{rest // 10:02d}.{rest % 10}"
    )
    return f"{hours}:{clock}" if hours else clock


def fmt_rtf(value: float | None) -> str:
    """A real-time factor to 3 significant figures, whatever its magnitude.

    A fixed number of decimals printed every fast stage as 0.000. Three significant figures keep a
    relative precision of 1% or better from the fastest stage to the slowest: 0.000123, 0.0120,
    0.228, 1.50, 25.0; from 100 up, whole numbers (123, 4567). Below 0.0001 the zeros would hide
    the digits, so scientific notation: 1.20e-05. Exactly 0 is '0'; unknown (None or NaN) is '-';
    infinite (work done on no audio) is 'inf'. A negative value, which no measurement gives, keeps
    its sign.
    """
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 99.95:  # rounds to 100 or more at 3 significant figures: whole numbers
        return f"{value:.0f}"
    if magnitude < 0.0001:
        return f"{value:.2e}"
    # '#' keeps the trailing zeros (0.100, not 0.1: three figures, like its neighbours); 'g' picks
    # the decimals after rounding, so 0.09996 prints 0.100, not 0.1000.
    return f"{value:#.3g}"


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def text_bar(fraction: float, width: int) -> str:
    """A bar of block characters (readable in 16 colours and plain text): '█████▌    '."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width)


def estimate_eta(files_left: int, files_done: int, audio_done_s: float, pace: float | None) -> float | None:
    """Seconds left: files left x mean audio per finished file, at `pace` audio seconds per second.

    `pace` should be the engine's hours_per_hour(_now) (audio hours per wall hour, i.e. audio seconds
    per second), which counts completed work and reported in-flight progress over the clock when it
    was counted, so a long file in flight does not make the estimate climb. None when there is
    nothing to go on (no pace, no finished file, no audio) or nothing left.
    """
    if files_left <= 0 or files_done <= 0 or audio_done_s <= 0:
        return None
    if pace is None or not math.isfinite(pace) or pace <= 0:
        return None
    return files_left * (audio_done_s / files_done) / pace


def utilization_label(gpu: GpuSnapshot) -> str:
    """How busy the device is ("  5%"), or "n/a" where it does not say (a MIG slice)."""
    return "n/a" if gpu.utilization_pct is None else f"{gpu.utilization_pct:3.0f}%"


def vram_label(gpu: GpuSnapshot, vram: VramSnapshot | None) -> str:
    """The engine's use against GPU_MEMORY_BUDGET in GiB on the device it is of ("VRAM 3.1/126.9G
    budget", "... OVER" past it), else the device's use of its memory. Short: it shares a row with
    two sparklines in a narrow panel."""
    if vram is None or vram.budget_bytes is None or vram.device != gpu.index:
        return f"VRAM {fmt_mb(gpu.memory_used_mb)}/{fmt_mb(gpu.memory_total_mb)}"
    from voxdock.engine.vram import gib

    used = gib(vram.used_bytes) if vram.used_bytes is not None else "?"
    return f"VRAM {used}/{gib(vram.budget_bytes)}G {'OVER' if vram.over else 'budget'}"
