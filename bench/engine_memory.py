"""Whole-engine memory against recording length: `voxdock ingest` of one 1-hour and one 3-hour file.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_memory.py            # 1 h and 3 h
    HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_memory.py --lengths 600,3600

The recordings are the diarization memory benchmark's (bench/diarization_memory.py): the real
recordings of ../shared/eval shuffled and concatenated with random gains, varied pauses and
10-minute silences. Each one is ingested by a fresh `python -m voxdock ingest FILE` (the packaged
defaults: tiny.en, the built-in diarizer, embedded PostgreSQL in a temporary data directory, every
stage in its worker threads), and the kernel's peak resident set of that process is read when it
exits (`os.wait4`). The baseline is the same command on one 30-second AMI excerpt, run first in the
same script: models, runtimes and the store's client with little audio. "Beyond the models" is a
run's peak minus that baseline; the decoded audio (float32, 16 kHz: 230 MB per hour) is part of it.
RSS is also sampled every half second, so the report says when in the run the peak came. Decoding
runs in child processes (engine/decode_process.py); each one's own peak (VmHWM) is read while it
lives and reported beside the engine's: while a file is decoded and sent, its samples are in both.

Writes bench/results/engine_memory.json and .md (`--out` for another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diarization_memory import SHARED, git_commit, machine, source_clips, write_recording

ROOT = Path(__file__).resolve().parents[1]
AUDIO_MB_PER_HOUR = 3600 * 16000 * 4 / 2**20


def status_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A memory field of /proc/PID/status (VmRSS now, VmHWM the peak) in MB; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def decoder_peaks_mb(pid: int, peaks: dict[int, float]) -> None:
    """Record the high-water mark of each decoder child of `pid` (engine/decode_process.py: decoding
    runs there, so a file's samples are held there too while they are decoded and sent)."""
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(k) for k in task.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
            except OSError:
                continue
            peak = status_mb(kid, "VmHWM") if b"voxdock.engine.decode_process" in cmdline else None
            if peak is not None:
                peaks[kid] = max(peaks.get(kid, 0.0), peak)


def ingest(path: Path, data_dir: Path, log: Path) -> dict[str, Any]:
    """Run `voxdock ingest path` to its end; its exit status, wall time, peak RSS and RSS samples."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", VOXDOCK_DATA_DIR=str(data_dir))
    env.pop("DATABASE_URL", None)
    command = [sys.executable, "-m", "voxdock", "ingest", "-q", str(path)]
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    decoders: dict[int, float] = {}
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            rss = status_mb(child.pid)
            decoder_peaks_mb(child.pid, decoders)
            if rss is not None:
                samples.append((round(time.monotonic() - start, 1), round(rss, 1)))
            time.sleep(0.5)
    wall = time.monotonic() - start
    peak_at = max(samples, key=lambda s: s[1])[0] if samples else None
    return {
        "exit_status": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        # each decoder child's own peak (read while it lives), summed: an upper bound of their share
        "decoder_peak_mb": round(sum(decoders.values()), 1),
        "decoders": len(decoders),
        "peak_sampled_at_s": peak_at,
        "rss_samples": samples,
    }


def markdown(report: dict[str, Any]) -> str:
    base = report["baseline"]
    lines = [
        "# Whole-engine memory against recording length (issue 20)",
        "",
        f"Command: `{report['command']}` ({report['machine']['cores']} cores, "
        f"{report['machine']['memory_gb']} GB; {report['when']}; commit {report['commit']}).",
        "",
        "Each recording is ingested by a fresh `python -m voxdock ingest -q FILE` with the packaged defaults "
        "(tiny.en, built-in diarizer, embedded PostgreSQL); peak RSS is the kernel's for that process. "
        f"Baseline (one 30 s AMI excerpt: models and runtimes): peak {base['peak_rss_mb']:.0f} MB. "
        "Decoding runs in child processes (engine/decode_process.py): their own peaks (each holds a "
        "file's samples while it decodes and sends them) are in the last column, not in the peak RSS "
        f"(baseline: {base.get('decoder_peak_mb', 0):.0f} MB).",
        "",
        "| recording | speech | exit | wall | RTF | peak RSS | beyond the models | decoded audio | peak at | "
        "decoder processes' peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["runs"]:
        rec = run["recording"]
        hours = rec["length_s"] / 3600
        lines.append(
            f"| {hours:g} h | {rec['speech_s'] / 60:.0f} min | {run['exit_status']} | "
            f"{run['wall_s']:.0f} s | "
            f"{run['wall_s'] / rec['length_s']:.3f} | {run['peak_rss_mb']:.0f} MB | "
            f"**{run['beyond_models_mb']:.0f} MB** | {hours * AUDIO_MB_PER_HOUR:.0f} MB | "
            f"{run['peak_sampled_at_s']} s | "
            f"{run.get('decoder_peak_mb', 0):.0f} MB ({run.get('decoders', 0)}) |"
        )
    lines += ["", report["verdict"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="3600,10800", help="recording lengths in seconds, comma list")
    parser.add_argument("--limit-mb", type=float, default=4096, help="the aim: peak beyond the models")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--noise", type=float, default=8.0, help="pause noise, int16 steps")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    lengths = [float(x) for x in args.lengths.split(",") if x.strip()]
    clips = source_clips()
    commit = git_commit()  # the code the runs use: read before them, not after
    with tempfile.TemporaryDirectory(prefix="voxdock-engine-memory-") as tmp:
        work = Path(tmp)
        baseline = ingest(SHARED / "meetings" / "ami_trn03.wav", work / "data", work / "baseline.log")
        if baseline["exit_status"] != 0:
            raise SystemExit(f"baseline ingest failed:\n{(work / 'baseline.log').read_text()[-2000:]}")
        print(f"baseline: peak {baseline['peak_rss_mb']:.0f} MB", flush=True)
        runs = []
        for length in lengths:
            wav = work / f"recording_{int(length)}s.wav"
            recording = write_recording(wav, clips, length, args.seed, args.noise)
            run = ingest(wav, work / "data", work / f"run_{int(length)}.log")
            run["recording"] = recording
            run["beyond_models_mb"] = round(run["peak_rss_mb"] - baseline["peak_rss_mb"], 1)
            if run["exit_status"] != 0:
                run["log_tail"] = (work / f"run_{int(length)}.log").read_text()[-2000:]
            print(
                f"{length / 3600:g} h: exit {run['exit_status']}, {run['wall_s']:.0f} s, "
                f"peak {run['peak_rss_mb']:.0f} MB, beyond the models {run['beyond_models_mb']:.0f} MB",
                flush=True,
            )
            runs.append(run)
            wav.unlink()
    worst = max((r["beyond_models_mb"] for r in runs), default=0.0)
    met = all(r["exit_status"] == 0 for r in runs) and worst <= args.limit_mb
    verdict = (
        f"Aim (issue 20): every run completes with a peak under {args.limit_mb:.0f} MB beyond the models: "
        f"{'met' if met else '**not met**'} (worst {worst:.0f} MB)."
    )
    report = {
        "benchmark": "whole-engine memory against recording length",
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_memory.py"
        + (f" --lengths {args.lengths}" if args.lengths != "3600,10800" else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": machine(),
        "baseline": baseline,
        "runs": runs,
        "limit_mb": args.limit_mb,
        "met": met,
        "verdict": verdict,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine_memory.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "engine_memory.md").write_text(markdown(report))
    print(verdict)


if __name__ == "__main__":
    main()
