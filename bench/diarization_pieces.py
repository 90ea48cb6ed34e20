"""What long units' pieces (engine/diarization/refinement.py) gain and cost, in one process.

The real conversation sets of bench/diarization_eval.py (AMI excerpts, the call, the mixed real voices,
the 7-minute file) are diarized as the engine does (its VAD's regions too), once with units longer than
`PIECE_S` also embedded in pieces (from the unit's own CAM++ pass, those unlike their unit there again
alone: engine/diarization/embedding.py) and once without, alternating, the fastest of `--repeat` runs of
each kept. DER (0.25 s collar, overlapped speech scored, pooled by time) is scored both ways on the
same evidence: with the pieces credited (what the engine does) and with every unit credited whole
(no piece may move), which is what the diarizer did before pieces.

    python bench/diarization_pieces.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diarization_eval import (  # noqa: E402  (bench/ on the path first)
    COLLAR_S,
    SET_TITLES,
    SHARED,
    pct,
    pooled,
    score,
    table,
    write_long,
    write_mixed,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--repeat", type=int, default=2, help="timings per file and way (fastest kept)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization import build_diarizer, embedding, refinement
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.vad import detect_speech
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import Turn, read_rttm

    cache = Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    voice = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    diarizer: Any = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=cache)
    tmp = Path(tempfile.mkdtemp(prefix="voxdock-pieces-"))
    files = [("meetings", p) for p in sorted((SHARED / "meetings").glob("*.wav"))]
    files += [("real", SHARED / "real" / "pyannote_sample.wav")]
    files += [("mixed", p) for p in write_mixed(tmp)] + [("long", p) for p in write_long(tmp)]
    cut = embedding.piece_runs

    def whole(first: int, last: int) -> list[tuple[int, int]]:
        return [(first, last)]

    def diarize(samples: np.ndarray, pieces: bool) -> tuple[Any, float]:
        embedding.piece_runs = cut if pieces else whole  # type: ignore[assignment]
        started = time.perf_counter()
        evidence = diarizer.measure(samples, vad_speech=detect_speech(samples))
        diarizer.decide(evidence)
        return evidence, time.perf_counter() - started

    def turns(result: Any) -> list[Any]:
        return [Turn(t.start, t.end, t.speaker) for t in result.all_turns]

    warm = decode_file(files[0][1]).samples
    diarize(warm, True)
    diarize(warm, False)
    rows: list[dict[str, Any]] = []
    for group, path in files:
        samples = decode_file(path).samples
        reference = read_rttm(path.with_suffix(".rttm"))
        seconds = {True: math.inf, False: math.inf}
        evidence = None
        for _ in range(max(1, args.repeat)):
            for pieces in (False, True):
                measured, took = diarize(samples, pieces)
                seconds[pieces] = min(seconds[pieces], took)
                evidence = measured if pieces else evidence
        assert evidence is not None
        credited = diarizer.decide(evidence)
        margin = refinement.PIECE_MARGIN
        refinement.PIECE_MARGIN = math.inf  # no piece moves: every unit credited whole
        try:
            whole_units = diarizer.decide(evidence)
        finally:
            refinement.PIECE_MARGIN = margin
        row = {
            "set": group,
            "file": path.stem,
            "duration_s": round(samples.shape[0] / 16000, 2),
            "pieces": len(evidence.speakers.pieces),
            "pieces_alone": int(evidence.speakers.pieces.alone.sum()),
            "units": len(evidence.speakers),
            "with_pieces": score(reference, turns(credited), COLLAR_S),
            "units_whole": score(reference, turns(whole_units), COLLAR_S),
            "seconds_with_pieces": seconds[True],
            "seconds_without": seconds[False],
        }
        rows.append(row)
        print(
            f"{group:9s} {path.stem:28s} DER {pct(row['with_pieces']['der']):>6s} "
            f"(whole {pct(row['units_whole']['der']):>6s}) time x{seconds[True] / seconds[False]:.2f}",
            flush=True,
        )
    embedding.piece_runs = cut  # type: ignore[assignment]

    summary: dict[str, Any] = {}
    for group in dict.fromkeys(r["set"] for r in rows):
        part = [r for r in rows if r["set"] == group]
        summary[group] = {
            "files": len(part),
            "der_with_pieces": pooled(part, "with_pieces"),
            "der_units_whole": pooled(part, "units_whole"),
            "files_better": sum(r["with_pieces"]["der"] < r["units_whole"]["der"] - 1e-9 for r in part),
            "files_worse": sum(r["with_pieces"]["der"] > r["units_whole"]["der"] + 1e-9 for r in part),
        }
    pieces = sum(r["pieces"] for r in rows)
    pieces_alone = sum(r["pieces_alone"] for r in rows)
    with_s = sum(r["seconds_with_pieces"] for r in rows)
    without_s = sum(r["seconds_without"] for r in rows)
    report = {
        "command": "python bench/diarization_pieces.py --out bench/results",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "piece_s": embedding.PIECE_S,
        "margin": refinement.PIECE_MARGIN,
        "min_speech_s": refinement.PIECE_MIN_SPEECH_S,
        "alone_below": embedding.PIECE_ALONE_BELOW,
        "pieces": pieces,
        "pieces_alone": pieces_alone,
        "audio_s": round(sum(r["duration_s"] for r in rows), 1),
        "seconds_with_pieces": with_s,
        "seconds_without": without_s,
        "time_ratio": with_s / without_s,
        "summary": summary,
        "files": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diarization_pieces.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "diarization_pieces.md").write_text(markdown(report))
    print(f"time with pieces / without: {report['time_ratio']:.2f}x; written to {args.out}")
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Long units' pieces: gain and cost",
        "",
        f"Command: `{report['command']}` ({report['machine']}; {report['when']}).",
        "",
        f"Units longer than {report['piece_s']} s also embedded in pieces; a piece "
        f"{report['margin']} cosine nearer another speaker, with {report['min_speech_s']} s of speech, is "
        "credited to that speaker. A piece's embedding comes from its unit's own CAM++ pass; one less like "
        f"its unit's than {report['alone_below']} there is embedded again alone: {report['pieces_alone']} of "
        f"{report['pieces']} pieces. DER pooled by time, 0.25 s collar, overlapped speech scored; both "
        "columns decide the same evidence. Time: `measure` + `decide`, the VAD included, the fastest run "
        "of each file each way, alternating.",
        "",
    ]
    lines += table(
        ["set", "files", "DER with pieces", "units whole", "files better", "files worse"],
        [
            [
                SET_TITLES.get(key, key),
                str(s["files"]),
                pct(s["der_with_pieces"]),
                pct(s["der_units_whole"]),
                str(s["files_better"]),
                str(s["files_worse"]),
            ]
            for key, s in report["summary"].items()
        ],
    )
    lines += [
        "",
        f"Time over {report['audio_s']:.0f} s of audio: {report['seconds_with_pieces']:.1f} s with pieces, "
        f"{report['seconds_without']:.1f} s without: **{report['time_ratio']:.2f}x**.",
        "",
        "## Per file",
        "",
    ]
    lines += table(
        ["set", "file", "s", "units", "pieces", "alone", "DER with pieces", "units whole", "time x"],
        [
            [
                SET_TITLES.get(r["set"], r["set"]),
                r["file"],
                f"{r['duration_s']:.0f}",
                str(r["units"]),
                str(r["pieces"]),
                str(r["pieces_alone"]),
                pct(r["with_pieces"]["der"]),
                pct(r["units_whole"]["der"]),
                f"{r['seconds_with_pieces'] / r['seconds_without']:.2f}",
            ]
            for r in report["files"]
        ],
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
