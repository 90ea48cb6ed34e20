"""Throughput benchmark: hours of audio per hour through the real engine, and what every stage costs the host.

Commands (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py            # defaults + the named configurations
    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py --quick    # 2 files of 2 min, defaults only
    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py --set ASR_WORKERS=1 --set DIARIZATION_WORKERS=2
    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py --config asr1:ASR_WORKERS=1 \\
        --config diarize4:DIARIZATION_WORKERS=4,ASR_WORKERS=2 --files 12 --minutes 4.6
    COMPUTE_DEVICE=cuda python3 bench/throughput.py --eval .gpu/eval ...     # a CUDA host, unchanged

Files: `--files` long recordings of `--minutes` each, built from the real recordings of ../shared/eval
(meetings/ami_trn*.wav, real/*.wav) as bench/diarization_memory.py builds them: shuffled, a random
gain, pauses of varied length with faint noise between them; a different seed per file, so no two are
alike (the engine would skip a file whose content is stored).

Runs: every configuration (the defaults first, then `--set`'s, then each `--config NAME:K=V,...`; with
none given, the defaults and the configurations in NAMED) goes through the real `Engine`, in this
process, on a fresh embedded PostgreSQL in a temporary folder, with the models loaded once (again when
a configuration changes what is loaded). Settings come from the environment as for `voxdock` (e.g.
COMPUTE_DEVICE), a configuration's values over them. Every run is timed from the submission to the
last file stored, after one warm-up file through the same models. The engine's snapshot is read every
second; every `--log-every` seconds a line is printed and kept in the results' timeline.

Reported per run: hours of audio per hour (audio / wall), the engine's own pace, per stage its
workers, busy seconds, RTF, and host CPU seconds per audio hour: its worker threads' CPU in its
handlers, the part inside model calls (per model) and outside them (engine/cpu.py); for the process:
all its CPU per audio hour, split into the stages' threads, the runtimes' native thread pools (ONNX
Runtime intra-op, CTranslate2, torch/OpenMP: threads Python did not start, read from
/proc/self/task) and the engine's other Python threads; the embedded PostgreSQL server's CPU; the
cores the process kept busy on average; mean GPU utilisation and peak VRAM from the engine's own
telemetry (engine/gpu.py, NVML, sampled every second; "n/a" without a GPU). With `--gil`, the first
run also samples the interpreter lock (bench/gil.py, py-spy): the share of wall time it is held, the
seconds per audio hour and the ceiling that puts on threads, who holds it, how late a waiting thread
wakes.

Writes bench/results/throughput.json and .md (`--out` for another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
RATE = 16000
SHARED_CANDIDATES = (ROOT.parent / "shared" / "eval", Path("/work/shared/eval"), ROOT / ".gpu" / "eval")
# Hand-tuned configurations tried beside the defaults when none is given.
NAMED: dict[str, dict[str, str]] = {
    "asr1-diarize2": {"ASR_WORKERS": "1", "DIARIZATION_WORKERS": "2"},
    "diarize2": {"DIARIZATION_WORKERS": "2"},
}
HOUR = 3600.0


# ---------------------------------------------------------------------------------------------------
# Inputs


def find_eval(given: Path | None) -> Path:
    for candidate in [given] if given else SHARED_CANDIDATES:
        if candidate is not None and candidate.is_dir():
            return candidate
    raise SystemExit(
        f"no eval recordings: pass --eval DIR (looked in {', '.join(map(str, SHARED_CANDIDATES))})"
    )


def load_clips(eval_dir: Path) -> list[Any]:
    from diarization_memory import source_clips

    return source_clips(eval_dir)


def build_files(
    folder: Path, eval_dir: Path, count: int, minutes: float, seed: int, noise: float
) -> list[dict]:  # type: ignore[type-arg]
    from diarization_memory import write_recording

    clips = load_clips(eval_dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        path = folder / f"long_{i:02d}.wav"
        info = write_recording(path, clips, minutes * 60.0, seed + i, noise)
        made.append({"path": str(path), **info})
    return made


# ---------------------------------------------------------------------------------------------------
# Host CPU outside the engine's own figures


def _thread_cpu(tid: int, tick: float) -> float | None:
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime, stime


def thread_cpu_seconds() -> tuple[dict[int, float], dict[int, str]]:
    """CPU seconds of every thread of this process (Linux /proc; empty elsewhere), and the names of
    those Python started (the others are the native pools of ONNX Runtime, CTranslate2, torch)."""
    tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    out: dict[int, float] = {}
    try:
        tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
    except OSError:
        return {}, set()
    for tid in tids:
        cpu = _thread_cpu(tid, tick)
        if cpu is not None:
            out[tid] = cpu
    python = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    return out, python


def server_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of the embedded PostgreSQL server: the postmaster, its live backends, and the
    backends it has reaped."""
    if pid is None:
        return None
    try:
        import psutil

        server = psutil.Process(pid)
        times = server.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in server.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return float(total)
    except Exception:
        return None


@dataclass
class HostMeter:
    """Process, native-pool and server CPU from the start of a run."""

    server_pid: int | None
    process0: float = 0.0
    threads0: dict[int, float] = field(default_factory=dict)
    server0: float | None = None

    def start(self) -> None:
        from voxdock.engine.cpu import process_cpu_seconds

        self.process0 = process_cpu_seconds()
        self.threads0, _ = thread_cpu_seconds()
        self.server0 = server_cpu_seconds(self.server_pid)

    def read(self, stage_threads: set[int]) -> dict[str, Any]:
        """CPU seconds since `start`: process, native threads, Python threads that are not the stages'
        workers (`stage_threads`: their native ids), the server."""
        from voxdock.engine.cpu import process_cpu_seconds

        threads, python = thread_cpu_seconds()
        native = other = 0.0
        by_name: dict[str, float] = {}
        for tid, cpu in threads.items():
            spent = cpu - self.threads0.get(tid, 0.0)
            if tid not in python:
                native += spent
            elif tid not in stage_threads:
                other += spent
                name = python[tid].rstrip("0123456789").rstrip("-_") or python[tid]
                by_name[name] = by_name.get(name, 0.0) + spent
        server = server_cpu_seconds(self.server_pid)
        return {
            "process_s": process_cpu_seconds() - self.process0,
            "native_threads_s": native if threads else None,
            "other_python_threads_s": other if threads else None,
            "other_python_threads_by_name_s": by_name,
            "server_s": server - self.server0 if server is not None and self.server0 is not None else None,
        }


def stage_thread_ids(stages: list[str]) -> set[int]:
    """The native ids of the stages' worker threads (named voxdock-STAGE-N by engine/runtime.py)."""
    names = {f"voxdock-{stage}" for stage in stages}
    return {
        t.native_id
        for t in threading.enumerate()
        if t.native_id is not None
        and t.name.rsplit("-", 1)[0] in names
        and t.name.rsplit("-", 1)[-1].isdigit()
    }


# ---------------------------------------------------------------------------------------------------
# Runs


def parse_assignments(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"not KEY=VALUE: {item!r}")
        out[key.strip().upper()] = value.strip()
    return out


def configurations(args: argparse.Namespace) -> list[tuple[str, dict[str, str]]]:
    configs: list[tuple[str, dict[str, str]]] = [("defaults", {})]
    if args.set:
        values = parse_assignments(args.set)
        configs.append((",".join(f"{k}={v}" for k, v in values.items()), values))
    for spec in args.config or []:
        name, sep, body = spec.partition(":")
        if not sep or not name:
            raise SystemExit(f"--config wants NAME:KEY=VALUE[,KEY=VALUE...], not {spec!r}")
        configs.append((name, parse_assignments([p for p in body.split(",") if p.strip()])))
    if len(configs) == 1 and not args.quick and not args.defaults_only:
        configs += list(NAMED.items())
    return configs


def settings_for(values: dict[str, str], data_dir: Path) -> Any:
    from voxdock.settings import Settings, load_settings

    fields = Settings.model_fields
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        name = key.lower()
        if name not in fields:
            raise SystemExit(f"unknown setting {key}")
        overrides[name] = value
    return load_settings(_env_file=None, voxdock_data_dir=data_dir, **overrides)


def model_key(settings: Any) -> tuple[Any, ...]:
    from voxdock.engine.loader import ASR_PARALLEL_MAX

    return (
        settings.compute_device,
        settings.compute_type,
        settings.asr_model,
        settings.text_embedding_model,
        settings.diarization_backend,
        str(settings.models_dir),
        max(settings.asr_workers, ASR_PARALLEL_MAX),
    )


def mean_utilization(gpus: list[Any]) -> float | None:
    """The devices' mean utilisation; None without a device that reports one (a MIG slice does not)."""
    busy = [g.utilization_pct for g in gpus if g.utilization_pct is not None]
    return float(np.mean(busy)) if busy else None


def per_hour(seconds: float | None, audio_s: float) -> float | None:
    return None if seconds is None or audio_s <= 0 else seconds / audio_s * HOUR


def condensed(snap: Any, t: float, host: dict[str, Any]) -> dict[str, Any]:
    gpus = snap.gpus
    return {
        "t": round(t, 1),
        "files_done": snap.totals.files_done,
        "in_flight": snap.totals.files_in_flight,
        "audio_done_s": round(snap.totals.audio_s_done, 1),
        "hours_per_hour_now": _round(snap.totals.hours_per_hour_now, 2),
        "process_cpu_s": _round(host["process_s"], 1),
        "gpu_util_pct": _round(mean_utilization(gpus), 1),
        "vram_mb": round(sum(g.memory_used_mb for g in gpus)) if gpus else None,
        "stages": {
            s.name: {
                "busy": s.workers_busy,
                "workers": s.workers,
                "queue": s.queue_depth,
                "cpu_s": round(s.cpu_s, 1),
                "model_cpu_s": round(s.model_cpu_s, 1),
            }
            for s in snap.stages
        },
    }


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def run_config(
    name: str,
    values: dict[str, str],
    settings: Any,
    plan: Any,
    models: Any,
    spec: Any,
    files: list[Path],
    store_dir: Path,
    log_every: float,
    gil: bool = False,
) -> dict[str, Any]:
    from gil import GilSampler

    from voxdock.engine.engine import Engine
    from voxdock.storage import jobs
    from voxdock.storage.database import Database
    from voxdock.storage.migrate import migrate

    db = Database.open(None, store_dir)
    migrate(db, spec)
    engine = Engine(settings, db, plan, models=models)
    events: list[dict[str, Any]] = []
    began = time.perf_counter()

    def heard(event: Any) -> None:  # the self-tuner's steps, warnings and failures
        if event.kind == "tuning" or event.level >= 30:
            events.append(
                {"t": round(time.perf_counter() - began, 1), "kind": event.kind, "message": event.message}
            )

    engine.events.subscribe(heard)
    engine.start(wait=True)
    meter = HostMeter(db.embedded.pid if db.embedded is not None else None)
    meter.start()
    timeline: list[dict[str, Any]] = []
    gpu_util: list[float] = []
    vram_peak: float | None = None
    sampler = GilSampler() if gil else None
    if sampler is not None and not sampler.start():
        print(f"  [{name}] interpreter lock not sampled: {sampler.unavailable}", flush=True)
    start = began = time.perf_counter()
    submission = engine.submit(files, batch_name=f"throughput-{name}")
    next_log = log_every
    while True:
        time.sleep(1.0)
        snap = engine.snapshot()
        t = time.perf_counter() - start
        if snap.gpus:
            utilization = mean_utilization(snap.gpus)
            if utilization is not None:
                gpu_util.append(utilization)
            used = sum(g.memory_used_mb for g in snap.gpus)
            vram_peak = used if vram_peak is None else max(vram_peak, used)
        progress = jobs.batch_progress(db, [submission.batch_id])[0]
        finished = progress.queued + progress.claimed == 0 and engine.files_in_flight() == 0
        if t >= next_log or finished:
            next_log += log_every
            entry = condensed(snap, t, meter.read(stage_thread_ids([st.name for st in snap.stages])))
            timeline.append(entry)
            busy = " ".join(
                f"{n}:{s['busy']}/{s['workers']}q{s['queue']}" for n, s in entry["stages"].items()
            )
            print(
                f"  [{name}] {t:6.0f} s  {entry['files_done']}/{len(files)} files  "
                f"{entry['audio_done_s'] / 60:5.1f} min  now {entry['hours_per_hour_now']} h/h  {busy}",
                flush=True,
            )
        if finished or engine.state == "failed":
            break
    wall = time.perf_counter() - start
    snap = engine.snapshot()
    lock = sampler.stop(snap.totals.audio_s_done) if sampler is not None else None
    host = meter.read(stage_thread_ids([st.name for st in snap.stages]))
    host["process_s"] += engine.decoders.cpu_s  # the decoder children's, in the decode stage's too
    state = engine.state
    engine.stop()
    db.close()
    audio = snap.totals.audio_s_done
    stages = {}
    for s in snap.stages:
        stages[s.name] = {
            "workers": s.workers,
            "batch_size": s.batch_size,
            "items": s.items,
            "errors": s.errors,
            "busy_s": round(s.busy_s, 2),
            "rtf": _round(s.rtf_run, 4),
            "cpu_s": round(s.cpu_s, 2),
            "model_cpu_s": round(s.model_cpu_s, 2),
            "model_wall_s": round(s.model_wall_s, 2),
            "cpu_s_per_audio_h": _round(per_hour(s.cpu_s, audio), 1),
            "model_cpu_s_per_audio_h": _round(per_hour(s.model_cpu_s, audio), 1),
            "host_cpu_s_per_audio_h": _round(per_hour(s.cpu_s - s.model_cpu_s, audio), 1),
            "models": {
                m: {
                    "cpu_s_per_audio_h": _round(per_hour(use.cpu_s, audio), 1),
                    "wall_s_per_audio_h": _round(per_hour(use.wall_s, audio), 1),
                    "calls": use.calls,
                }
                for m, use in sorted(s.models.items())
            },
        }
    stage_cpu = sum(s.cpu_s for s in snap.stages)
    return {
        "name": name,
        "settings": values,
        "files_done": progress.done,
        "files_failed": progress.failed,
        "engine_state": state,
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 1),
        "hours_per_hour": _round(audio / wall if wall > 0 else None, 2),
        "engine_hours_per_hour": _round(snap.totals.hours_per_hour, 2),
        "fast_path_skips": snap.totals.fast_path_skips,
        "segments": snap.totals.segments_written,
        "stages": stages,
        "workers_at_end": {s.name: s.workers for s in snap.stages},
        "auto_tune": getattr(snap, "auto_tune", None),
        "pinned": list(getattr(snap, "pinned", [])),
        "process": {
            "cpu_s": _round(host["process_s"], 1),
            "cpu_s_per_audio_h": _round(per_hour(host["process_s"], audio), 1),
            "stage_threads_s_per_audio_h": _round(per_hour(stage_cpu, audio), 1),
            "native_threads_s_per_audio_h": _round(per_hour(host["native_threads_s"], audio), 1),
            "other_python_threads_s_per_audio_h": _round(per_hour(host["other_python_threads_s"], audio), 1),
            "other_python_threads_by_name_s_per_audio_h": {
                n: _round(per_hour(v, audio), 1)
                for n, v in sorted(host["other_python_threads_by_name_s"].items(), key=lambda kv: -kv[1])
                if v > 0
            },
            "cores_busy": _round((host["process_s"] or 0.0) / wall if wall > 0 else None, 2),
            "postgres_server_cpu_s_per_audio_h": _round(per_hour(host["server_s"], audio), 1),
        },
        "gpu": {
            "available": snap.gpu_available,
            "names": sorted({g.name for g in snap.gpus}),
            "mean_utilization_pct": _round(float(np.mean(gpu_util)) if gpu_util else None, 1),
            "peak_vram_mb": _round(vram_peak, 0),
            "samples": len(gpu_util),
            "budget": vram_budget(snap.vram),
        },
        "interpreter_lock": lock,
        "events": events,
        "timeline": timeline,
    }


def warm_up(settings: Any, plan: Any, models: Any, spec: Any, files: list[Path], store_dir: Path) -> None:
    """One short file through an engine on these models, so that no run pays first-call costs."""
    from voxdock.engine.engine import Engine
    from voxdock.storage import jobs
    from voxdock.storage.database import Database
    from voxdock.storage.migrate import migrate

    db = Database.open(None, store_dir)
    migrate(db, spec)
    engine = Engine(settings, db, plan, models=models)
    engine.start(wait=True)
    submission = engine.submit(files, batch_name="warm-up")
    while True:
        progress = jobs.batch_progress(db, [submission.batch_id])[0]
        if progress.queued + progress.claimed == 0 and engine.files_in_flight() == 0:
            break
        time.sleep(0.2)
    engine.stop()
    db.close()


def run_isolated(
    settings: Any, plan: Any, models: Any, spec: Any, files: list[Path], store_dir: Path
) -> dict:  # type: ignore[type-arg]
    """Each stage's handler alone, one file after another on this thread (nothing else of the engine
    runs), so the process's CPU over a handler call is that stage's whole cost: its thread, and the
    runtimes' pools working for it (process CPU less the thread's)."""
    from voxdock.engine.cpu import HandlerCost, process_cpu_seconds
    from voxdock.engine.diarization import build_diarizer
    from voxdock.engine.discovery import discover
    from voxdock.engine.engine import initial_fast_path_threshold
    from voxdock.engine.handlers import StageHandlers, Tunables
    from voxdock.engine.oom import AdaptiveBatch, FaultInjector
    from voxdock.engine.work import FileWork
    from voxdock.storage import jobs, nodes
    from voxdock.storage.database import Database
    from voxdock.storage.migrate import migrate
    from voxdock.storage.segments import ModelSet

    db = Database.open(None, store_dir)
    migrate(db, spec)
    batches = {
        "asr": AdaptiveBatch(settings.asr_batch_size),
        "diarize": AdaptiveBatch(settings.diarization_batch_size),
        "voice": AdaptiveBatch(settings.voice_enrollment_batch_size),
        "text": AdaptiveBatch(settings.text_embedding_batch_size),
    }
    faults = FaultInjector()
    diarizer = build_diarizer(  # as Engine._make_diarizer makes it
        voice=models.voice,
        batch=batches["diarize"],
        faults=faults,
        device=models.device,
        onnx_cache=settings.voxdock_data_dir.expanduser() / "cache",
        pyannote_snapshot=plan.diarization.pyannote_pipeline,
    )
    handlers = StageHandlers(
        models=models,
        diarizer=diarizer,
        db=db,
        node_id="isolated",
        tunables=Tunables(settings.asr_beam_size, initial_fast_path_threshold(settings)),
        batches=batches,
        faults=faults,
        model_set=ModelSet(models.names["asr"], diarizer.name, models.names["voice"], models.names["text"]),
        on_stored=lambda _work, _written: None,
    )
    batch = jobs.create_batch(db, "isolated")
    jobs.enqueue(db, batch, jobs.register_sources(db, discover(files).files), skip_existing=False)
    nodes.register_node(db, "isolated", "bench", os.getpid(), "bench")
    steps: dict[str, Any] = {
        "decode": lambda w: handlers.decode(w),
        "vad": lambda w: handlers.vad(w),
        "asr": lambda w: handlers.asr(w),
        "diarize": lambda w: handlers.diarize(w),
        "voice": lambda w: handlers.voice([w]),
        "text": lambda w: handlers.text([w]),
        "store": lambda w: handlers.store(w),
    }
    totals = {name: {"thread_s": 0.0, "model_s": 0.0, "process_s": 0.0, "wall_s": 0.0} for name in steps}
    audio = 0.0
    while (job := jobs.claim_next(db, "isolated", lease_seconds=3600, max_attempts=1)) is not None:
        work = FileWork(job=job)
        for name, step in steps.items():
            cost = HandlerCost()
            process, wall = process_cpu_seconds(), time.perf_counter()
            cost.start()
            step(work)
            cost.stop()
            row = totals[name]
            row["process_s"] += process_cpu_seconds() - process
            row["wall_s"] += time.perf_counter() - wall
            row["thread_s"] += cost.cpu_s
            row["model_s"] += sum(m.cpu_s for m in cost.models.values())
        audio += work.duration_s
    db.close()
    out: dict[str, Any] = {"audio_s": round(audio, 1), "stages": {}}
    for name, row in totals.items():
        out["stages"][name] = {
            "rtf": _round(row["wall_s"] / audio if audio else None, 4),
            "process_cpu_s_per_audio_h": _round(per_hour(row["process_s"], audio), 1),
            "thread_cpu_s_per_audio_h": _round(per_hour(row["thread_s"], audio), 1),
            "model_cpu_s_per_audio_h": _round(per_hour(row["model_s"], audio), 1),
            "host_cpu_s_per_audio_h": _round(per_hour(row["thread_s"] - row["model_s"], audio), 1),
            "pools_cpu_s_per_audio_h": _round(
                per_hour(max(0.0, row["process_s"] - row["thread_s"]), audio), 1
            ),
        }
    return out


# ---------------------------------------------------------------------------------------------------
# Report


def versions() -> dict[str, str]:
    out = {}
    for module in ("torch", "onnxruntime", "ctranslate2", "faster_whisper", "numpy"):
        try:
            out[module] = str(__import__(module).__version__)
        except Exception:
            out[module] = "n/a"
    return out


def vram_budget(vram: Any) -> dict[str, Any] | None:
    """The engine's own VRAM figures at the end of a run (engine/vram.py): use against
    GPU_MEMORY_BUDGET and each model stage's measured peaks; None on CPU."""
    if vram is None or vram.budget_bytes is None:
        return None
    mib = 2**20
    return {
        "setting": vram.setting,
        "budget_mb": round(vram.budget_bytes / mib),
        "used_mb": None if vram.used_bytes is None else round(vram.used_bytes / mib),
        "used_by": vram.used_by,
        "stages": {
            name: {
                "calls": st.calls,
                "peak_call_mb": round(st.peak_call_bytes / mib, 1),
                "peak_item_mb": round(st.peak_item_bytes / mib, 2),
            }
            for name, st in vram.stages.items()
        },
    }


def fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    from gil import markdown_lines

    m = result["machine"]
    lines = [
        "# Throughput: hours of audio per hour, and every stage's host cost",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, "
        f"{m['gpu']}; device {result['device']}/{result['compute_type']}; {m['platform']}; "
        f"python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + "  ",
        f"Date {result['when']}; commit {result['commit']}; models: "
        + ", ".join(f"{k} {v}" for k, v in result["models"].items())
        + "  ",
        f"Files: {result['inputs']['files']} recordings of {result['inputs']['minutes']} min "
        f"({result['inputs']['audio_h']:.2f} h in all, {result['inputs']['speech_share']:.0%} speech) "
        "built from "
        f"{result['inputs']['eval']}; the same files for every run.  ",
        "Wall time is on a shared machine (other jobs may run): compare runs of the same report, and "
        "prefer CPU seconds, which are steadier.",
        "",
        "## Runs",
        "",
        "| run | settings | files | audio h | wall s | hours of audio per hour | vs defaults | "
        "engine's pace | process CPU s / audio h | cores busy | GPU util (mean) | peak VRAM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = result["runs"][0]["hours_per_hour"] if result["runs"] else None
    for run in result["runs"]:
        settings = ", ".join(f"{k}={v}" for k, v in run["settings"].items()) or "(defaults)"
        ratio = run["hours_per_hour"] / base if base and run["hours_per_hour"] else None
        gpu = run["gpu"]
        util = "n/a" if gpu["mean_utilization_pct"] is None else f"{gpu['mean_utilization_pct']:.1f} %"
        vram = "n/a" if gpu["peak_vram_mb"] is None else f"{gpu['peak_vram_mb']:.0f} MB"
        lines.append(
            f"| {run['name']} | {settings} | {run['files_done']} done, {run['files_failed']} failed | "
            f"{run['audio_s'] / HOUR:.2f} | {run['wall_s']:.0f} | {fmt(run['hours_per_hour'])} | "
            f"{fmt(ratio, 2)} | {fmt(run['engine_hours_per_hour'])} | "
            f"{fmt(run['process']['cpu_s_per_audio_h'], 0)} | {fmt(run['process']['cores_busy'], 2)} | "
            f"{util} | {vram} |"
        )
    for run in result["runs"]:
        lines += [
            "",
            f"## {run['name']}: per stage",
            "",
            "Host CPU seconds per audio hour on the stage's worker threads (time.thread_time() around each "
            "handler), inside model calls and outside them; the runtimes' own thread pools are in the "
            "process lines below.",
            "",
            "| stage | workers | batch | busy s | RTF | CPU s/h | in model calls | outside | "
            "model calls: CPU s/h (wall s/h) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for stage, s in run["stages"].items():
            models = "; ".join(
                f"{name} {fmt(use['cpu_s_per_audio_h'])} ({fmt(use['wall_s_per_audio_h'])})"
                for name, use in s["models"].items()
            )
            flag = " **>10**" if (s["host_cpu_s_per_audio_h"] or 0) > 10 else ""
            lines.append(
                f"| {stage} | {s['workers']} | {s['batch_size'] or '-'} | {s['busy_s']:.1f} | "
                f"{fmt(s['rtf'], 4)} | "
                f"{fmt(s['cpu_s_per_audio_h'])} | {fmt(s['model_cpu_s_per_audio_h'])} | "
                f"{fmt(s['host_cpu_s_per_audio_h'])}{flag} | {models or '-'} |"
            )
        budget = run["gpu"].get("budget")
        if budget:
            lines += [
                "",
                f"VRAM: {fmt(budget['used_mb'], 0)} MB used ({budget['used_by']}) of a "
                f"{budget['budget_mb']} MB budget ({budget['setting']}); measured per model call: "
                + (
                    "; ".join(
                        f"{name} {st['calls']} calls, peak {st['peak_call_mb']} MB, "
                        f"{st['peak_item_mb']} MB per item"
                        for name, st in budget["stages"].items()
                    )
                    or "nothing"
                )
                + ".",
            ]
        p = run["process"]
        lines += [
            "",
            f"Process: {fmt(p['cpu_s_per_audio_h'])} CPU s per audio hour = stages' threads "
            f"{fmt(p['stage_threads_s_per_audio_h'])} + native thread pools (ONNX Runtime, CTranslate2, "
            f"torch) {fmt(p['native_threads_s_per_audio_h'])} + other Python threads "
            f"{fmt(p['other_python_threads_s_per_audio_h'])} ("
            + ", ".join(f"{n} {fmt(v)}" for n, v in p["other_python_threads_by_name_s_per_audio_h"].items())
            + f") (+ threads gone before the end); "
            f"embedded PostgreSQL server {fmt(p['postgres_server_cpu_s_per_audio_h'])} CPU s per audio hour.",
        ]
        if run.get("interpreter_lock"):
            lines += markdown_lines(run["interpreter_lock"], f"{run['name']}: the interpreter lock")
        tuning = [e for e in run["events"] if e["kind"] == "tuning"]
        lines += [
            "",
            f"Self-tuning: {'on' if run['auto_tune'] else 'off'}"
            + (f", pinned {', '.join(run['pinned'])}" if run["pinned"] else "")
            + f"; {len(tuning)} step(s)"
            + ("" if not tuning else ": " + "; ".join(f"{e['t']:.0f} s {e['message']}" for e in tuning[:12])),
        ]
    iso = result.get("isolated")
    if iso:
        lines += [
            "",
            f"## Each stage alone ({iso['audio_s'] / 60:.1f} min of the same audio, defaults' models, "
            "one thread, nothing else of the engine running)",
            "",
            "The process's CPU over each handler call is then that stage's whole cost: its thread "
            "(inside and outside model calls) and the runtimes' pools working for it.",
            "",
            "| stage | RTF | process CPU s/h | thread CPU s/h | in model calls | outside | runtimes' pools |",
            "|---|---|---|---|---|---|---|",
        ]
        for stage, row in iso["stages"].items():
            lines.append(
                f"| {stage} | {fmt(row['rtf'], 4)} | {fmt(row['process_cpu_s_per_audio_h'])} | "
                f"{fmt(row['thread_cpu_s_per_audio_h'])} | {fmt(row['model_cpu_s_per_audio_h'])} | "
                f"{fmt(row['host_cpu_s_per_audio_h'])} | {fmt(row['pools_cpu_s_per_audio_h'])} |"
            )
    if result.get("notes"):
        lines += ["", "## Notes", "", *result["notes"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=None, help="recordings per run (default 4; --quick 2)")
    parser.add_argument("--minutes", type=float, default=None, help="length of each (default 3; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 files of 2 minutes, no named configurations")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a configuration's setting"
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="NAME:K=V,K=V", help="a named configuration"
    )
    parser.add_argument("--defaults-only", action="store_true", help="no named configurations")
    parser.add_argument("--eval", type=Path, default=None, help="folder with meetings/ and real/ recordings")
    parser.add_argument(
        "--isolated",
        type=int,
        default=None,
        help="files to run through each stage alone (default 1; 0: none)",
    )
    parser.add_argument("--seed", type=int, default=7100)
    parser.add_argument("--noise", type=float, default=8.0, help="pause noise, int16 standard deviation")
    parser.add_argument("--log-every", type=float, default=5.0, help="seconds between logged snapshots")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample the interpreter lock (py-spy) in the first run: who holds it, how long (bench/gil.py)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    count = args.files or (2 if args.quick else 4)
    minutes = args.minutes or (2.0 if args.quick else 3.0)
    args.isolated = 1 if args.isolated is None else args.isolated

    sys.path.insert(0, str(Path(__file__).parent))
    from diarization_memory import git_commit, machine

    from voxdock.cli import load_planned_models, model_plan
    from voxdock.engine.models import vector_spec

    eval_dir = find_eval(args.eval)
    configs = configurations(args)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voxdock-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        made = build_files(tmp / "media", eval_dir, count, minutes, args.seed, args.noise)
        files = [Path(m["path"]) for m in made]
        warm_file = tmp / "warm" / "warm.wav"
        from diarization_memory import write_recording

        warm_file.parent.mkdir()
        write_recording(warm_file, load_clips(eval_dir), 40.0, args.seed - 1, args.noise)
        audio_h = sum(m["length_s"] for m in made) / HOUR
        speech = sum(m["speech_s"] for m in made) / max(1e-9, sum(m["length_s"] for m in made))
        print(
            f"{count} files of {minutes} min ({audio_h:.2f} h) from {eval_dir}; "
            f"runs: {[c[0] for c in configs]}"
        )
        data_dir = tmp / "data"  # one cache folder for the ONNX exports of every run
        loaded: dict[tuple[Any, ...], Any] = {}
        device = compute_type = "?"
        model_names: dict[str, str] = {}
        for index, (name, values) in enumerate(configs):
            settings = settings_for(values, data_dir)
            plan = model_plan(settings)
            spec = vector_spec(plan)
            key = model_key(settings)
            if key not in loaded:
                loaded.clear()  # one set of models in memory at a time
                t0 = time.perf_counter()
                models = load_planned_models(settings, plan, data_dir / "cache")
                loaded[key] = models
                print(
                    f"models loaded in {time.perf_counter() - t0:.1f} s "
                    f"on {models.device}/{models.compute_type}"
                )
                warm_up(settings, plan, models, spec, [warm_file], tmp / f"warm-store-{index}")
            models = loaded[key]
            device, compute_type, model_names = models.device, models.compute_type, dict(models.names)
            print(f"run {name}: {values or 'defaults'}", flush=True)
            run = run_config(
                name,
                values,
                settings,
                plan,
                models,
                spec,
                files,
                tmp / f"store-{index}",
                args.log_every,
                gil=args.gil and index == 0,
            )
            results.append(run)
            print(
                f"run {name}: {run['audio_s'] / HOUR:.2f} h in {run['wall_s']:.0f} s = "
                f"{fmt(run['hours_per_hour'])} hours of audio per hour; process "
                f"{fmt(run['process']['cpu_s_per_audio_h'], 0)} CPU s per audio hour",
                flush=True,
            )
        isolated = None
        if args.isolated > 0:
            settings = settings_for({}, data_dir)
            plan = model_plan(settings)
            if model_key(settings) not in loaded:
                loaded.clear()
                loaded[model_key(settings)] = load_planned_models(settings, plan, data_dir / "cache")
            print(f"each stage alone on {args.isolated} file(s)", flush=True)
            isolated = run_isolated(
                settings,
                plan,
                loaded[model_key(settings)],
                vector_spec(plan),
                files[: args.isolated],
                tmp / "store-isolated",
            )

    gpu_names = sorted({n for r in results for n in r["gpu"]["names"]})
    described = machine()
    described["gpu"] = ", ".join(gpu_names) if gpu_names else "no GPU"
    command = "HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py" + "".join(f" {a}" for a in sys.argv[1:])
    if os.environ.get("COMPUTE_DEVICE"):
        command = f"COMPUTE_DEVICE={os.environ['COMPUTE_DEVICE']} {command}"
    result = {
        "benchmark": "throughput and host cost per stage",
        "command": command,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": described,
        "device": device,
        "compute_type": compute_type,
        "models": model_names,
        "versions": versions(),
        "inputs": {
            "eval": str(eval_dir),
            "files": count,
            "minutes": minutes,
            "audio_h": audio_h,
            "speech_share": speech,
            "seed": args.seed,
            "recordings": [{k: v for k, v in m.items() if k != "path"} for m in made],
        },
        "runs": results,
        "isolated": isolated,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "throughput.md").write_text(markdown(result))
    print(f"written to {args.out / 'throughput.json'} and {args.out / 'throughput.md'}")
    return 0 if all(r["files_failed"] == 0 and r["engine_state"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
