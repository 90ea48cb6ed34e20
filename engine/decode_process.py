"""The decode stage's work in child processes: PyAV holds the interpreter lock while it decodes.

Measured on 2 cores (240 s of audio): two threads decoding at once took 2.1x (MP3) and 1.8x (WAV)
the time of the same two files decoded one after the other, as they fought over the lock, and every
other stage's Python work waited behind them; two child processes took 0.52x (MP3). Sampled under
the throughput bench (bench/gil.py), decoding was half of all the time the lock was held. So each
decode runs in a child that does nothing else: `decode_file` there, then a header and the samples'
raw bytes back over the connection, read by `os.readv` straight into the array the engine keeps (the
lock is free while the kernel copies; no second copy of the audio in this process; nothing in
/dev/shm, which containers often keep small). Reading them with the connection's own `recv_bytes`
held the lock for its buffer copies: a fifth of all the time the lock was held in the throughput
bench.

Children are started by the forkserver (a lean process forked from, never the engine's own threads
and runtimes), kept for the next file, one per decode worker at most, and closed with the engine. A
child that dies mid-file (a crash in a codec library) fails that file with the reason, and the next
file gets a new child: the engine itself goes on. A child ignores Ctrl-C: the engine decides whether
the files in flight finish.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing import forkserver, resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np

from voxdock.engine.decode import DecodedAudio, DecodeError, decode_file

CLOSE_WAIT_S = 5.0


_helpers_started = threading.Lock()
_helpers_up = False


def _start_helpers(context: BaseContext) -> None:
    """Start multiprocessing's resource tracker (and the forkserver) once, with a real stderr: they
    pass `sys.stderr.fileno()` to the process they start, and the console's screen replaces stderr
    with an object whose fileno is -1 ("bad value(s) in fds_to_keep" from every decode)."""
    global _helpers_up
    with _helpers_started:
        if _helpers_up:
            return
        try:
            usable = sys.stderr is not None and sys.stderr.fileno() >= 0
        except (AttributeError, OSError, ValueError):
            usable = False
        saved = sys.stderr
        if not usable and sys.__stderr__ is not None:
            sys.stderr = sys.__stderr__
        try:
            resource_tracker.ensure_running()
            if context.get_start_method() == "forkserver":
                forkserver.ensure_running()
        finally:
            sys.stderr = saved
        _helpers_up = True


def _context() -> BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # imported once in the server, not in every child
    return context


def _serve(conn: Connection) -> None:
    """A child's loop: a path in, a header and the samples (or an error) out, until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing is configured to log here: without a handler Python's last resort would write warnings
    # onto the operator's console screen. What matters comes back as the file's reason.
    logging.getLogger().addHandler(logging.NullHandler())
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):  # the engine is gone
            return
        if path is None:
            return
        started = time.process_time()
        try:
            audio = decode_file(path)
        except DecodeError as exc:
            conn.send(("error", str(exc)))
            continue
        except Exception as exc:  # anything else is still this file's failure, not the child's
            conn.send(("error", f"decoder error: {type(exc).__name__}: {exc}"))
            continue
        data = np.ascontiguousarray(audio.samples).data.cast("B")
        head = (audio.samples.shape[0], audio.source_rate, audio.source_channels, audio.codec)
        conn.send(("ok", *head, audio.container, time.process_time() - started))
        sent = 0
        while sent < len(data):  # raw bytes after the header: the engine reads them into place
            sent += os.write(conn.fileno(), data[sent:])
        del data, audio


class _Child:
    def __init__(self, context: BaseContext) -> None:
        ours, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(theirs,), name="voxdock-decoder", daemon=True
        )
        self.process.start()
        theirs.close()
        self.conn = ours

    def decode(self, path: str) -> tuple[DecodedAudio, float]:
        """(the audio, the child's CPU seconds on it); DecodeError for the file's own problems,
        EOFError/OSError when the child died."""
        self.conn.send(path)
        head = self.conn.recv()
        if head[0] == "error":
            raise DecodeError(head[1])
        _, count, rate, channels, codec, container, cpu_s = head
        samples = np.empty(int(count), dtype=np.float32)
        view = samples.data.cast("B")
        got = 0
        while got < len(view):  # straight into the array, the lock released while the kernel copies
            read = os.readv(self.conn.fileno(), [view[got:]])
            if read == 0:
                raise EOFError("the decoder closed its end")
            got += read
        del view
        return DecodedAudio(samples, rate, channels, codec, container), float(cpu_s)

    def died(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            self.process.kill()
            return "stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"

    def close(self, wait: float) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.conn.close()


class DecoderProcesses:
    """`decode(path)` in a child process; children kept for the next call, as many as calls at once."""

    def __init__(self) -> None:
        self._context = _context()
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
            return [c.process.pid for c in [*self._idle, *self._busy] if c.process.pid is not None]

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
            if child is not None and not child.process.is_alive():
                child.conn.close()
                child = None
        if child is None:
            _start_helpers(self._context)
            child = _Child(self._context)
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
            child.conn.close()

    def close(self) -> None:
        """Stop the idle children (busy ones stop when their file is done)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close(CLOSE_WAIT_S)
