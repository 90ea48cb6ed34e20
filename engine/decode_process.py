"""The decode stage's work in child processes: PyAV holds the interpreter lock while it decodes.

Measured on 2 cores (240 s of audio): two threads decoding at once took 2.1x (MP3) and 1.8x (WAV)
the time of the same two files decoded one after the other, as they fought over the lock, and every
other stage's Python work waited behind them; two child processes took 0.52x (MP3). Sampled under
the throughput bench (bench/gil.py), decoding was half of all the time the lock was held. So each
decode runs in a child that does nothing else: `decode_into` there (decode.py's own loop and checks),
the samples sent back in blocks of about a minute as they are decoded, each a small header and raw
bytes that `os.readv` reads straight into the array the engine keeps. The lock is free while the
kernel copies (reading with a connection's `recv_bytes` held it for its buffer copies: a fifth of all
the time the lock was held in the throughput bench); the child never holds more than a block (sent
whole at the end, a 3-hour file's samples were in both processes at once: 710 MB more at the peak);
nothing goes through /dev/shm, which containers often keep small.

A child is a plain `python -m voxdock.engine.decode_process` (not multiprocessing's spawn or
forkserver, which import the caller's main script again in the child: a script without a main guard
would run twice, and the console's replaced stderr broke their start). Children are kept for the next
file, one per decode running at once, and closed with the engine. A child that dies mid-file (a
crash in a codec library) fails that file with the reason, and the next file gets a new child: the
engine itself goes on. Children run in their own session with their output discarded: Ctrl-C in
the terminal does not reach them (the engine decides whether files in flight finish) and nothing they
print lands on the console's screen. A child whose engine is gone reads end of file and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from voxdock.engine.decode import DecodedAudio, DecodeError, SampleBuffer, audio_of, decode_into

CLOSE_WAIT_S = 5.0
BLOCK_SAMPLES = 1 << 20  # 4 MB of samples (65 s of audio) per block sent


class _Forward:
    """The child's sink: decoded chunks checked, clipped and sent on in blocks as they come, so the
    child never holds more than a block of the file."""

    def __init__(self, replies: Connection, declared: float | None) -> None:
        self.replies = replies
        self.count = 0
        self.finite = True
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        replies.send(("start", declared))

    def add(self, chunk: np.ndarray) -> None:
        self.finite = self.finite and bool(np.isfinite(chunk).all())
        self.count += chunk.shape[0]
        self._pending.append(np.clip(chunk, -1.0, 1.0))
        self._pending_samples += chunk.shape[0]
        if self._pending_samples >= BLOCK_SAMPLES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending)
        self._pending, self._pending_samples = [], 0
        data = block.data.cast("B")
        self.replies.send(("block", block.shape[0]))
        sent = 0
        while sent < len(data):  # raw bytes after the header: the engine reads them into place
            sent += os.write(self.replies.fileno(), data[sent:])


def serve(requests: Connection, replies: Connection) -> None:
    """A child's loop: a path in; ("start", declared seconds), ("block", n) + n samples' raw bytes
    ..., then ("end", source, CPU seconds) or ("error", reason) out; until None or end of file."""
    # Nothing is configured to log here; without a handler Python's last resort would print warnings.
    logging.getLogger().addHandler(logging.NullHandler())
    while True:
        try:
            path = requests.recv()
        except (EOFError, OSError):  # the engine is gone
            return
        if path is None:
            return
        _decode_one(path, replies)


def _decode_one(path: str, replies: Connection) -> None:
    started = time.process_time()
    sinks: list[_Forward] = []

    def forward(declared: float | None) -> _Forward:
        sinks.append(_Forward(replies, declared))
        return sinks[0]

    try:
        info = decode_into(path, forward)
        sinks[0].flush()
    except DecodeError as exc:
        replies.send(("error", str(exc), time.process_time() - started))
        return
    except Exception as exc:  # anything else is still this file's failure, not the child's
        replies.send(("error", f"decoder error: {type(exc).__name__}: {exc}", time.process_time() - started))
        return
    replies.send(("end", info, time.process_time() - started))


class ReportedError(DecodeError):
    """The child's own verdict on a file: the pipe is in step, the child can take the next file."""

    def __init__(self, reason: str, cpu_s: float) -> None:
        super().__init__(reason)
        self.cpu_s = cpu_s


class _NotTaken(Exception):
    """The child was gone before it took the file (it died while idle): another child may."""


class _Child:
    def __init__(self) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child, closed with it
        try:
            self.process = subprocess.Popen(
                # -P: nothing from the current folder on the child's path (an av.py there would
                # shadow the real one); voxdock comes from where it is installed, as for the engine
                [sys.executable, "-P", "-m", __name__, str(request_r), str(reply_w)],
                pass_fds=(request_r, reply_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
            )
        except BaseException:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            self._stderr.close()
            raise
        os.close(request_r)
        os.close(reply_w)
        self.requests = Connection(request_w, readable=False)
        self.replies = Connection(reply_r, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def decode(self, path: str) -> tuple[DecodedAudio, float]:
        """(the audio, the child's CPU seconds on it). ReportedError for the file's own problems
        (the child goes on), _NotTaken when the child was already gone, EOFError/OSError when it
        died on the way; anything else leaves the pipe out of step: the caller discards the child."""
        try:
            self.requests.send(path)
        except OSError:
            raise _NotTaken from None
        samples: SampleBuffer | None = None
        while True:
            message = self.replies.recv()
            if message[0] == "start":
                samples = SampleBuffer(message[1])
            elif message[0] == "block":
                if samples is None:
                    raise RuntimeError("a block before the start")
                self._read_into(samples.reserve(int(message[1])))
            elif message[0] == "error":
                raise ReportedError(message[1], float(message[2]))
            elif message[0] == "end":
                _, info, cpu_s = message
                break
            else:
                raise RuntimeError(f"unknown message {message[0]!r}")
        if samples is None:
            raise ReportedError("the decoder sent no audio", float(cpu_s))
        audio = samples.array()
        del samples
        return audio_of(audio, info), cpu_s

    def _read_into(self, place: np.ndarray) -> None:
        """The next raw bytes on the pipe straight into `place`, the lock released while the kernel
        copies."""
        view = place.data.cast("B")
        got = 0
        while got < len(view):
            read = os.readv(self.replies.fileno(), [view[got:]])
            if read == 0:
                raise EOFError("the decoder closed its end")
            got += read

    def died(self) -> str:
        """How the child ended (killed if it has not), with the last line it wrote, if any."""
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "stopped answering"
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        said = self._last_words()
        return f"{how}: {said}" if said else how

    def _last_words(self) -> str:
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return lines[-1][:200] if lines else ""

    def kill(self) -> None:
        """Now, mid-file or not: its decode reads end of file."""
        with contextlib.suppress(OSError):  # already gone
            self.process.kill()

    def close(self, wait: float) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.requests.send(None)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.requests.close()
        self.replies.close()
        self._stderr.close()


class DecoderProcesses:
    """`decode(path)` in a child process; children kept for the next call, as many as calls at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False
        self.cpu_s = 0.0  # CPU seconds the children reported, every file together

    @property
    def children(self) -> int:
        with self._lock:
            return len(self._idle) + len(self._busy)

    def child_pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in [*self._idle, *self._busy]]

    def decode(self, path: str | Path) -> tuple[DecodedAudio, float]:
        """(the decoded audio, CPU seconds the child spent on it). Raises DecodeError with a reason
        for a file that cannot be decoded, or whose decoder died. A child goes back to the pool only
        after it has answered in full (its audio, or its reason): after anything else its pipe may
        still hold part of this file, and the next file would read it."""
        for attempt in (1, 2):
            child = self._take()
            in_step = False
            try:
                audio = child.decode(str(path))
                in_step = True
                self.cpu_s += audio[1]
                return audio
            except ReportedError as exc:
                in_step = True
                self.cpu_s += exc.cpu_s
                raise
            except _NotTaken:
                if attempt == 2:
                    raise DecodeError(f"no decoder process would start ({child.died()})") from None
            except (EOFError, OSError):
                raise DecodeError(f"the decoder process died on this file ({child.died()})") from None
            except MemoryError:
                raise DecodeError("not enough memory for this file's decoded audio") from None
            finally:
                self._give_back(child, in_step)
        raise AssertionError("unreachable")

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise DecodeError("the engine is stopping: decoding is closed")
            child = self._idle.pop() if self._idle else None
        if child is not None and not child.alive():  # died while idle
            child.close(0)
            child = None
        if child is None:
            child = _Child()
        with self._lock:
            closed = self._closed  # an abort while the child started: it would not have been killed
            if not closed:
                self._busy.add(child)
        if closed:
            child.close(0)
            raise DecodeError("the engine is stopping: decoding is closed")
        return child

    def _give_back(self, child: _Child, in_step: bool) -> None:
        with self._lock:
            self._busy.discard(child)
            if in_step and not self._closed:
                self._idle.append(child)
                return
        child.close(CLOSE_WAIT_S if in_step else 0)  # out of step: killed, never reused

    def abort(self) -> None:
        """Stop decoding at once: busy children are killed (their decodes raise DecodeError), idle
        ones closed, and no decode starts any more. A stop that hands files back does not wait for a
        3-hour file's decode, or for a codec stuck on a broken one."""
        with self._lock:
            self._closed = True
            busy = list(self._busy)
        for child in busy:
            child.kill()
        self.close()

    def close(self) -> None:
        """Stop the idle children (busy ones stop when their file is done)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close(CLOSE_WAIT_S)


if __name__ == "__main__":  # a child: python -m voxdock.engine.decode_process REQUEST_FD REPLY_FD
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
