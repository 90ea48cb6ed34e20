"""Console responsiveness under full load, and what it costs an SSH link.

    .venv/bin/python bench/console_bench.py

Runs `voxdock console` in a real pseudo-terminal (100x30), on enough audio to keep both cores busy
(copies of examples/ and the test media), and measures, from the bytes the console writes:

- key-to-screen latency: the time from writing a key to the terminal until the screen shows its
  effect (switching between the Batches and Files tabs, whose column headers differ), repeated while
  the engine saturates the machine;
- steady-state output: bytes per second written to the terminal while the engine works and nobody
  touches a key (what an SSH link carries), and again once the engine is idle.

Writes bench/results/console.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from voxdock.storage.database import Database
from voxdock.storage.jobs import batch_progress

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
VOXDOCK = str(Path(sys.executable).parent / "voxdock")
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[PX^_].*?\x1b\\|\x1b.")


class PtyConsole:
    def __init__(self, args: list[str], env: dict[str, str], cols: int, rows: int) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, bytes]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.chunks.append((time.monotonic(), data))

    def mark(self) -> int:
        with self.lock:
            return len(self.chunks)

    def text_since(self, mark: int) -> str:
        with self.lock:
            raw = b"".join(c for _, c in self.chunks[mark:])
        return ANSI.sub(b"", raw).decode("utf-8", "replace")

    def bytes_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(len(c) for t, c in self.chunks if start <= t < end)

    def send(self, keys: str) -> float:
        sent = time.monotonic()
        os.write(self.master, keys.encode())
        return sent

    def wait_text(self, pattern: str, mark: int, timeout: float) -> float | None:
        """Monotonic time of the first output chunk after `mark` that completes `pattern`."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            with self.lock:
                chunks = self.chunks[mark:]
            text = ""
            for when, chunk in chunks:
                text += ANSI.sub(b"", chunk).decode("utf-8", "replace")
                if regex.search(text):
                    return when
            time.sleep(0.002)
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        os.close(self.master)


def cpu_busy_fraction(seconds: float) -> float:
    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=8, help="copies of the media to keep the engine busy")
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "console.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="voxdock-console-bench-") as name:
        tmp = Path(name)
        media = tmp / "media"
        media.mkdir()
        sources = [
            *sorted((ROOT / "examples").glob("*.*")),
            *sorted((ROOT / "tests/fixtures/media").glob("*.*")),
        ]
        sources = [
            p
            for p in sources
            if p.suffix in (".wav", ".flac", ".ogg", ".mp4")
            and "no_audio" not in p.name
            and "silence" not in p.name
        ]
        for i in range(args.copies):
            for src in sources:
                target = media / f"{i:02d}-{src.name}"
                shutil.copy(src, target)
                with target.open("ab") as handle:  # distinct content, so nothing is skipped
                    handle.write(bytes([i]))
        env = {
            **os.environ,
            "VOXDOCK_DATA_DIR": str(tmp / "data"),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "TERM": "xterm-256color",
            "COLORTERM": "truecolor",
            "HF_HUB_OFFLINE": "1",
        }
        console = PtyConsole([VOXDOCK, "console", str(media), "--refresh", "1"], env, cols=100, rows=30)
        try:
            if console.wait_text(r"running · CPU|running · GPU", 0, timeout=240) is None:
                raise SystemExit("the console did not start:\n" + console.text_since(0)[-2000:])
            time.sleep(5.0)  # the engine ramps up
            load = cpu_busy_fraction(3.0)

            latencies = []
            for i in range(args.presses):
                key, header = ("l", r"tries") if i % 2 == 0 else ("b", r"skip")
                mark = console.mark()
                sent = console.send(key)
                shown = console.wait_text(header, mark, timeout=5.0)
                if shown is not None:
                    latencies.append((shown - sent) * 1000)
                time.sleep(0.7)
            load_during = cpu_busy_fraction(2.0)

            time.sleep(2.0)
            start = time.monotonic()
            time.sleep(30.0)
            busy_bytes = console.bytes_between(start, time.monotonic())
            busy_load = cpu_busy_fraction(1.0)

            with Database.open(None, tmp / "data") as db:  # joins the console's embedded server
                deadline = time.monotonic() + 900
                while time.monotonic() < deadline:  # wait until the engine has finished everything
                    if all(b.queued + b.claimed == 0 for b in batch_progress(db)):
                        break
                    time.sleep(2.0)
            time.sleep(35.0)  # past the metrics window, so nothing is changing
            start = time.monotonic()
            time.sleep(30.0)
            idle_bytes = console.bytes_between(start, time.monotonic())
            console.send("q")
            time.sleep(3)
        finally:
            console.close()

    result = {
        "benchmark": "console responsiveness under load",
        "command": "python bench/console_bench.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "terminal": "100x30 pseudo-terminal, TERM=xterm-256color, refresh 1 s",
        "cpu_busy_before_keys": round(load, 3),
        "cpu_busy_during_keys": round(load_during, 3),
        "cpu_busy_during_output_measure": round(busy_load, 3),
        "key_to_screen_ms": {
            "presses": len(latencies),
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
        "output_bytes_per_s": {
            "engine_busy": round(busy_bytes / 30.0),
            "engine_idle": round(idle_bytes / 30.0),
        },
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
