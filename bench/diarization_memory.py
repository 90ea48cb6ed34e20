"""Diarizer memory and host CPU against recording length: 10 min, 30 min, 1 h and 3 h of real speech.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/diarization_memory.py

Recordings: the real recordings of ../shared/eval (meetings/ami_trn*.wav, ten 30 s AMI excerpts, and
real/*.wav, read speech, a phone call, speeches), 16 kHz mono 16-bit, shuffled and concatenated with
a random gain (0.6-1.0) and pauses of varied length between them (mostly 0.1-2 s, some 2-15 s and
30-120 s), plus 10-minute silences (none at 10 min, one at 30 min, two at 1 h, three at 3 h). Pauses
carry faint noise (Gaussian, standard deviation `--noise` int16 steps, about -72 dBFS), not digital
zeros. A second, sparse kind (`--sparse-lengths`, 30 min, 1 h and 3 h) is mostly silence: a short
real utterance (the real/ clips under 10 s) every `--sparse-gap` seconds (300, +-20 %), as in a long
recording where someone speaks now and then. Each recording is written to a temporary WAV with the
`wave` module, block by block (this process stays small), and diarized by a fresh subprocess so that
every peak is that run's own:

1. it loads CAM++ and segmentation-3.0 (ONNX Runtime on CPU, as the engine runs them) and the WAV
   through the engine's decoder (`voxdock.engine.decode.decode_file`);
2. it runs `diarizer.diarize(samples)` once (no fast path unless `--fast-path` gives a threshold).

Each recording's reference is built with it (the clips' own turns moved to where each clip starts:
the AMI excerpts' and the call's RTTMs, a single-speaker recording's voice over the whole clip; an
AMI speaker is one person wherever heard), so every run is also scored: DER with a 0.25 s collar,
overlapped speech included, and the speakers found against the true count.

Per run: peak RSS (`ru_maxrss`) after loading and after diarizing, and the peak of the diarize call
alone (the kernel's high-water mark is reset just before it: `/proc/self/clear_refs`), RSS before it,
wall time and RTF, process CPU seconds of the call, the CPU seconds inside model calls (the two
`SharedBatcher`s count them), host CPU outside model calls per audio hour, speakers and turns. Each
pipeline step (segmentation, voices, embedding blocks, clustering, reconstruction) is timed and its
own RSS peak above its start is recorded (the wrappers patch the names `pipeline.py` calls; the
engine is not changed). `--tracemalloc` adds the peak of numpy/Python allocations per step (torch
and ONNX Runtime memory is not traced); `--profile-length SECONDS` (default 1800, 0: none)
profiles one meetings recording of that length with cProfile (process CPU time) and lists the top
functions, marked host, model (called only inside model calls) or mixed. `--again` diarizes each
recording a second time in the same child and reports that call's peak above its start: a fresh
process meets every input shape for the first time and ONNX Runtime keeps buffers for each for the
process's life, which a long-lived engine pays once, not per file.

Writes bench/results/diarization_memory.json and .md (`--out` for another folder).
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
if not SHARED.exists():
    SHARED = Path("/work/shared/eval")
RESULTS = Path(__file__).parent / "results"
RATE = 16000
LENGTHS_S = (600, 1800, 3600, 10800)
LONG_SILENCE_S = 600.0
SPARSE_LENGTHS_S = (1800, 3600, 10800)
SPARSE_GAP_S = 300.0
AUDIO_MB_PER_HOUR = RATE * 3600 * 4 / 1e6  # float32 samples: 230.4 MB
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/python bench/diarization_memory.py"


def pipeline_steps(pipeline: Any) -> list[str]:
    """The functions of the diarization package that pipeline.py calls by name (its module globals,
    where the wrappers go): segment, voices_per_frame, embed_local_speakers, cluster_local_speakers,
    speaker_activity and the reconstruction steps, whatever they are called today."""
    return sorted(
        name
        for name, value in vars(pipeline).items()
        if inspect.isfunction(value)
        and value.__module__.startswith("voxdock.engine.diarization.")
        and value.__module__ != pipeline.__name__
    )


# ---------------------------------------------------------------------------------------------------
# Building the recordings (parent process)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        if handle.getframerate() != RATE or handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16 kHz mono 16-bit")
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # int16
    turns: list[tuple[float, float, str]]  # who speaks when in it (seconds from its start)


def clip_turns(path: Path, samples: int) -> list[tuple[float, float, str]]:
    """A recording's reference: its RTTM (the call's speakers named apart from AMI's), else its one
    voice over the whole clip (real/ holds single-speaker recordings of five voices)."""
    from diarization_eval import REAL_VOICES

    from voxdock.evaluation import read_rttm

    rttm = path.with_suffix(".rttm")
    if rttm.exists():
        prefix = "call_" if path.parent.name == "real" else ""
        return [(t.start, t.end, prefix + t.speaker) for t in read_rttm(rttm)]
    voice = next((v for v, stems in REAL_VOICES.items() if path.stem in stems), path.stem)
    return [(0.0, samples / RATE, voice)]


def source_clips(shared: Path = SHARED) -> list[Clip]:
    """The real recordings of `shared` (meetings/, real/) with their reference turns."""
    paths = sorted((shared / "meetings").glob("*.wav")) + sorted((shared / "real").glob("*.wav"))
    if not paths:
        raise SystemExit(f"no recordings under {shared}/meetings or {shared}/real")
    clips = []
    for path in paths:
        audio = read_wav(path)
        clips.append(Clip(f"{path.parent.name}/{path.stem}", audio, clip_turns(path, audio.shape[0])))
    return clips


def long_silence_count(length_s: float) -> int:
    """10-minute silences in a recording: 0 at 10 min, 1 at 30 min, 2 at 1 h, 3 (at most) at 3 h."""
    return min(3, int(length_s // 1500))


def pause_seconds(rng: np.random.Generator) -> float:
    kind = rng.random()
    if kind < 0.7:
        return float(rng.uniform(0.1, 2.0))
    if kind < 0.93:
        return float(rng.uniform(2.0, 15.0))
    return float(rng.uniform(30.0, 120.0))


Piece = tuple[str, np.ndarray, list[tuple[float, float, str]]]


def recording_pieces(clips: list[Clip], length_s: float, seed: int, noise: float) -> Iterator[Piece]:
    """("speech" | "pause" | "silence", int16 samples, who speaks in them) blocks adding up to exactly
    `length_s`."""
    rng = np.random.default_rng(seed)
    target = round(length_s * RATE)
    longs = long_silence_count(length_s)
    marks = [int((i + 0.5) / longs * target) for i in range(longs)]  # where 10-minute silences go
    written = 0
    deck: list[int] = []
    kind = ""

    def quiet(n: int) -> np.ndarray:
        return np.clip(np.round(rng.normal(0.0, noise, n)), -32768, 32767).astype("<i2")

    while written < target:
        turns: list[tuple[float, float, str]] = []
        if marks and written >= marks[0]:
            marks.pop(0)
            block, kind = quiet(int(LONG_SILENCE_S * RATE)), "silence"
        elif written and kind != "pause":
            block, kind = quiet(int(pause_seconds(rng) * RATE)), "pause"
        else:
            if not deck:
                deck = rng.permutation(len(clips)).tolist()
            clip = clips[deck.pop()]
            gain = rng.uniform(0.6, 1.0)
            block, kind = np.clip(np.round(clip.audio * gain), -32768, 32767).astype("<i2"), "speech"
            turns = clip.turns
        block = block[: target - written]
        written += block.shape[0]
        yield kind, block, turns


def sparse_pieces(
    clips: list[Clip], length_s: float, seed: int, noise: float, gap_s: float
) -> Iterator[Piece]:
    """Mostly silence: a short real utterance (the clips under 10 s) every `gap_s` (+-20 %), as in a
    long recording where someone speaks now and then."""
    rng = np.random.default_rng(seed)
    short = [clip for clip in clips if clip.audio.shape[0] < 10 * RATE]
    target = round(length_s * RATE)
    written = 0
    speech = True
    while written < target:
        turns: list[tuple[float, float, str]] = []
        if speech:
            clip = short[int(rng.integers(len(short)))]
            block, kind, turns = clip.audio, "speech", clip.turns
        else:
            n = int(gap_s * rng.uniform(0.8, 1.2) * RATE)
            block = np.clip(np.round(rng.normal(0.0, noise, n)), -32768, 32767).astype("<i2")
            kind = "pause"
        speech = not speech
        block = block[: target - written]
        written += block.shape[0]
        yield kind, block, turns


def write_recording(
    path: Path,
    clips: list[Clip],
    length_s: float,
    seed: int,
    noise: float,
    sparse_gap_s: float | None = None,
) -> dict[str, Any]:
    """Write a recording (`sparse_gap_s`: the sparse kind) and its reference turns (the clips' own,
    moved to where each clip starts; an RTTM beside it), and say what it holds."""
    from voxdock.evaluation import Turn, write_rttm

    seconds = {"speech": 0.0, "pause": 0.0, "silence": 0.0}
    count = {"speech": 0, "pause": 0, "silence": 0}
    pieces = (
        recording_pieces(clips, length_s, seed, noise)
        if sparse_gap_s is None
        else sparse_pieces(clips, length_s, seed, noise, sparse_gap_s)
    )
    reference: list[Turn] = []
    at = 0.0
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        for kind, block, turns in pieces:
            handle.writeframes(block.tobytes())
            length = block.shape[0] / RATE
            reference += [Turn(at + a, at + min(b, length), who) for a, b, who in turns if a < length]
            at += length
            seconds[kind] += length
            count[kind] += 1
    write_rttm(path.with_suffix(".rttm"), path.stem, reference)
    return {
        "kind": "meetings" if sparse_gap_s is None else f"sparse (one utterance every {sparse_gap_s:.0f} s)",
        "length_s": length_s,
        "speech_s": round(seconds["speech"], 1),
        "pauses_s": round(seconds["pause"], 1),
        "long_silences_s": round(seconds["silence"], 1),
        "clips": count["speech"],
        "pauses": count["pause"],
        "long_silences": count["silence"],
        "true_speakers": len({t.speaker for t in reference}),
        "seed": seed,
    }


# ---------------------------------------------------------------------------------------------------
# Measuring (child process)


def proc_status_kb(key: str) -> int:
    with Path("/proc/self/status").open() as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return proc_status_kb("VmRSS") / 1024


@dataclass
class StepStats:
    calls: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    model_cpu_s: float = 0.0
    peak_above_start_mb: float = 0.0
    rss_after_mb: float = 0.0
    traced_peak_mb: float = 0.0


@dataclass
class _Open:
    name: str
    rss0_mb: float
    traced0: int
    peak_mb: float = 0.0
    traced_peak: int = 0


@dataclass
class Meter:
    """Peak RSS per step: the kernel's high-water mark is reset at every step's start and folded into
    every open step (and the whole call) before that, so nesting and the overall peak stay right."""

    model_cpu: Callable[[], float]
    steps: dict[str, StepStats] = field(default_factory=dict)
    peak_mb: float = 0.0
    traced_peak: int = 0
    _open: list[_Open] = field(default_factory=list)

    def _fold(self) -> None:
        hwm = proc_status_kb("VmHWM") / 1024
        self.peak_mb = max(self.peak_mb, hwm)
        traced = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
        self.traced_peak = max(self.traced_peak, traced)
        for step in self._open:
            step.peak_mb = max(step.peak_mb, hwm)
            step.traced_peak = max(step.traced_peak, traced)

    def reset(self) -> None:
        self._fold()
        Path("/proc/self/clear_refs").write_text("5")
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()

    def restart(self) -> None:
        """Measure a fresh call: the kernel's mark reset and the overall peak so far forgotten."""
        self.reset()
        self.peak_mb = 0.0

    def finish(self) -> float:
        self._fold()
        return self.peak_mb

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.reset()
            traced0 = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
            frame = _Open(name, rss_mb(), traced0)
            self._open.append(frame)
            wall, cpu, model = time.perf_counter(), time.process_time(), self.model_cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                stats = self.steps.setdefault(name, StepStats())
                stats.calls += 1
                stats.wall_s += time.perf_counter() - wall
                stats.cpu_s += time.process_time() - cpu
                stats.model_cpu_s += self.model_cpu() - model
                self._fold()
                self._open.remove(frame)
                stats.peak_above_start_mb = max(stats.peak_above_start_mb, frame.peak_mb - frame.rss0_mb)
                stats.traced_peak_mb = max(stats.traced_peak_mb, (frame.traced_peak - frame.traced0) / 1e6)
                stats.rss_after_mb = rss_mb()

        return wrapped


def model_host_split(profile: cProfile.Profile, top: int = 30) -> list[dict[str, Any]]:
    """The top functions by own CPU time; `in_model` when every call came through a model call
    (`SharedBatcher._drain.<locals>.counted`), `mixed` when some did."""
    stats = pstats.Stats(profile)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    callees: dict[Any, set[Any]] = {}
    for func, (_cc, _nc, _tt, _ct, callers) in table.items():
        for caller in callers:
            callees.setdefault(caller, set()).add(func)
    roots = [f for f in table if f[2] == "counted"]
    under: set[Any] = set()
    todo = list(roots)
    while todo:
        func = todo.pop()
        for callee in callees.get(func, ()):
            if callee not in under:
                under.add(callee)
                todo.append(callee)
    rows = []
    for func, (_cc, nc, tt, ct, callers) in sorted(table.items(), key=lambda kv: -kv[1][2])[:top]:
        outside = [c for c in callers if c not in under and c not in roots]
        where = "model" if func in under and not outside else ("mixed" if func in under else "host")
        filename, line, name = func
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls": nc,
                "own_cpu_s": round(tt, 3),
                "cumulative_cpu_s": round(ct, 3),
                "where": where,
            }
        )
    return rows


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization import build_diarizer, pipeline
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.voice import VoiceEncoder

    started = time.perf_counter()
    cache = args.onnx_cache
    voice = VoiceEncoder(resolve_voice(Path("/nonexistent")).require(), "cpu", onnx_cache=cache)
    diarizer: Any = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=cache)
    models_mb = rss_mb()
    samples = decode_file(args.child).samples
    hours = samples.shape[0] / RATE / 3600
    load_s = time.perf_counter() - started
    batchers = (diarizer.segmentation.batcher, diarizer.embedder.batcher)

    def model_cpu() -> float:
        return sum(b.model_cpu_seconds for b in batchers)

    meter = Meter(model_cpu)
    for name in pipeline_steps(pipeline):
        setattr(pipeline, name, meter.wrap(name, getattr(pipeline, name)))
    before = {
        "models_rss_mb": round(models_mb, 1),
        "rss_mb": round(rss_mb(), 1),
        "maxrss_mb": round(maxrss_mb(), 1),
        "audio_mb": round(samples.nbytes / 1e6, 1),
    }
    before["decoder_leftover_mb"] = round(before["rss_mb"] - before["models_rss_mb"] - before["audio_mb"], 1)
    counters0 = [(b.calls, b.model_seconds, b.model_cpu_seconds) for b in batchers]
    if args.tracemalloc:
        tracemalloc.start()
    profile = cProfile.Profile(time.process_time) if args.profile else None
    meter.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    result = diarizer.diarize(samples, fast_path_threshold=args.fast_path)
    if profile is not None:
        profile.disable()
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    diarize_peak = meter.finish()
    # ru_maxrss is the high-water mark since the last reset (the meter resets it at every step): the
    # process's peak is the larger of the one before the call and the call's own.
    after_maxrss = max(before["maxrss_mb"], diarize_peak)
    (seg_calls, seg_wall, seg_cpu), (emb_calls, emb_wall, emb_cpu) = (
        (b.calls - c0[0], b.model_seconds - c0[1], b.model_cpu_seconds - c0[2])
        for b, c0 in zip(batchers, counters0, strict=True)
    )
    host_cpu = cpu_s - seg_cpu - emb_cpu
    record: dict[str, Any] = {
        "audio_s": round(samples.shape[0] / RATE, 1),
        "audio_h": round(hours, 4),
        "load_s": round(load_s, 1),
        "before": before,
        "after": {
            "maxrss_mb": round(after_maxrss, 1),
            "maxrss_since_last_reset_mb": round(maxrss_mb(), 1),
            "rss_mb": round(rss_mb(), 1),
            "diarize_peak_rss_mb": round(diarize_peak, 1),
            "diarize_peak_above_start_mb": round(diarize_peak - before["rss_mb"], 1),
            "diarize_peak_minus_models_and_audio_mb": round(
                diarize_peak - before["models_rss_mb"] - before["audio_mb"], 1
            ),
        },
        "wall_s": round(wall_s, 2),
        "rtf": round(wall_s / (samples.shape[0] / RATE), 4),
        "cpu_s": round(cpu_s, 2),
        "segmentation": {
            "calls": seg_calls,
            "model_wall_s": round(seg_wall, 2),
            "model_cpu_s": round(seg_cpu, 2),
        },
        "embedding": {
            "calls": emb_calls,
            "model_wall_s": round(emb_wall, 2),
            "model_cpu_s": round(emb_cpu, 2),
        },
        "host_cpu_s": round(host_cpu, 2),
        "host_cpu_s_per_audio_hour": round(host_cpu / hours, 2),
        "score": score_against(args.child.with_suffix(".rttm"), result.all_turns),
        "speakers": len({t.speaker for t in result.turns} | {t.speaker for t in result.overlaps}),
        "turns": len(result.turns),
        "overlap_turns": len(result.overlaps),
        "local_speakers": len(result.window_speakers),
        "fast_path": bool(result.fast_path),
        "steps": {
            name: {
                "calls": s.calls,
                "wall_s": round(s.wall_s, 2),
                "cpu_s": round(s.cpu_s, 2),
                "host_cpu_s": round(s.cpu_s - s.model_cpu_s, 2),
                "peak_above_start_mb": round(s.peak_above_start_mb, 1),
                "rss_after_mb": round(s.rss_after_mb, 1),
                **({"traced_peak_mb": round(s.traced_peak_mb, 1)} if args.tracemalloc else {}),
            }
            for name, s in meter.steps.items()
        },
        "traced_peak_mb": round(meter.traced_peak / 1e6, 1) if args.tracemalloc else None,
    }
    if profile is not None:
        record["profile_top"] = model_host_split(profile)
    if args.again:
        record["again"] = diarize_again(diarizer, samples, args.fast_path, meter)
    Path(args.json).write_text(json.dumps(record, indent=2))


def diarize_again(
    diarizer: Any, samples: np.ndarray, fast_path: float | None, meter: Meter
) -> dict[str, float]:
    """The same recording diarized a second time in the same process: what the first call left
    resident for good (ONNX Runtime's buffers for input shapes it met for the first time) is no
    longer counted, so this peak is what a long-lived engine pays per file of this length. The
    meter's step wrappers reset the kernel's high-water mark at every step, so the peak is the
    meter's, which folds each step's in."""
    start = rss_mb()
    meter.restart()
    wall = time.perf_counter()
    diarizer.diarize(samples, fast_path_threshold=fast_path)
    return {
        "peak_above_start_mb": round(meter.finish() - start, 1),
        "rss_growth_mb": round(rss_mb() - start, 1),
        "wall_s": round(time.perf_counter() - wall, 2),
    }


def score_against(rttm: Path, turns: Any) -> dict[str, Any] | None:
    """DER (0.25 s collar, overlapped speech scored) and its parts against the recording's reference."""
    if not rttm.exists():
        return None
    from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

    hyp = [Turn(t.start, t.end, t.speaker) for t in turns]
    r = diarization_error_rate(read_rttm(rttm), hyp, collar=0.25)
    return {
        "der": round(r.der, 4),
        "miss": round(r.miss, 4),
        "false_alarm": round(r.false_alarm, 4),
        "confusion": round(r.confusion, 4),
        "true_speakers": r.reference_speakers,
        "found_speakers": r.hypothesis_speakers,
    }


# ---------------------------------------------------------------------------------------------------
# Driving (parent process)


def run_child(
    wav: Path, args: argparse.Namespace, *, profile: bool = False, trace: bool = False
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(wav), "--json", str(out)]
    command += ["--onnx-cache", str(args.onnx_cache)]
    if args.fast_path is not None:
        command += ["--fast-path", str(args.fast_path)]
    if profile:
        command.append("--profile")
    if trace:
        command.append("--tracemalloc")
    if args.again:
        command.append("--again")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    try:
        subprocess.run(command, check=True, env=env)
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """MB per extra audio hour of the diarize call's peak above what was resident before it (the
    models and the audio), fitted over all runs and between the two longest."""
    hours = np.array([r["audio_h"] for r in runs])
    extra = np.array([r["after"]["diarize_peak_above_start_mb"] for r in runs])
    total = np.array([r["after"]["diarize_peak_rss_mb"] - r["before"]["audio_mb"] for r in runs])
    out: dict[str, Any] = {"audio_mb_per_hour": round(AUDIO_MB_PER_HOUR, 1)}
    if len(runs) >= 2:
        slope = float(np.polyfit(hours, extra, 1)[0])
        slope_total = float(np.polyfit(hours, total, 1)[0])
        last = (extra[-1] - extra[-2]) / (hours[-1] - hours[-2])
        out.update(
            {
                "diarize_extra_mb_per_hour_fit": round(slope, 1),
                "diarize_extra_mb_per_hour_two_longest": round(float(last), 1),
                "peak_minus_audio_mb_per_hour_fit": round(slope_total, 1),
            }
        )
    return out


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| audio | speech | RSS before (models+audio+leftover) | decoder leftover | maxrss before "
        "| maxrss after | diarize peak "
        "| peak above start | wall s | RTF | CPU s | model CPU s (seg+emb) | host CPU s/audio h "
        "| speakers (true) | DER (miss / FA / conf.) | turns |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rec = r["recording"]
        sc = r.get("score")
        der = (
            f"{100 * sc['der']:.1f}% ({100 * sc['miss']:.1f} / {100 * sc['false_alarm']:.1f} / "
            f"{100 * sc['confusion']:.1f})"
            if sc
            else "n/a"
        )
        true = sc["true_speakers"] if sc else "?"
        lines.append(
            f"| {r['audio_s'] / 60:.0f} min | {rec['speech_s'] / 60:.1f} min "
            f"| {r['before']['rss_mb']:.0f} MB | {r['before']['decoder_leftover_mb']:.0f} MB "
            f"| {r['before']['maxrss_mb']:.0f} MB "
            f"| {r['after']['maxrss_mb']:.0f} MB | {r['after']['diarize_peak_rss_mb']:.0f} MB "
            f"| {r['after']['diarize_peak_above_start_mb']:.0f} MB "
            f"| {r['wall_s']:.0f} | {r['rtf']:.4f} | {r['cpu_s']:.0f} "
            f"| {r['segmentation']['model_cpu_s']:.0f}+{r['embedding']['model_cpu_s']:.0f} "
            f"| {r['host_cpu_s_per_audio_hour']:.1f} | {r['speakers']} ({true}) | {der} | {r['turns']} |"
        )
    return lines


def again_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The second call's figures (`--again`), where they were measured."""
    measured = [r for r in runs if "again" in r]
    if not measured:
        return []
    lines = [
        "Diarized a second time in the same process (what the first call left resident for good, "
        "ONNX Runtime's buffers for input shapes it met for the first time, is then already there):",
        "",
        "| audio | first call: peak above start | second call: peak above start | second call: RSS growth "
        "| second call wall s |",
        "|---|---|---|---|---|",
    ]
    for r in measured:
        a = r["again"]
        lines.append(
            f"| {r['audio_s'] / 60:.0f} min | {r['after']['diarize_peak_above_start_mb']:.0f} MB "
            f"| {a['peak_above_start_mb']:.0f} MB | {a['rss_growth_mb']:.0f} MB | {a['wall_s']:.0f} |"
        )
    return ["", *lines]


def growth_line(g: dict[str, Any]) -> str:
    return (
        "Growth of the diarize call's peak RSS above what was resident before it (models + audio, "
        f"float32 = {g['audio_mb_per_hour']} MB/h): "
        f"{g.get('diarize_extra_mb_per_hour_fit', 'n/a')} MB per extra audio hour (fit), "
        f"{g.get('diarize_extra_mb_per_hour_two_longest', 'n/a')} MB/h between the two longest; "
        f"peak minus audio: {g.get('peak_minus_audio_mb_per_hour_fit', 'n/a')} MB/h."
    )


def steps_table(run: dict[str, Any]) -> list[str]:
    lines = [
        "| step | calls | wall s | host CPU s | peak above start MB |",
        "|---|---|---|---|---|",
    ]
    for name, s in run["steps"].items():
        lines.append(
            f"| {name} | {s['calls']} | {s['wall_s']:.1f} | {s['host_cpu_s']:.1f} "
            f"| {s['peak_above_start_mb']:.0f} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Diarizer memory and host CPU against recording length",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, no GPU (ONNX Runtime on CPU); "
        f"date {report['date']}; commit {report['commit']}.  ",
        f"Fast path: {'off' if report['fast_path'] is None else report['fast_path']}. Each recording is "
        "diarized by a fresh process; the diarize peak is the kernel's high-water mark reset just before "
        "the call, `peak above start` that peak less the RSS before it (models, audio, and what the "
        "decoder left). Wall times are on a shared machine (other jobs ran): CPU seconds are the steadier "
        "figure.",
        "",
        "## Meetings: real speech with pauses of 0.1 s-2 min and 10-minute silences (0/1/2/3 at "
        "10 min/30 min/1 h/3 h)",
        "",
        *runs_table(report["runs"]),
        *again_lines(report["runs"]),
        "",
        growth_line(report["growth"]),
        "",
        "`maxrss before` includes the decoder's own peak; `maxrss after` is the process's peak (the larger "
        "of that and the diarize peak: the meter resets the kernel's mark at every step); `decoder "
        "leftover`: RSS before the call less the models' RSS and the audio array (the decoder's freed "
        "per-frame blocks stay in the heap).",
        "",
    ]
    if report["runs"]:  # none when only sparse lengths were asked for (--lengths "")
        lines += [
            "Per step (longest run): wall s, host CPU s (outside model calls), RSS peak above the "
            "step's start:",
            "",
            *steps_table(report["runs"][-1]),
        ]
    if report.get("sparse_runs"):
        sparse = report["sparse_runs"]
        lines += [
            "",
            f"## Sparse speech: {sparse[0]['recording']['kind']}, faint noise between",
            "",
            *runs_table(sparse),
            *again_lines(sparse),
            "",
            growth_line(report["sparse_growth"]),
            "",
            "Per step (longest run):",
            "",
            *steps_table(sparse[-1]),
        ]
    if report.get("profile"):
        p = report["profile"]
        lines += [
            "",
            f"## Profile ({p['audio_s'] / 60:.0f} min meetings recording)",
            "",
            f"cProfile with process CPU time: host CPU outside model calls {p['host_cpu_s']:.1f} s "
            f"({p['host_cpu_s_per_audio_hour']:.1f} s per audio hour, profiler overhead included); "
            "`where`: host, model (only inside model calls) or mixed. Top functions by own CPU:",
            "",
            "| function | calls | own CPU s | cumulative s | where |",
            "|---|---|---|---|---|",
        ]
        for row in p["profile_top"][:20]:
            lines.append(
                f"| `{row['function']}` | {row['calls']} | {row['own_cpu_s']} | {row['cumulative_cpu_s']} "
                f"| {row['where']} |"
            )
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "engine"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (engine/ modified)" if dirty else "")


def run_scenario(
    folder: Path,
    clips: list[tuple[str, np.ndarray]],
    lengths: list[float],
    args: argparse.Namespace,
    sparse_gap_s: float | None = None,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for length in lengths:
        wav = folder / f"rec_{int(length)}.wav"
        recording = write_recording(wav, clips, length, args.seed + int(length), args.noise, sparse_gap_s)
        print(f"{length / 60:.0f} min: {recording}", flush=True)
        record = run_child(wav, args, trace=args.tracemalloc)
        record["recording"] = recording
        runs.append(record)
        shown = ("before", "after", "wall_s", "rtf", "cpu_s", "host_cpu_s_per_audio_hour", "speakers")
        print(json.dumps({k: record[k] for k in shown}), flush=True)
        wav.unlink()
        wav.with_suffix(".rttm").unlink()
    return runs


def seconds_list(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lengths", default=",".join(str(s) for s in LENGTHS_S), help="seconds, comma-separated"
    )
    parser.add_argument(
        "--sparse-lengths",
        default=",".join(str(s) for s in SPARSE_LENGTHS_S),
        help="seconds of the sparse recordings (empty: none)",
    )
    parser.add_argument("--sparse-gap", type=float, default=SPARSE_GAP_S, help="seconds between utterances")
    parser.add_argument("--seed", type=int, default=20250)
    parser.add_argument("--noise", type=float, default=8.0, help="pause noise, int16 standard deviation")
    parser.add_argument(
        "--fast-path", type=float, default=None, help="allow the fast path with this threshold"
    )
    parser.add_argument("--profile-length", type=float, default=1800.0, help="seconds; 0: no profile run")
    parser.add_argument("--tracemalloc", action="store_true", help="trace numpy/Python allocations per step")
    parser.add_argument(
        "--again",
        action="store_true",
        help="diarize each recording a second time in the same process and report that call's peak",
    )
    parser.add_argument("--onnx-cache", type=Path, default=Path(tempfile.gettempdir()) / "voxdock-onnx-cache")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    clips = source_clips()
    profile: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="diarization-memory-") as name:
        folder = Path(name)
        runs = run_scenario(folder, clips, seconds_list(args.lengths), args)
        sparse = run_scenario(folder, clips, seconds_list(args.sparse_lengths), args, args.sparse_gap)
        if args.profile_length:
            wav = folder / "profile.wav"
            recording = write_recording(
                wav, clips, args.profile_length, args.seed + int(args.profile_length), args.noise
            )
            profile = run_child(wav, args, profile=True)
            profile["recording"] = recording
    report = {
        "command": COMMAND + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "machine": machine(),
        "fast_path": args.fast_path,
        "sources": [clip.name for clip in clips],
        "runs": runs,
        "growth": growth(runs),
        "sparse_runs": sparse,
        "sparse_growth": growth(sparse),
        "profile": profile,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diarization_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "diarization_memory.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
