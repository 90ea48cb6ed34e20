"""Small text formatters shared by the headless display and the console."""

from __future__ import annotations


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
    return "-" if value is None else f"{value:.3f}"


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
    """Seconds left: files left x mean audio per finished file, at `pace` audio seconds per second."""
    if not pace or not files_done or not files_left:
        return None
    return files_left * (audio_done_s / files_done) / pace
