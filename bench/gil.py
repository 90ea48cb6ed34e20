"""The interpreter lock under load: how much of the wall time a thread holds it, which threads, and
how long a thread that wants it waits.

Every stage of the engine runs in threads of one process, so on a many-core GPU host they share one
lock: whatever the core count, threads cannot go faster than the lock is free. The seconds it is held
per audio hour therefore bound what threads can reach: 3600 / (held seconds per audio hour) hours of
audio per hour, before any contention (in practice convoys set in well below that ceiling). That
figure decides whether a stage must move to processes.

Two measures over the same stretch of time, in this process:

- `py-spy record --gil --threads --nonblocking` (raw format) samples `rate` times a second which
  thread holds the lock and its Python stack (a C call that keeps the lock shows as the Python line
  that made it): the share of wall time the lock is held, split by thread group (`voxdock-STAGE-N`
  counts as STAGE), and the lines holding it most. Non-blocking: the process is not paused to read it.
- a waiter thread that sleeps `WAIT_S` again and again and notes how late it wakes: it needs the lock
  to run again, so a long stretch of someone else's holding shows here as a late wake. On a host whose
  cores are all busy the OS's scheduling adds to it: compare with the same figure when idle.

py-spy needs ptrace rights over this process (root, or kernel.yama.ptrace_scope 0); without them, or
without py-spy, `start` says why and the report says it was not measured.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RATE = 100  # samples per second
WAIT_S = 0.005  # the waiter's sleep: the interpreter's switch interval
LONG_WAIT_S = 0.05  # a wake this late counts as a long wait
ATTACH_TRIES = 3
TOP_LINES = 10
HOUR = 3600.0


def py_spy() -> str | None:
    """The py-spy executable: $PY_SPY, beside this interpreter, on PATH, or carried to a GPU host as
    .gpu/py-spy (../shared/gpu/pack.sh drops the wheels' executables: bench/gpu_check.py says how)."""
    beside = Path(sys.executable).with_name("py-spy")
    for candidate in (os.environ.get("PY_SPY"), beside, shutil.which("py-spy")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    carried = Path(__file__).resolve().parents[1] / ".gpu" / "py-spy"
    return str(carried) if carried.is_file() else None


def thread_group(name: str) -> str:
    """`voxdock-diarize-3` -> `diarize`; any other name without its trailing number."""
    if name.startswith("voxdock-"):
        name = name[len("voxdock-") :]
    return name.rstrip("0123456789").rstrip("-_ ") or name


def parse_raw(text: str) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """(held samples per thread group, held samples per (group, innermost Python line)) from py-spy's
    raw output with --threads: `thread (TID): NAME;frame;frame;... COUNT` per line."""
    groups: Counter[str] = Counter()
    lines: Counter[tuple[str, str]] = Counter()
    for row in text.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        head = frames[0]
        name = head.split("): ", 1)[1] if "): " in head else head
        group = thread_group(name)
        groups[group] += int(count)
        if len(frames) > 1:
            lines[(group, frames[-1])] += int(count)
    return groups, lines


@dataclass
class GilSampler:
    """Samples the lock from `start` to `stop` (a run of the engine in this process)."""

    rate: int = RATE
    unavailable: str | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None
    _began: float = 0.0
    _waits: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _waiter: threading.Thread | None = None

    def start(self) -> bool:
        """Starts py-spy on this process and the waiter; False (with `unavailable` saying why) when
        py-spy is missing or cannot attach."""
        exe = py_spy()
        if exe is None:
            self.unavailable = "py-spy is not installed (scripts/setup --test installs it)"
            return False
        self._dir = tempfile.TemporaryDirectory(prefix="voxdock-gil-")
        out = Path(self._dir.name)
        command = [exe, "record", "--pid", str(os.getpid()), "--gil", "--threads", "--nonblocking"]
        command += ["--rate", str(self.rate), "--format", "raw", "--output", str(out / "raw.txt")]
        for _ in range(ATTACH_TRIES):  # py-spy's attach now and then fails to read the interpreter
            with (out / "py-spy.log").open("wb") as log:
                self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            time.sleep(0.5)  # attached, or refused by then
            if self._proc.poll() is None:
                break
        else:
            self.unavailable = "py-spy could not attach: " + _first_line(out / "py-spy.log")
            self._proc = None
            return False
        self._began = time.perf_counter()
        self._waiter = threading.Thread(target=self._wait_loop, name="gil-waiter", daemon=True)
        self._waiter.start()
        return True

    def _wait_loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(WAIT_S)
            self._waits.append(time.perf_counter() - t0 - WAIT_S)

    def stop(self, audio_s: float) -> dict[str, Any]:
        """The report over the time since `start`, per `audio_s` seconds of audio done in it."""
        if self._proc is None or self._dir is None:
            return {"measured": False, "why": self.unavailable or "not started"}
        wall = time.perf_counter() - self._began
        self._stop.set()
        if self._waiter is not None:
            self._waiter.join()
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on an interrupt
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        out = Path(self._dir.name)
        raw = out / "raw.txt"
        log = (out / "py-spy.log").read_text(errors="replace") if (out / "py-spy.log").exists() else ""
        if not raw.is_file():
            self._dir.cleanup()
            return {"measured": False, "why": "py-spy wrote nothing: " + (log.strip()[-300:] or "no message")}
        groups, lines = parse_raw(raw.read_text(errors="replace"))
        self._dir.cleanup()
        return summarise(groups, lines, self._waits, wall, audio_s, self.rate, log)


def summarise(
    groups: Counter[str],
    lines: Counter[tuple[str, str]],
    waits: list[float],
    wall_s: float,
    audio_s: float,
    rate: int,
    log: str = "",
) -> dict[str, Any]:
    held = sum(groups.values())
    expected = max(1.0, rate * wall_s)
    share = min(1.0, held / expected)
    held_s = share * wall_s
    per_audio_h = held_s * HOUR / audio_s if audio_s > 0 else None
    late = np.asarray(waits) * 1000.0 if waits else np.zeros(1)
    behind = [row for row in log.splitlines() if "behind" in row]
    return {
        "measured": True,
        "wall_s": round(wall_s, 1),
        "rate_hz": rate,
        "held_samples": held,
        "held_share": round(share, 4),
        "held_s": round(held_s, 2),
        "held_s_per_audio_h": None if per_audio_h is None else round(per_audio_h, 1),
        "thread_ceiling_h_per_h": None if not per_audio_h else round(HOUR / per_audio_h, 0),
        "by_thread": {g: round(n / max(1, held), 3) for g, n in groups.most_common()},
        "top_lines": [
            {"thread": g, "line": line, "share": round(n / max(1, held), 3)}
            for (g, line), n in lines.most_common(TOP_LINES)
        ],
        "wait_ms": {
            "wakes": len(waits),
            "p50": round(float(np.percentile(late, 50)), 2),
            "p99": round(float(np.percentile(late, 99)), 2),
            "max": round(float(late.max()), 1),
            "over_50ms": int((late > LONG_WAIT_S * 1000).sum()),
        },
        "py_spy_behind_warnings": len(behind),
    }


def markdown_lines(report: dict[str, Any], title: str) -> list[str]:
    """The report as a section of a markdown file."""
    if not report.get("measured"):
        return ["", f"## {title}", "", f"Not measured: {report.get('why', 'unknown')}."]
    w = report["wait_ms"]
    ceiling = report["thread_ceiling_h_per_h"]
    lines = [
        "",
        f"## {title}",
        "",
        f"py-spy sampled the lock {report['rate_hz']} times a second for {report['wall_s']:.0f} s: held "
        f"{report['held_share']:.1%} of the wall time, {report['held_s_per_audio_h']} s per audio hour"
        + (
            f", so threads sharing it cannot pass about {ceiling:.0f} hours of audio per hour however many "
            "cores (convoys set in below that)"
            if ceiling
            else ""
        )
        + ". A thread waking every 5 ms waited for it (and for a core) "
        f"{w['p50']} ms at the median, {w['p99']} ms at p99, {w['max']} ms at most; "
        f"{w['over_50ms']} of {w['wakes']} wakes were over 50 ms late.",
        "",
        "Held, by thread: "
        + ", ".join(f"{g} {share:.0%}" for g, share in report["by_thread"].items() if share >= 0.005)
        + ".",
        "",
        "| thread | innermost Python line holding it | share of held samples |",
        "|---|---|---|",
    ]
    lines += [f"| {t['thread']} | `{t['line']}` | {t['share']:.1%} |" for t in report["top_lines"]]
    if report["py_spy_behind_warnings"]:
        lines += ["", f"py-spy fell behind {report['py_spy_behind_warnings']} time(s): the share is a floor."]
    return lines


def _first_line(path: Path) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return text.splitlines()[0] if text else "no message"
