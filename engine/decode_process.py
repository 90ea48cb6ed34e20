"""The decode stage's work in child processes: PyAV holds the interpreter lock while it decodes.

Measured on 2 cores (240 s of audio): two threads decoding at once took 2.1x (MP3) and 1.8x (WAV)
the time of the same two files decoded one after the other, as they fought over the lock, and every
other stage's Python work waited behind them; two child processes took 0.52x (MP3). Sampled under
the throughput bench (bench/gil.py), decoding was half of all the time the lock was held. So each
decode runs in a child that does nothing else: `decode_file` there, then a header and the samples'
raw bytes back over a pipe, read by `os.readv` straight into the array the engine keeps (the lock is
free while the kernel copies; no second copy of the audio in this process; nothing in /dev/shm,
which containers often keep small). Reading them with a connection's `recv_bytes` held the lock for
its buffer copies: a fifth of all the time the lock was held in the throughput bench.

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
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from voxdock.engine.decode import DecodedAudio, DecodeError, decode_file

CLOSE_WAIT_S = 5.0


def serve(requests: Connection, replies: Connection) -> None:
    """A child's loop: a path in, a header and the samples (or an error) out, until None or EOF."""
    # Nothing is configured to log here; without a handler Python's last resort would print warnings.
    logging.getLogger().addHandler(logging.NullHandler())
    while True:
        try:
            path = requests.recv()
        except (EOFError, OSError):  # the engine is gone
            return
        if path is None:
            return
        started = time.process_time()
        try:
            audio = decode_file(path)
        except DecodeError as exc:
            replies.send(("error", str(exc)))
            continue
        except Exception as exc:  # anything else is still this file's failure, not the child's
            replies.send(("error", f"decoder error: {type(exc).__name__}: {exc}"))
            continue
        data = np.ascontiguousarray(audio.samples).data.cast("B")
        head = (audio.samples.shape[0], audio.source_rate, audio.source_channels, audio.codec)
        replies.send(("ok", *head, audio.container, time.process_time() - started))
        sent = 0
        while sent < len(data):  # raw bytes after the header: the engine reads them into place
            sent += os.write(replies.fileno(), data[sent:])
        del data, audio


class _Child:
    def __init__(self) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(request_r), str(reply_w)],
                pass_fds=(request_r, reply_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
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
        """(the audio, the child's CPU seconds on it); DecodeError for the file's own problems,
        EOFError/OSError when the child died."""
        self.requests.send(path)
        head = self.replies.recv()
        if head[0] == "error":
            raise DecodeError(head[1])
        _, count, rate, channels, codec, container, cpu_s = head
        samples = np.empty(int(count), dtype=np.float32)
        view = samples.data.cast("B")
        got = 0
        while got < len(view):  # straight into the array, the lock released while the kernel copies
            read = os.readv(self.replies.fileno(), [view[got:]])
            if read == 0:
                raise EOFError("the decoder closed its end")
            got += read
        del view
        return DecodedAudio(samples, rate, channels, codec, container), float(cpu_s)

    def died(self) -> str:
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"

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


class DecoderProcesses:
    """`decode(path)` in a child process; children kept for the next call, as many as calls at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False

    @property
    def children(self) -> int:
        with self._lock:
            return len(self._idle) + len(self._busy)

    def child_pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in [*self._idle, *self._busy]]

    def decode(self, path: str | Path) -> tuple[DecodedAudio, float]:
        """(the decoded audio, CPU seconds the child spent on it). Raises DecodeError with a reason
        for a file that cannot be decoded, or whose decoder died."""
        child = self._take()
        alive = True
        try:
            return child.decode(str(path))
        except (EOFError, OSError):
            alive = False
            raise DecodeError(f"the decoder process died on this file ({child.died()})") from None
        finally:
            self._give_back(child, alive)

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
            self._busy.add(child)
        return child

    def _give_back(self, child: _Child, alive: bool) -> None:
        with self._lock:
            self._busy.discard(child)
            if alive and not self._closed:
                self._idle.append(child)
                return
        if alive:
            child.close(CLOSE_WAIT_S)
        else:
            child.close(0)

    def close(self) -> None:
        """Stop the idle children (busy ones stop when their file is done)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close(CLOSE_WAIT_S)


if __name__ == "__main__":  # a child: python -m voxdock.engine.decode_process REQUEST_FD REPLY_FD
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
