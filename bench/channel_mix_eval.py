"""A microphone per person, mixed to one: what the automixer is worth to the transcript.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/channel_mix_eval.py --out bench/results

The mixed real voices of bench/diarization_eval.py with three and four voices (`mixed_specs`) are
laid out a channel per person (`channel_per_party`, a field recorder's lavaliers: each hearing the
others `--crosstalk` dB down and 5 ms late), with two inputs unused, each channel with noise of its
own (a preamplifier's and the room's), in one condition a sixth channel of steady room noise (a
camera's scratch microphone), and written as a six-channel WAV that names no layout. Each is
transcribed by tiny.en (beam 1, English): the clean mono conversation (the reference: there is no
hand transcript of these cuts, so this measures what the mix loses), the channels summed evenly over
sqrt 6 (how they were mixed before), by power share alone (`power_share`: the automixer without its
noise floors) and by the engine's decoder (`AutoMix`, engine/automix.py). Word differences to the
reference are pooled over the files. Writes channel_mix.md and channel_mix.json to --out.
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

from diarization_eval import mixed_specs, pct, real_voice_recordings, table  # noqa: E402

UNUSED_CHANNELS = 2
# (crosstalk dB, noise on every channel dBFS, steady room noise on the last channel dBFS or None)
CONDITIONS = [(-26.0, -60.0, None), (-15.0, -60.0, None), (-15.0, -45.0, None), (-15.0, -60.0, -40.0)]


def power_share(channels: np.ndarray, time_constant_s: float = 0.05) -> np.ndarray:
    """Each channel's gain the square root of its share of the channels' smoothed power: the
    automixer without noise floors."""
    from scipy.signal import lfilter

    decay = np.exp(-1.0 / (time_constant_s * 16000))
    power = lfilter([1.0 - decay], [1.0, -decay], channels.astype(np.float64) ** 2, axis=1)
    gains = np.sqrt(power / np.maximum(power.sum(axis=0), 1e-12))
    return (gains * channels).sum(axis=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from voxdock.engine.decode import decode_file
    from voxdock.engine.models import resolve_asr
    from voxdock.evaluation import channel_per_party, mix_conversation, word_error_rate, write_wav

    model = WhisperModel(
        str(resolve_asr("tiny.en", ROOT / "pretrained_models").require()), device="cpu", compute_type="int8"
    )

    def words(samples: np.ndarray) -> str:
        audio = samples.astype(np.float32)
        segments, _ = model.transcribe(audio, beam_size=1, language="en", vad_filter=False)
        return " ".join(s.text for s in segments)

    def errors(reference: str, hypothesis: str) -> float:
        return word_error_rate(reference, hypothesis) * len(reference.split())

    started = time.time()
    recordings = real_voice_recordings()
    tmp = Path(tempfile.mkdtemp(prefix="voxdock-mix-"))
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for name, combo, turn_s, seed in mixed_specs():
        if len(combo) < 3:
            continue
        samples, turns = mix_conversation({v: recordings[v] for v in combo}, turn_s, seed)
        reference = words(samples)
        for crosstalk_db, noise_db, scratch_db in CONDITIONS:
            lavaliers = channel_per_party(samples, turns, [[v] for v in combo], crosstalk_db=crosstalk_db)
            unused = np.zeros((UNUSED_CHANNELS, samples.size))
            channels = np.concatenate([lavaliers * np.float32(0.7), unused])
            channels = channels + rng.normal(0.0, 10 ** (noise_db / 20), channels.shape)
            if scratch_db is not None:
                channels[-1] += rng.normal(0.0, 10 ** (scratch_db / 20), samples.size)
            channels = channels.astype(np.float32)
            even = channels.sum(axis=0) / np.sqrt(channels.shape[0])
            automixed = decode_file(write_wav(tmp / f"{name}.wav", channels)).samples
            row = {
                "file": name,
                "crosstalk_db": crosstalk_db,
                "noise_dbfs": noise_db,
                "scratch_dbfs": scratch_db,
                "reference_words": len(reference.split()),
                "even_errors": errors(reference, words(even)),
                "power_share_errors": errors(reference, words(power_share(channels))),
                "automix_errors": errors(reference, words(automixed)),
            }
            rows.append(row)
            print(
                f"{name:30s} crosstalk {crosstalk_db:5.0f} noise {noise_db:5.0f} scratch {scratch_db}: "
                f"even {pct(row['even_errors'] / row['reference_words'])} "
                f"share {pct(row['power_share_errors'] / row['reference_words'])} "
                f"automix {pct(row['automix_errors'] / row['reference_words'])}",
                flush=True,
            )
    summary = []
    for crosstalk_db, noise_db, scratch_db in CONDITIONS:
        condition = (crosstalk_db, noise_db, scratch_db)
        group = [r for r in rows if (r["crosstalk_db"], r["noise_dbfs"], r["scratch_dbfs"]) == condition]
        total = sum(r["reference_words"] for r in group)
        summary.append(
            {
                "crosstalk_db": crosstalk_db,
                "noise_dbfs": noise_db,
                "scratch_dbfs": scratch_db,
                "files": len(group),
                "reference_words": total,
                "even": sum(r["even_errors"] for r in group) / total,
                "power_share": sum(r["power_share_errors"] for r in group) / total,
                "automix": sum(r["automix_errors"] for r in group) / total,
            }
        )
    report = {
        "command": "python bench/channel_mix_eval.py --out bench/results",
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
        "summary": summary,
        "files": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "channel_mix.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "channel_mix.md").write_text(markdown(report))
    print(json.dumps(summary, indent=2))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# A microphone per person, mixed to one",
        "",
        f"Command: `{report['command']}` ({report['machine']}; {report['date']}).",
        "",
        "The 3- and 4-voice real conversations of `bench/diarization_eval.py`, a lavalier per person in a "
        f"six-channel WAV naming no layout ({UNUSED_CHANNELS} inputs unused), each channel with noise of "
        "its own. tiny.en's words on each mix against its words on the clean conversation (pooled over the "
        "files): `even` sums the channels over sqrt 6, as they were mixed before; `power share` is the "
        "automixer without its noise floors; `automix` is the engine's decoder (`AutoMix`).",
        "",
    ]
    lines += table(
        ["crosstalk", "noise", "scratch microphone", "files", "words", "even sum", "power share", "automix"],
        [
            [
                f"{s['crosstalk_db']:.0f} dB",
                f"{s['noise_dbfs']:.0f} dBFS",
                "-" if s["scratch_dbfs"] is None else f"{s['scratch_dbfs']:.0f} dBFS",
                str(s["files"]),
                str(s["reference_words"]),
                pct(s["even"]),
                pct(s["power_share"]),
                pct(s["automix"]),
            ]
            for s in report["summary"]
        ],
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
