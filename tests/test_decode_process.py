"""The decode stage decodes in child processes (engine/decode_process.py): the same audio, the same
errors, several files at once, and a decoder that dies costs only its file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine import decode_process
from voxdock.engine.decode import DecodeError, decode_file
from voxdock.engine.decode_process import DecoderProcesses

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def decoders() -> Iterator[DecoderProcesses]:
    pool = DecoderProcesses()
    yield pool
    pool.close()


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """Faint noise, written a minute at a time (an hour is 115 MB)."""
    rng = np.random.default_rng(3)
    minute = rng.normal(0, 300, 60 * rate).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        whole, rest = divmod(int(seconds * rate), 60 * rate)
        for _ in range(whole):
            out.writeframes(minute)
        out.writeframes(minute[: 2 * rest])
    return path


@pytest.mark.parametrize("name", ["meeting_2spk.wav", "interview_3spk.flac", "briefing_video.mp4"])
def test_a_child_decodes_exactly_what_this_process_does(decoders: DecoderProcesses, name: str) -> None:
    here = decode_file(EXAMPLES / name)
    there, cpu_s = decoders.decode(EXAMPLES / name)
    assert np.array_equal(there.samples, here.samples)
    assert there.samples.dtype == np.float32 and there.samples.flags.writeable
    assert (there.source_rate, there.source_channels, there.codec, there.container) == (
        here.source_rate,
        here.source_channels,
        here.codec,
        here.container,
    )
    assert cpu_s > 0  # the child's CPU comes back, for the stage's host cost


def test_a_file_that_cannot_be_decoded_fails_with_its_reason_and_the_child_goes_on(
    decoders: DecoderProcesses, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_text("not audio at all\n" * 100)
    with pytest.raises(DecodeError) as here:
        decode_file(bad)
    with pytest.raises(DecodeError) as there:
        decoders.decode(bad)
    assert str(there.value) == str(here.value)
    with pytest.raises(DecodeError, match="file not found"):
        decoders.decode(tmp_path / "gone.wav")
    audio, _ = decoders.decode(EXAMPLES / "meeting_2spk.wav")
    assert audio.duration_s > 1
    assert decoders.children == 1  # one child served all three


def test_files_decoded_at_once_get_a_child_each(decoders: DecoderProcesses, tmp_path: Path) -> None:
    paths = [_wav(tmp_path / f"{i}.wav", 60.0 + i) for i in range(3)]
    results: dict[int, int] = {}

    def work(i: int) -> None:
        audio, _ = decoders.decode(paths[i])
        results[i] = audio.samples.shape[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: (60 + i) * 16000 for i in range(3)}
    assert 2 <= decoders.children <= 3  # at least two ran at once
    pids = decoders.child_pids()
    assert os.getpid() not in pids
    decoders.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(DecodeError, match="stopping"):
        decoders.decode(paths[0])


def test_a_decoder_that_dies_fails_only_its_file(decoders: DecoderProcesses, tmp_path: Path) -> None:
    decoders.decode(EXAMPLES / "meeting_2spk.wav")  # a child is up
    (child,) = decoders.child_pids()
    long = _wav(tmp_path / "long.wav", 3600.0)  # a second or more to decode and send: it dies on the way
    thread, failure = _decode_in_background(decoders, long)
    time.sleep(0.2)
    os.kill(child, signal.SIGKILL)  # what a codec crashing on a bad file does to it
    thread.join(60)
    assert len(failure) == 1 and isinstance(failure[0], DecodeError)
    assert "decoder process died" in str(failure[0]) and "signal 9" in str(failure[0])
    audio, _ = decoders.decode(EXAMPLES / "meeting_2spk.wav")  # a new child takes the next file
    assert audio.duration_s > 1
    assert child not in decoders.child_pids()


def test_a_child_that_died_while_idle_is_replaced(decoders: DecoderProcesses) -> None:
    decoders.decode(EXAMPLES / "meeting_2spk.wav")
    (child,) = decoders.child_pids()
    os.kill(child, signal.SIGKILL)
    time.sleep(0.2)
    audio, _ = decoders.decode(EXAMPLES / "meeting_2spk.wav")
    assert audio.duration_s > 1 and child not in decoders.child_pids()


def _decode_in_background(decoders: DecoderProcesses, path: Path) -> tuple[threading.Thread, list[object]]:
    """A thread decoding `path`, started; its outcome (the audio or the exception) lands in the list."""
    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(decoders.decode(path))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_decoding_works_under_a_screen_that_replaced_stderr() -> None:
    """Textual replaces sys.stderr with an object whose fileno is -1 (a first design, on
    multiprocessing's forkserver, handed that number to the process it started: every decode in the
    console failed with "bad value(s) in fds_to_keep"). In a fresh interpreter, as the console is."""
    script = f"""
import io, sys
from voxdock.engine import decode_process
from voxdock.engine.decode_process import DecoderProcesses
class Screen(io.StringIO):
    def fileno(self): return -1
sys.stderr = Screen()
pool = DecoderProcesses()
audio, _ = pool.decode({str(EXAMPLES / "meeting_2spk.wav")!r})
pool.close()
assert isinstance(sys.stderr, Screen)
print(audio.samples.shape[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == decode_file(EXAMPLES / "meeting_2spk.wav").samples.shape[0]


def test_a_child_holds_a_block_not_the_whole_file(decoders: DecoderProcesses, tmp_path: Path) -> None:
    """Samples are sent as they are decoded: an hour of audio is 230 MB, the child's peak stays far
    below (sent whole at the end, it was in both processes at once)."""
    hour = _wav(tmp_path / "hour.wav", 3600.0)
    audio, _ = decoders.decode(hour)
    assert audio.samples.shape[0] == 3600 * 16000
    (child,) = decoders.child_pids()
    status = Path(f"/proc/{child}/status").read_text()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    assert peak_mb < 150, peak_mb


def test_a_transfer_broken_off_on_this_side_never_reaches_the_next_file(
    decoders: DecoderProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the engine's side fails while a child is still sending (memory for the samples, say), that
    child's pipe still holds part of the file: reused, it handed each next file the one before's audio.
    It is discarded instead."""
    import voxdock.engine.decode_process as decode_process

    failures = [MemoryError()]

    class FailingOnce(decode_process.SampleBuffer):
        def reserve(self, count: int) -> np.ndarray:
            if failures:
                raise failures.pop()
            return super().reserve(count)

    monkeypatch.setattr(decode_process, "SampleBuffer", FailingOnce)
    with pytest.raises(DecodeError, match="not enough memory"):
        decoders.decode(EXAMPLES / "meeting_2spk.wav")
    (first,) = decoders.child_pids() or [None]
    assert first is None  # thrown away, not back in the pool
    audio, _ = decoders.decode(EXAMPLES / "interview_3spk.flac")
    assert np.array_equal(audio.samples, decode_file(EXAMPLES / "interview_3spk.flac").samples)


def test_the_folder_it_runs_from_cannot_shadow_the_decoders_modules(
    decoders: DecoderProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "av.py").write_text("raise ImportError('a stray av.py')\n")
    monkeypatch.chdir(tmp_path)
    audio, _ = decoders.decode(EXAMPLES / "meeting_2spk.wav")
    assert audio.duration_s > 1


def test_a_decoder_that_cannot_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "numpy.py").write_text("raise SystemExit('numpy is broken in this environment')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    pool = DecoderProcesses()
    try:
        with pytest.raises(DecodeError, match="numpy is broken in this environment"):
            pool.decode(EXAMPLES / "meeting_2spk.wav")
    finally:
        pool.close()


def test_abort_stops_a_decode_that_would_never_end(decoders: DecoderProcesses, tmp_path: Path) -> None:
    """A stop that hands files back kills the busy children: a decode that would never end (here its
    child is frozen mid-file, as a codec stuck on a broken file or a stalled network mount would be)
    ends at once, and no decode starts after."""
    decoders.decode(EXAMPLES / "meeting_2spk.wav")  # a child is up
    (child,) = decoders.child_pids()
    long = _wav(tmp_path / "long.wav", 3600.0)
    thread, failure = _decode_in_background(decoders, long)
    time.sleep(0.2)
    os.kill(child, signal.SIGSTOP)
    time.sleep(0.5)
    assert thread.is_alive()  # waiting for a child that will never answer
    decoders.abort()
    thread.join(30)
    assert not thread.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], DecodeError)
    assert not _alive(child) and decoders.children == 0
    with pytest.raises(DecodeError, match="stopping"):
        decoders.decode(EXAMPLES / "meeting_2spk.wav")


def test_abort_while_a_child_starts_stops_that_child_too(
    decoders: DecoderProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An abort between a decode taking its (new) child and counting it busy: the child is stopped and
    the file not decoded (it was neither idle nor busy when the abort looked)."""
    started = decode_process._Child.__init__
    pids: list[int] = []

    def slow_start(child: decode_process._Child) -> None:
        started(child)
        pids.append(child.pid)
        time.sleep(0.5)  # the abort comes now

    monkeypatch.setattr(decode_process._Child, "__init__", slow_start)
    thread, outcome = _decode_in_background(decoders, EXAMPLES / "meeting_2spk.wav")
    time.sleep(0.2)
    decoders.abort()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], DecodeError), outcome
    assert "stopping" in str(outcome[0])
    assert len(pids) == 1 and not _alive(pids[0])
