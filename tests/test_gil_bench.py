"""bench/gil.py: py-spy really sampling this process tells a thread that holds the interpreter lock
from one that works with it released."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from gil import GilSampler, markdown_lines, parse_raw, thread_group

RUN_S = 2.0


def _spin() -> None:  # pure Python: holds the lock but for the forced switches
    end = time.perf_counter() + RUN_S
    while time.perf_counter() < end:
        sum(range(500))


def _multiply() -> None:  # BLAS with the lock released
    a = np.random.default_rng(0).random((600, 600))
    end = time.perf_counter() + RUN_S
    while time.perf_counter() < end:
        a @ a


def _sample(target: Callable[[], None], name: str) -> dict[str, Any]:
    sampler = GilSampler()
    assert sampler.start(), sampler.unavailable
    worker = threading.Thread(target=target, name=name)
    worker.start()
    worker.join()
    return sampler.stop(audio_s=3600.0)


def test_a_thread_holding_the_lock_is_seen_holding_it() -> None:
    report = _sample(_spin, "voxdock-diarize-7")
    assert report["measured"]
    assert report["held_share"] > 0.5
    assert next(iter(report["by_thread"])) == "diarize"
    assert "_spin" in report["top_lines"][0]["line"]
    text = "\n".join(markdown_lines(report, "spin"))
    assert "diarize" in text and "hours of audio per hour" in text


def test_a_thread_working_with_the_lock_released_is_not() -> None:
    report = _sample(_multiply, "voxdock-asr-0")
    assert report["measured"]
    assert report["held_share"] < 0.2


def test_raw_lines_are_read_per_thread_group_and_innermost_line() -> None:
    raw = (
        "thread (101): voxdock-asr-1;Thread.run (threading.py:982);work (a.py:3) 7\n"
        "thread (102): voxdock-asr-2;Thread.run (threading.py:982);work (a.py:3) 3\n"
        "thread (103): MainThread 2\n"
    )
    groups, lines = parse_raw(raw)
    assert groups == {"asr": 10, "MainThread": 2}
    assert lines[("asr", "work (a.py:3)")] == 10
    assert thread_group("voxdock-store-12") == "store" and thread_group("heartbeat") == "heartbeat"
