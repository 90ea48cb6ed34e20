"""The checks a GPU host is lent for, prepared as one call (issues 19 and 21).

A session lent a GPU has 15 minutes of device time in all (a start takes 1-2 of them): prepare
here, then stage and run back to back (../shared/gpu/README.md):

    scripts/setup --test                         # here, then .gpu/part0..N and .gpu/env.sh:
    .venv/bin/pip wheel -q --no-deps -w /tmp/gpu-wheels srt==3.5.3
    PIP_FIND_LINKS=/tmp/gpu-wheels ../shared/gpu/pack.sh
    cp .venv/bin/py-spy .gpu/                    # pack.sh drops the wheels' executables (8 MB, static)
    device run "mkdir -p /tmp/stage && cp .gpu/part* /tmp/stage/"  carry [".gpu/partK"]   K = 0..N-1
    device run "source .gpu/env.sh && python3 bench/gpu_check.py --out $OUT"
               carry [".gpu/partN", ".gpu/env.sh", ".gpu/py-spy"]   timeout_s 600

then copy what came back into bench/results/gpu/ (the machine's name is in gpu_check.md). srt (a test
dependency) has only a source release on PyPI: without its wheel at hand, pack.sh's download of the
whole list fails and it packs nothing but voxdock (measured 2026-12-01: one 9 MB part; with the
wheel, 6 parts, 5 staging calls, about 3 minutes to pack on 2 cores).

The same code on this CPU machine first, small (every step runs, on the CPU):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_check.py --device cpu --quick --out /tmp/gpu-check

Steps, each on its own: one that fails or runs past its time is written down and the next goes on.

1. `device`: torch and CUDA, the card and its memory.
2. `vad`: Silero in torch on the device against faster-whisper's ONNX model on the CPU, over the eval
   recordings one by one and end to end: the largest probability difference and whether the speech
   regions are the same (the engine runs the torch network on a CUDA host, engine/vad.py).
3. `throughput`: bench/throughput.py on the device, defaults and the hand-tuned configurations
   (`--throughput-args`), in a child process; its report (throughput.json, .md) lands in --out.
   The defaults run samples the interpreter lock (`--gil`, bench/gil.py): on 16 cores, whether the
   stages' threads are held back by it (the answer to "threads or processes?").
   The whole check is sized for one device call (600 s at most): 1 h of audio per run, 330 s cap.
4. `console`: the console's dashboard, saved as SVG while the engine works on the device (live GPU
   utilisation and VRAM against the budget), and the snapshot it shows.
5. `diarizer`: segmentation-3.0 + CAM++ on the device against ONNX Runtime on the CPU, on the AMI
   excerpts and the call: DER of each (the same within rounding is expected), speakers found, time.

Writes gpu_check.json and gpu_check.md to --out, a step at a time (what is done survives a kill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLLAR_S = 0.25
# The diarizer step last: its CPU half (ONNX exports, 14 files on the CPU) is the slowest to give back.
STEPS = ("device", "vad", "throughput", "console", "diarizer")


def _eval_dir(given: Path | None) -> Path:
    from throughput import find_eval

    return find_eval(given)


def _recordings(eval_dir: Path, quick: bool) -> list[Path]:
    meetings = sorted((eval_dir / "meetings").glob("*.wav"))
    real = sorted((eval_dir / "real").glob("*.wav"))
    return (meetings[:2] + real[:2]) if quick else meetings + real


def step_device(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "device": args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_cores": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out |= {"card": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    elif args.device.startswith("cuda"):
        raise RuntimeError("CUDA asked for but torch sees no GPU")
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        out["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["nvidia_smi"] = "not found"
    # The VRAM meter asks NVML for this process's memory twice per model call (engine/vram.py): how
    # long one question takes decides whether it must be sampled instead.
    from voxdock.engine.gpu import GpuMonitor

    monitor = GpuMonitor()
    if monitor.available:
        t0 = time.perf_counter()
        answers = [monitor.memory_use(0) for _ in range(50)]
        out["nvml_memory_query_ms"] = round((time.perf_counter() - t0) / 50 * 1000, 3)
        out["nvml_memory_query_kind"] = answers[-1][1] if answers[-1] else None
        out["nvml_devices"] = [g.name for g in monitor.sample()]
    return out


def step_vad(args: argparse.Namespace) -> dict[str, Any]:
    """Silero's probabilities and regions, torch on the device against ONNX on the CPU, each routed
    the way the engine routes it (`vad.run_on`) and its regions found by the engine's `detect_speech`."""
    import faster_whisper.vad

    from voxdock.engine import vad
    from voxdock.engine.decode import decode_file
    from voxdock.engine.silero_torch import WINDOW

    audio = {p.name: decode_file(p).samples for p in _recordings(args.eval, args.quick)}
    audio["all, end to end"] = np.concatenate(list(audio.values()))
    runs: dict[str, dict[str, Any]] = {}
    try:
        for label, torch_network in (("onnx", False), ("torch", True)):
            vad.run_on(args.device if torch_network else "cpu", torch_network=torch_network)
            model = faster_whisper.vad.get_vad_model()
            for name, samples in audio.items():
                padded = np.pad(samples, (0, WINDOW - samples.shape[0] % WINDOW))
                t0 = time.perf_counter()
                probabilities = model(padded.copy())  # a copy: the ONNX model writes into its input
                seconds = time.perf_counter() - t0
                runs.setdefault(name, {})[label] = (probabilities, seconds, vad.detect_speech(samples))
    finally:
        vad.run_on("cpu")  # as the engine runs it here, for the steps after this one
    files = [
        {
            "file": name,
            "seconds": round(audio[name].shape[0] / 16000, 1),
            "max_probability_difference": float(np.abs(run["torch"][0] - run["onnx"][0]).max()),
            "regions": len(run["onnx"][2]),
            "regions_identical": run["onnx"][2] == run["torch"][2],
            "onnx_cpu_s": round(run["onnx"][1], 3),
            "torch_device_s": round(run["torch"][1], 3),
        }
        for name, run in runs.items()
    ]
    return {
        "runtime": f"torch/{args.device} against onnxruntime/cpu",
        "max_probability_difference": max(f["max_probability_difference"] for f in files),
        "all_regions_identical": all(f["regions_identical"] for f in files),
        "files": files,
    }


def _diarizer(device: str, cache: Path) -> Any:
    from voxdock.engine.diarization import build_diarizer
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.voice import VoiceEncoder

    voice = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), device, onnx_cache=cache)
    return build_diarizer(voice=voice, batch=AdaptiveBatch(64), device=device, onnx_cache=cache)


def step_diarizer(args: argparse.Namespace) -> dict[str, Any]:
    """The same conversations through the diarizer on the device and on the CPU (ONNX Runtime)."""
    from voxdock.engine.decode import decode_file
    from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

    paths = [p for p in _recordings(args.eval, args.quick) if p.with_suffix(".rttm").is_file()]
    cache = Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    runs: dict[str, list[dict[str, Any]]] = {}
    for label, device in (("device", args.device), ("cpu", "cpu")):
        diarizer = _diarizer(device, cache)
        diarizer.diarize(decode_file(paths[0]).samples)  # warm-up: kernels, ONNX export
        rows = []
        for path in paths:
            samples = decode_file(path).samples
            t0 = time.perf_counter()
            result = diarizer.diarize(samples)
            seconds = time.perf_counter() - t0
            hyp = [Turn(t.start, t.end, t.speaker) for t in result.all_turns]
            error = diarization_error_rate(read_rttm(path.with_suffix(".rttm")), hyp, collar=COLLAR_S)
            rows.append(
                {
                    "file": path.stem,
                    "audio_s": round(samples.shape[0] / 16000, 1),
                    "der": round(error.der, 4),
                    "reference_speech_s": error.reference_speech_s,
                    "speakers": len(result.speakers),
                    "seconds": round(seconds, 3),
                    "turns": [(round(t.start, 2), round(t.end, 2), t.speaker) for t in result.turns],
                }
            )
        runs[label] = rows
    same = sum(a["turns"] == b["turns"] for a, b in zip(runs["device"], runs["cpu"], strict=True))

    def pooled(rows: list[dict[str, Any]]) -> float:
        speech = sum(r["reference_speech_s"] for r in rows)
        return round(sum(r["der"] * r["reference_speech_s"] for r in rows) / max(speech, 1e-9), 4)

    return {
        "files": len(paths),
        "pooled_der_device": pooled(runs["device"]),
        "pooled_der_cpu": pooled(runs["cpu"]),
        "same_turns": f"{same}/{len(paths)}",
        "time_device_s": round(sum(r["seconds"] for r in runs["device"]), 2),
        "time_cpu_s": round(sum(r["seconds"] for r in runs["cpu"]), 2),
        "runs": {k: [{x: y for x, y in r.items() if x != "turns"} for r in v] for k, v in runs.items()},
    }


def step_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """bench/throughput.py in a child process (its own models and store), report into --out."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "throughput.py"),
        "--eval",
        str(args.eval),
        "--out",
        str(args.out),
        *shlex.split(args.throughput_args),
    ]
    env = os.environ | {"COMPUTE_DEVICE": args.device}
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.throughput_timeout)
    (args.out / "throughput.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"throughput.py exited {done.returncode}: {done.stderr.strip()[-600:]}")
    report = json.loads((args.out / "throughput.json").read_text())
    runs = report.get("runs", [])
    return {
        "command": shlex.join(command[1:]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": [
            {
                "name": r.get("name"),
                "hours_per_hour": r.get("hours_per_hour"),
                "files_done": r.get("files_done"),
                "files_failed": r.get("files_failed"),
                "gpu": r.get("gpu"),
                # the whole sampling is in throughput.md; here the figure that decides threads vs processes
                "lock_held_s_per_audio_h": (r.get("interpreter_lock") or {}).get("held_s_per_audio_h"),
                "lock_ceiling_h_per_h": (r.get("interpreter_lock") or {}).get("thread_ceiling_h_per_h"),
            }
            for r in runs
        ],
    }


def step_console(args: argparse.Namespace) -> dict[str, Any]:
    """The dashboard while the engine works on the device: an SVG and the figures on it."""
    from screenshots import wait
    from textual.pilot import Pilot

    from voxdock.cli import model_plan
    from voxdock.engine.engine import Engine
    from voxdock.engine.models import vector_spec
    from voxdock.settings import load_settings
    from voxdock.storage.database import Database
    from voxdock.storage.migrate import migrate
    from voxdock.tui.app import VoxdockConsole
    from voxdock.tui.backend import EngineBackend

    svg = args.out / f"console-dashboard-{args.device.split(':')[0]}.svg"
    seen: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="voxdock-gpu-console-") as name:
        tmp = Path(name)
        settings = load_settings(_env_file=None, voxdock_data_dir=tmp / "data", compute_device=args.device)
        plan = model_plan(settings)
        db = Database.open(None, tmp / "data")
        migrate(db, vector_spec(plan))
        engine = Engine(settings, db, plan)
        inputs = _recordings(args.eval, args.quick) * (1 if args.quick else 4)
        folder = tmp / "archive"
        folder.mkdir()
        for i, path in enumerate(inputs):  # copies: the same audio again is new work, not a duplicate
            (folder / f"{i:03d}_{path.name}").write_bytes(path.read_bytes())
        engine.submit([folder], batch_name="gpu-check", skip_existing=False)
        engine.start(wait=True)

        async def shoot() -> None:
            app = VoxdockConsole(
                EngineBackend(engine), refresh_s=0.5, prefs_path=tmp / "prefs.json", show_clock=False
            )
            pilot: Pilot[Any]
            async with app.run_test(size=(100, 30)) as pilot:
                await wait(pilot, lambda: app.data is not None and app.data.snapshot.totals.files_done >= 2)
                await pilot.pause(1.0)
                app.save_screenshot(str(svg))
                assert app.data is not None
                snap = app.data.snapshot
                seen["files_done"] = snap.totals.files_done
                seen["gpus"] = [str(g) for g in snap.gpus]
                seen["vram"] = str(snap.vram)

        try:
            asyncio.run(shoot())
        finally:
            engine.stop(mode="requeue")
            db.close()
    return {"svg": svg.name, **seen}


STEP_FUNCTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "device": step_device,
    "vad": step_vad,
    "diarizer": step_diarizer,
    "throughput": step_throughput,
    "console": step_console,
}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# GPU check (bench/gpu_check.py)",
        "",
        f"Command: `{report['command']}`  ",
        f"Date {report['date']}; device {report['device']}",
        "",
    ]
    for name, step in report["steps"].items():
        lines += [f"## {name}: {step['status']} ({step['seconds']} s)", ""]
        if step["status"] != "ok":
            lines += ["```", step.get("error", ""), "```", ""]
            continue
        body = {k: v for k, v in step["result"].items() if k not in ("files", "runs")}
        lines += [f"- {k}: {v}" for k, v in body.items()]
        for key in ("files", "runs"):
            value = step["result"].get(key)
            if isinstance(value, list) and value:
                lines += ["", "| " + " | ".join(value[0]) + " |", "|" + " --- |" * len(value[0])]
                lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in value]
            elif isinstance(value, dict):
                for label, rows in value.items():
                    lines += [
                        "",
                        f"{label}:",
                        "",
                        "| " + " | ".join(rows[0]) + " |",
                        "|" + " --- |" * len(rows[0]),
                    ]
                    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="compute device to check (default cuda)")
    parser.add_argument(
        "--eval", type=Path, default=None, help="folder with meetings/ and real/ (found if not given)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--quick", action="store_true", help="a few recordings and a small throughput run")
    parser.add_argument("--throughput-args", default=None, help="arguments for bench/throughput.py")
    parser.add_argument("--throughput-timeout", type=float, default=330.0, help="seconds")
    args = parser.parse_args()
    if args.device.startswith("cuda"):  # as the engine's loader does: no TF32 (engine/precision.py)
        from voxdock.engine.precision import use_full_float32

        use_full_float32()
    args.eval = _eval_dir(args.eval)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.throughput_args is None:
        # On the GPU: 1 h of audio through the defaults and one hand-tuned configuration, inside
        # one device call with the other steps (a call may last 600 s).
        args.throughput_args = (
            "--quick --isolated 0 --gil"
            if args.quick
            else "--files 12 --minutes 5 --isolated 0 --gil "
            "--config tuned:ASR_WORKERS=4,DIARIZATION_WORKERS=8"
        )
    report: dict[str, Any] = {
        "command": shlex.join(["bench/gpu_check.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": args.device,
        "steps": {},
    }
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        if name not in STEP_FUNCTIONS:
            raise SystemExit(f"unknown step {name!r}: one of {', '.join(STEPS)}")
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            entry: dict[str, Any] = {"status": "ok", "result": STEP_FUNCTIONS[name](args)}
        except Exception as exc:  # a failed step is recorded; the others still run
            entry = {"status": "failed", "error": f"{exc!r}\n{traceback.format_exc()[-2000:]}"}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["steps"][name] = entry
        print(json.dumps({name: {k: v for k, v in entry.items() if k != "result"}}), flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "gpu_check.md").write_text(markdown(report))
    failed = [n for n, s in report["steps"].items() if s["status"] != "ok"]
    print(f"gpu_check: {len(report['steps']) - len(failed)} steps ok, failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
