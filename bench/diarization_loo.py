"""How much of the diarizer's AMI figure is calibration on the same excerpts: leave one out.

Command (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/diarization_loo.py --out bench/results

The diarizer's thresholds (clustering distance, speech and overlap probability) were chosen on the ten
AMI excerpts of ../shared/eval/meetings among other sets, and the issue's judges score it on real
meetings it has not seen. This estimates what calibration on the same files is worth: each excerpt is
scored with the grid point that is best (pooled DER, 0.25 s collar) on the other nine alone, and the
ten left-out scores are pooled by time. Beside it: the shipped settings on all ten, and the best grid
point on all ten (the in-sample optimum). A left-out DER well above the shipped one says the shipped
figure flatters the diarizer on unseen meetings.

Each excerpt is measured once (segmentation and CAM++, `SegmentationDiarizer.measure`, ONNX Runtime on
the CPU); every grid point decides the same evidence (`decide`), its voices per frame recomputed from
the segmentation with that point's speech and overlap thresholds. Writes diarization_loo.md and
diarization_loo.json to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLUSTERING = (0.30, 0.34, 0.38, 0.42, 0.46)
SPEECH = (0.30, 0.35, 0.40, 0.45, 0.50)
OVERLAP = (0.10, 0.20, 0.30)
COLLAR_S = 0.25

Point = tuple[float, float, float]  # clustering threshold, speech threshold, overlap threshold
Measured = list[tuple[str, list[Any], Any]]  # (excerpt, reference turns, evidence)


def measure_meetings(meetings: Path) -> Measured:
    """(name, reference turns, evidence) of each AMI excerpt."""
    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization import build_diarizer
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.oom import AdaptiveBatch
    from voxdock.engine.vad import detect_speech
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import read_rttm

    cache = Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    voice = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    diarizer = build_diarizer(voice=voice, batch=AdaptiveBatch(64), onnx_cache=cache)
    measured = []
    for path in sorted(meetings.glob("*.wav")):
        samples = decode_file(path).samples
        evidence = diarizer.measure(samples, vad_speech=detect_speech(samples))  # type: ignore[attr-defined]
        measured.append((path.stem, read_rttm(path.with_suffix(".rttm")), evidence))
    return measured


def error_seconds(
    measured: list[tuple[str, list[Any], Any]], grid: list[Point]
) -> dict[Point, dict[str, Any]]:
    """Per grid point and file: DER and missed-speech seconds, reference speech seconds, speakers."""
    from voxdock.engine.diarization.pipeline import DiarizerConfig, SegmentationDiarizer
    from voxdock.engine.diarization.reconstruction import voices_per_frame
    from voxdock.evaluation import Turn, diarization_error_rate

    table: dict[Point, dict[str, Any]] = {}
    for point in grid:
        threshold, speech, overlap = point
        decider = SegmentationDiarizer(
            None,  # type: ignore[arg-type]  # deciding needs no model
            None,  # type: ignore[arg-type]
            DiarizerConfig(threshold=threshold, speech_threshold=speech, overlap_threshold=overlap),
        )
        rows = {}
        for name, reference, evidence in measured:
            voices = voices_per_frame(evidence.seg, speech, overlap)
            result = decider.decide(dataclasses.replace(evidence, voices=voices))
            hypothesis = [Turn(t.start, t.end, t.speaker) for t in result.all_turns]
            r = diarization_error_rate(reference, hypothesis, collar=COLLAR_S)
            rows[name] = {
                "der_s": r.der * r.reference_speech_s,
                "miss_s": r.miss * r.reference_speech_s,
                "ref_s": r.reference_speech_s,
                "right": r.reference_speakers == r.hypothesis_speakers,
            }
        table[point] = rows
    return table


def pooled(rows: dict[str, Any], names: list[str], key: str = "der_s") -> float:
    return sum(rows[n][key] for n in names) / max(sum(rows[n]["ref_s"] for n in names), 1e-9)


def leave_one_out(table: dict[Point, dict[str, Any]], shipped: Point) -> dict[str, Any]:
    grid = list(table)
    names = list(table[shipped])
    files = []
    totals = {"der_s": 0.0, "miss_s": 0.0, "ref_s": 0.0}
    for left in names:
        rest = [n for n in names if n != left]
        chosen = min(grid, key=lambda p: pooled(table[p], rest))
        row = table[chosen][left]
        for key in totals:
            totals[key] += row[key]
        files.append(
            {
                "file": left,
                "chosen": chosen,
                "left_out_der": row["der_s"] / max(row["ref_s"], 1e-9),
                "shipped_der": table[shipped][left]["der_s"] / max(row["ref_s"], 1e-9),
            }
        )
    best = min(grid, key=lambda p: pooled(table[p], names))
    return {
        "files": files,
        "left_out_der": totals["der_s"] / totals["ref_s"],
        "left_out_miss": totals["miss_s"] / totals["ref_s"],
        "shipped": {
            "point": shipped,
            "der": pooled(table[shipped], names),
            "miss": pooled(table[shipped], names, "miss_s"),
        },
        "in_sample_best": {"point": best, "der": pooled(table[best], names)},
        "grid_points": len(grid),
    }


def markdown(report: dict[str, Any], command: str) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    shipped, best = report["shipped"], report["in_sample_best"]
    lines = [
        "# Diarization: leave one AMI excerpt out",
        "",
        f"Command: `{command}` ({report['machine']}; {report['when']}).",
        "",
        "Grid point: (clustering threshold, speech threshold, overlap threshold); "
        f"{report['grid_points']} points. DER with a {COLLAR_S} s collar, overlapped speech scored, "
        "pooled by time.",
        "",
        "- left out, each excerpt scored with the point best on the other nine: "
        f"**{pct(report['left_out_der'])}** (missed speech {pct(report['left_out_miss'])})",
        f"- the shipped settings {tuple(shipped['point'])} on all ten: {pct(shipped['der'])} "
        f"(missed speech {pct(shipped['miss'])})",
        f"- the best point on all ten (in sample) {tuple(best['point'])}: {pct(best['der'])}",
        "",
        "| left out | point chosen on the other nine | its DER | shipped settings' DER |",
        "| --- | --- | --- | --- |",
    ]
    for f in report["files"]:
        lines.append(
            f"| {f['file']} | {tuple(f['chosen'])} | {pct(f['left_out_der'])} | {pct(f['shipped_der'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    from diarization_eval import SHARED

    from voxdock.engine.diarization.pipeline import DiarizerConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meetings", type=Path, default=SHARED / "meetings", help="AMI excerpts with .rttm")
    parser.add_argument("--out", type=Path, default=None, help="write diarization_loo.md/.json here")
    args = parser.parse_args()
    started = time.time()
    measured = measure_meetings(args.meetings)
    if len(measured) < 3:
        print(f"need at least 3 excerpts with references in {args.meetings}", file=sys.stderr)
        return 2
    config = DiarizerConfig()
    shipped = (config.threshold, config.speech_threshold, config.overlap_threshold)
    grid = sorted(set(itertools.product(CLUSTERING, SPEECH, OVERLAP)) | {shipped})
    report = leave_one_out(error_seconds(measured, grid), shipped)
    report["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["seconds"] = round(time.time() - started, 1)
    command = "python bench/diarization_loo.py" + (f" --out {args.out}" if args.out else "")
    text = markdown(report, command)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "diarization_loo.md").write_text(text)
        (args.out / "diarization_loo.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
