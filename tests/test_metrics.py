"""Live pace, RTF and ETA while a long file is in flight: EngineCounters driven through a simulated run.

The counters are the real ones; only time is simulated (a clock the test moves), so a two-hour run
takes milliseconds. The run is the shape that misled the live display: submit orders files largest
first, so a one-hour file starts at once on one worker while short files pass on the other; then the
short files run out and the long one goes on alone.
"""

from __future__ import annotations

import pytest

from voxdock.engine.metrics import EngineCounters, StageMetrics, Totals
from voxdock.formatting import estimate_eta

LONG_S = 3600.0  # audio seconds of the long file
SHORT_S = 300.0
SHORTS = 5
FILE_RTF = 0.4  # wall seconds per audio second of one file on one worker (contended, 2 workers)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_rtf(totals: Totals) -> float | None:
    """End-to-end RTF as the displays derive it from the pace."""
    return 1 / totals.hours_per_hour if totals.hours_per_hour else None


def old_live_rtf(totals: Totals) -> float | None:
    """What `voxdock ingest` showed: the wall clock now over completed audio."""
    return totals.active_wall_s / totals.audio_s_done if totals.audio_s_done else None


def simulate(*, report_progress: bool, step_s: float = 10.0) -> tuple[list[tuple[float, Totals]], Totals]:
    """Worker A: the long file from t=0 to 1440 s. Worker B: five short files back to back, t=0 to
    600 s. With `report_progress`, every file reports how far ASR has transcribed, a segment (30 s of
    audio) every 12 s of wall. Returns a snapshot every `step_s` seconds while the long file is in
    flight, and the one after the run."""
    clock = Clock()
    start = clock.now
    counters = EngineCounters(clock=clock)
    counters.file_claimed(key="long")
    counters.file_claimed(key="short-0")
    long_end = LONG_S * FILE_RTF
    short_wall = SHORT_S * FILE_RTF
    events: list[tuple[float, str, float]] = [
        (short_wall * (i + 1), f"short-{i}", 0.0) for i in range(SHORTS)
    ]
    if report_progress:
        events += [(t * FILE_RTF, "long", t) for t in range(30, int(LONG_S), 30)]
        events += [
            (short_wall * i + t * FILE_RTF, f"short-{i}", t)
            for i in range(SHORTS)
            for t in range(30, int(SHORT_S), 30)
        ]
    events += [(t, "sample", 0.0) for t in range(int(step_s), int(long_end), int(step_s))]
    events.append((long_end, "long", 0.0))
    samples: list[tuple[float, Totals]] = []
    # At the same instant: progress, then completions, then the sample.
    for at, what, progress in sorted(events, key=lambda e: (e[0], e[1] == "sample", e[2] == 0.0)):
        clock.now = start + at
        if what == "sample":
            samples.append((at, counters.snapshot()))
        elif progress:
            counters.file_progress(what, progress)
        elif what == "long":
            counters.file_done(LONG_S, 100, False, key="long")
        else:
            index = int(what.split("-")[1])
            counters.file_done(SHORT_S, 10, False, key=what)
            if index + 1 < SHORTS:
                counters.file_claimed(key=f"short-{index + 1}")
    clock.now += 5.0  # idle after the run: the active clock stops
    return samples, counters.snapshot()


@pytest.mark.parametrize("report_progress", [False, True])
def test_the_run_ends_at_the_wall_time_over_the_audio(report_progress: bool) -> None:
    _, final = simulate(report_progress=report_progress)
    assert final.files_done == SHORTS + 1 and final.files_in_flight == 0
    assert final.active_wall_s == pytest.approx(LONG_S * FILE_RTF)
    final_rtf = LONG_S * FILE_RTF / (LONG_S + SHORTS * SHORT_S)
    assert live_rtf(final) == pytest.approx(final_rtf)  # 1440 / 5100 = 0.282
    assert old_live_rtf(final) == pytest.approx(final_rtf)


def test_without_progress_reports_the_live_rtf_holds_instead_of_climbing() -> None:
    samples, final = simulate(report_progress=False)
    after_shorts = [s for t, s in samples if t > SHORTS * SHORT_S * FILE_RTF]
    assert after_shorts
    # The old figure climbed from 0.41 to 0.95 over the long file's last 840 s, and ended at 0.28.
    old = [old_live_rtf(s) for s in after_shorts]
    assert old[0] == pytest.approx(0.41, abs=0.01) and old[-1] == pytest.approx(0.95, abs=0.01)
    # Now: completed work over the clock when it completed. The long file's time is not counted
    # without its audio, so the figure stays at the short files' 0.4 until the long one lands.
    assert all(live_rtf(s) == pytest.approx(FILE_RTF) for s in after_shorts)
    assert all(1 / (s.hours_per_hour_now or 1) == pytest.approx(FILE_RTF) for s in after_shorts)
    assert live_rtf(final) == pytest.approx(0.282, abs=0.001)


def test_with_progress_reports_the_live_rtf_tracks_the_run_throughout() -> None:
    samples, final = simulate(report_progress=True)
    # Both workers busy: 2 / 0.4 = 5 audio-s per s, RTF 0.2. The long file alone after 600 s: 2.5
    # audio-s per s, RTF 0.4. The run's figure goes from 0.2 to the final 0.282 as the long file runs
    # on alone (it truly does get slower), and the "now" figure shows each phase.
    run = [live_rtf(s) for t, s in samples if t >= 30]
    assert all(v is not None and 0.19 <= v <= 0.29 for v in run), run
    assert run == sorted(run, key=lambda v: round(v or 0, 2))  # only the true slow-down, no jumps back
    assert live_rtf(final) == pytest.approx(0.282, abs=0.001)
    now = {t: 1 / s.hours_per_hour_now for t, s in samples if s.hours_per_hour_now}
    assert all(v == pytest.approx(0.2, abs=0.02) for t, v in now.items() if 40 <= t < 600)
    assert all(v == pytest.approx(0.4, abs=0.01) for t, v in now.items() if t >= 650)


@pytest.mark.parametrize("report_progress", [False, True])
def test_the_eta_for_the_same_files_left_holds_while_the_long_file_is_in_flight(
    report_progress: bool,
) -> None:
    samples, _ = simulate(report_progress=report_progress)
    # Three more short files of the batch left, as the console and `voxdock ingest` estimate it.
    etas = [
        estimate_eta(3, SHORTS, SHORTS * SHORT_S, s.hours_per_hour_now or s.hours_per_hour)
        for t, s in samples
        if t >= 650
    ]
    # The pace is 2.5 audio-s per s once the long file runs alone: 900 s of audio take 360 s. Before,
    # the "now" pace ran dry 30 s after the last completion and the run's pace fell with the long
    # file's elapsed time: the same estimate grew from 420 s to 858 s.
    assert all(e == pytest.approx(360.0, rel=0.02) for e in etas), etas


def test_the_now_pace_spans_at_least_the_window_between_two_counts() -> None:
    clock = Clock()
    counters = EngineCounters(clock=clock)
    for i in range(4):  # files of 60 s audio finishing 2 s apart, then one 60 s later
        counters.file_claimed(key=i)
    for i in range(3):
        clock.now += 2.0
        counters.file_done(60.0, 1, False, key=i)
    first = counters.snapshot()
    # Three files in 6 s since the start: the window reaches back to the start, not to 2 s ago.
    assert first.hours_per_hour_now == pytest.approx(180.0 / 6.0)
    clock.now += 60.0
    counters.file_done(60.0, 1, False, key=3)
    later = counters.snapshot()
    # The window is the 60 s since the last count 30 s or more before: one file in 60 s.
    assert later.hours_per_hour_now == pytest.approx(60.0 / 60.0)
    assert later.hours_per_hour == pytest.approx(240.0 / 66.0)


def test_failed_and_requeued_files_cost_time_and_keep_their_processed_audio() -> None:
    clock = Clock()
    counters = EngineCounters(clock=clock)
    counters.file_claimed(key="a")
    counters.file_claimed(key="b")
    clock.now += 10.0
    counters.file_progress("a", 50.0)
    counters.file_progress("a", 40.0)  # progress never goes back
    clock.now += 10.0
    counters.file_failed(key="a")  # 50 s of audio processed, then failed: work done at the pace
    clock.now += 20.0
    counters.file_requeued(key="b")  # no progress reported: 40 s of wall for nothing
    totals = counters.snapshot()
    assert totals.files_failed == 1 and totals.files_in_flight == 0 and totals.audio_s_done == 0
    assert totals.hours_per_hour == pytest.approx(50.0 / 40.0)


def test_files_claimed_without_a_key_count_when_they_finish() -> None:
    clock = Clock()
    counters = EngineCounters(clock=clock)
    counters.file_claimed()
    clock.now += 30.0
    assert counters.snapshot().hours_per_hour is None  # nothing counted yet: unknown, not zero
    counters.file_done(120.0, 3, True)
    totals = counters.snapshot()
    assert totals.hours_per_hour == pytest.approx(4.0)
    assert totals.fast_path_skips == 1 and totals.segments_written == 3


def test_a_stage_busy_on_a_long_item_keeps_its_last_rtf_now() -> None:
    clock = Clock()
    stage = StageMetrics("asr", clock=clock)
    stage.started()
    clock.now += 12.0
    stage.finished()
    stage.record(audio_s=60.0, busy_s=12.0)
    stage.started()  # the long file: nothing recorded for minutes
    clock.now += 600.0
    snap = stage.snapshot(queue_depth=0, workers=1, batch_size=8, batch_size_now=8)
    assert snap.rtf_now == pytest.approx(0.2) and snap.workers_busy == 1
    stage.finished()
    clock.now += 1.0
    idle = stage.snapshot(queue_depth=0, workers=1, batch_size=8, batch_size_now=8)
    assert idle.rtf_now is None  # idle and nothing recent: no "now" to show
    assert idle.rtf_run == pytest.approx(0.2)
