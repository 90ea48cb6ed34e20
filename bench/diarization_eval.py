"""Diarization evaluation (issue 5): our diarizer vs senko alone, and the monologue fast path.

Command (from the repository root, with the venv active):

    python bench/diarization_eval.py --out bench/results

Per conversation file it prints true vs found speakers, DER with the 0.25 s collar and without,
miss / false alarm / confusion, and the RTF of our diarizer and of senko alone
(`senko.Diarizer(device="cpu", warmup=False, quiet=True).diarize_samples`) on the same samples in the
same run. Our time counts `SenkoDiarizer.diarize` (fine VAD, features, CAM++ embeddings in batches
of 64 like senko's, through ONNX Runtime as the engine runs them, GE2E embeddings, clustering); the
engine's Silero VAD (computed once per file for ASR too) is timed separately and shown as well. Both
are warmed up on a short clip first, and each file is timed `--repeat` times, alternating ours and
senko's, keeping each one's fastest (the machine is shared: single timings wander by 2x). Then the
fast-path decision and score of every conversation and monologue with the calibrated threshold, and
the CAM++-only score beside it. A monologue counts as taken when the engine would skip diarization:
a measured match, or a file too short for the diarizer ever to find two speakers in it.

Files: ../shared/eval (real/pyannote_sample, the two synth dialogues, the real single-speaker
recordings), the project's fixtures and examples, and a generated set written by
/work/shared/eval/make_dialogue.py (espeak-ng + sox) into a temporary folder with fixed seeds (see
`generated_specs`): held-out seeds 201 and 202 for 2, 3 and 4 speakers, with and without overlap
(--overlap-prob 0.25), 120 s each, 801-818 and 901-918 (2 speakers of 40-112 s, 3 speakers of 90 s,
4 of 120 s), and monologues in eight voices (seeds 401-408, 60 s; 721-736, 35-125 s). The diarizer's rule was
calibrated on seeds 101-104 (dialogues of 90 s) and 301-308 (monologues of 45 s), the fast path on
those and 501-510, 521-528 (dialogues), 501-508, 601-608 (monologues); seeds 701-714 were reported
until gen_d2_s706 shaped a rule; the short-pause smoothing was chosen on the calibration files after
gen_d2_s805 showed the errors it removes, and 901-918 were added after it. `--calibration` adds all
of them.

Writes <out>/diarization.json (everything) and <out>/diarization.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
if not SHARED.exists():
    SHARED = Path("/work/shared/eval")
MAKE_DIALOGUE = SHARED / "make_dialogue.py"
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
COMMAND = "python bench/diarization_eval.py --out bench/results"
NOTES = [
    "Diarizer: fine VAD, 1.5 s windows every 0.6 s, CAM++ (ONNX Runtime on CPU, as the engine runs it)",
    "and GE2E (engine/speaker_ge2e.py, Resemblyzer's weights) embeddings of every window, clustering on",
    "both views (mean-centred, 0.3 CAM++ / 0.7 GE2E) with k-means++ restarts beside spectral and",
    "agglomerative partitions, a speaker-count rule calibrated for the fused views (`FUSED_RULE`), the",
    "count then checked on whole-sentence spans (down while two speakers score as one voice, >= 0.945,",
    "or among 3+ speakers CAM++ alone >= 0.97; else up while the next count's speakers are clearly",
    "distinct, < 0.93 with 3+ spans each), Viterbi smoothing (windows weigh by their length; a change of",
    "speaker costs 0.15 inside a speech region, 0.25 across a pause under 0.2 s, nothing across a longer",
    "one) whose window scores add, with weight 0.5, a third view: held-out GMM-UBM log-likelihood ratios",
    "of per-file speaker models on MFCC frames (engine/gmm_voices.py; three UBMs per fold, seeded",
    "differently, their ratios averaged; weight chosen on the calibration seeds). Without the",
    "resemblyzer package it runs on",
    "CAM++ alone with the earlier rule (`--cam-only` measures that mode). Fast path: the diarizer's",
    "speech regions cut into spans of 1-6 s (at most 60), each embedded whole with CAM++ and GE2E, split",
    "into the two most different groups; the score is that split's closest-pair ratio (0.3 CAM++ / 0.7",
    "GE2E), a monologue at or above 0.945 (CAM++ alone: 0.965); a file with too few windows for the",
    "diarizer's speaker-count rule ever to split it skips diarization unmeasured ('too short for two",
    "speakers'). Calibration: `python bench/diarization_eval.py --calibration --out <dir>` adds dialogue",
    "seeds 101-104 and monologue seeds 301-308 (the diarizer's rule was chosen on those), 501-510,",
    "521-528 / 501-508, 601-608 (with the former, the fast path's spans and threshold) and 701-714 (held",
    "out until gen_d2_s706 shaped the CAM++-sure merge, `CAM_SURE_RATIO`); the seeds below (201/202,",
    "801-818, 901-918, 401-408, 721-736) were kept apart (901-918 added after the short-pause",
    "smoothing). Times: fastest of `--repeat` runs each, ours and senko's alternating; `RTF` counts",
    "diarization only (the engine's VAD is shared with ASR). Overlapped speech (engine/overlap.py): the",
    "segmentation-3.0 model on 10 s chunks around each change of speaker marks where two talk at once,",
    "and both speakers whose turns meet there get the stretch; DER, miss, FA and confusion score those",
    "turns, `DER excl.` the one-speaker-at-a-time turns words are attributed by (both 0.25 s collar).",
    "`DER count given`: the same diarizer told the true count (`voxdock ingest --speakers N`), untimed;",
    "told 3+ speakers, it replaces the tightest partition when two of its speakers score as one voice on",
    "sentences by the near-tight candidate (within 0.01 per window) whose speakers differ most.",
]

# Conversations with reference turns that are not generated: shared, fixtures, examples.
FIXED_CONVERSATIONS = [
    SHARED / "real" / "pyannote_sample.wav",
    SHARED / "synth" / "dlg2_60s_seed1.wav",
    SHARED / "synth" / "dlg3_120s_seed2.wav",
    ROOT / "tests" / "fixtures" / "media" / "dialogue_2spk.wav",
    ROOT / "tests" / "fixtures" / "media" / "dialogue_3spk.flac",
    ROOT / "examples" / "meeting_2spk.wav",
    ROOT / "examples" / "interview_3spk.flac",
]


@dataclass
class Spec:
    name: str
    args: list[str]


def generated_specs(calibration: bool) -> tuple[list[Spec], list[Spec]]:
    """Conversations and monologues to generate. Reported: seeds 201/202 (2-4 speakers, with and
    without overlap, 120 s), 801-818 (2 speakers of 40-112 s, every other one with overlap; 3 speakers
    of 90 s and 4 of 120 s, half with overlap), 901-918 (the same shapes) and monologues 401-408 (60 s)
    and 721-736 (35-125 s).
    Calibration adds seeds 101-104 (90 s), 501-510 and 521-528 (2 speakers, 60 s; 521-528 with other
    voice pairs), 701-714 (reported until gen_d2_s706 shaped `CAM_SURE_RATIO`) and monologues 301-308
    (45 s), 501-508 (90 s) and 601-608 (35 s)."""
    convs: list[Spec] = []
    monos: list[Spec] = []

    def conv(name: str, speakers: int, seconds: int, seed: int, *extra: str) -> None:
        args = ["--speakers", str(speakers), "--seconds", str(seconds), "--seed", str(seed), *extra]
        convs.append(Spec(name, args))

    def mono(seed: int, seconds: int, voice: str) -> None:
        args = ["--speakers", "1", "--seconds", str(seconds), "--seed", str(seed), "--voices", voice]
        monos.append(Spec(f"gen_mono_s{seed}", args))

    overlap = ("--overlap-prob", "0.25")

    def run_of_seeds(first: int, with_four: bool) -> None:
        """Ten 2-speaker files of 40-112 s (every other with overlap), four of 3 speakers (90 s) and,
        `with_four`, four of 4 speakers (120 s); of those, the last two of each with overlap."""
        for seed in range(first, first + 10):
            conv(f"gen_d2_s{seed}", 2, 40 + 8 * (seed - first), seed, *(overlap if seed % 2 else ()))
        groups = [(3, 90, first + 10)] + ([(4, 120, first + 14)] if with_four else [])
        for speakers, seconds, start in groups:
            for seed in range(start, start + 4):
                # the 700s (calibration now) had no overlap among 3 speakers
                extra = overlap if with_four and seed >= start + 2 else ()
                conv(f"gen_d{speakers}{'o' if extra else ''}_s{seed}", speakers, seconds, seed, *extra)

    sets = [(201, 120), (202, 120)] + ([(101, 90), (102, 90), (103, 90), (104, 90)] if calibration else [])
    for seed, seconds in sets:
        for speakers in (2, 3, 4):
            conv(f"gen_d{speakers}_s{seed}", speakers, seconds, seed)
            conv(f"gen_d{speakers}o_s{seed}", speakers, seconds, seed, *overlap)
    run_of_seeds(801, with_four=True)
    run_of_seeds(901, with_four=True)  # added with the short-pause smoothing, which never saw them
    for i, voice in enumerate(VOICES):
        mono(401 + i, 60, voice)
    for i in range(16):
        mono(721 + i, 35 + 6 * i, VOICES[(3 * i) % len(VOICES)])
    if calibration:
        run_of_seeds(701, with_four=False)
        for seed in range(501, 511):
            conv(f"gen_d2_s{seed}", 2, 60, seed)
        for seed in range(501, 506):
            conv(f"gen_d2o_s{seed}", 2, 60, seed, *overlap)
        for i in range(8):
            pair = f"{VOICES[i]},{VOICES[(i + 1) % len(VOICES)]}"
            conv(f"gen_d2v_s{521 + i}", 2, 60, 521 + i, "--voices", pair)
        for i, voice in enumerate(VOICES):
            mono(301 + i, 45, voice)
            mono(501 + i, 90, voice)
            mono(601 + i, 35, VOICES[(i + 3) % len(VOICES)])
    return convs, monos


def generate(specs: list[Spec], folder: Path) -> list[Path]:
    out = []
    for spec in specs:
        prefix = folder / spec.name
        if not prefix.with_suffix(".wav").exists():
            subprocess.run(
                [sys.executable, str(MAKE_DIALOGUE), *spec.args, "--out", str(prefix)],
                check=True,
                capture_output=True,
            )
        out.append(prefix.with_suffix(".wav"))
    return out


def engine_speech(samples: np.ndarray) -> list[tuple[float, float]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    return [(s["start"] / 16000, s["end"] / 16000) for s in get_speech_timestamps(samples, opts)]


def batched(embed, size: int = 64):
    def run(feats):
        parts = [embed(feats[i : i + size]) for i in range(0, len(feats), size)]
        return np.concatenate(parts) if parts else np.zeros((0, 192), np.float32)

    return run


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (where the generated files were kept does not matter)."""
    parts = [COMMAND.rsplit(" --out", 1)[0]]
    if args.calibration:
        parts.append("--calibration")
    if args.cam_only:
        parts.append("--cam-only")
    if args.repeat != 2:
        parts.append(f"--repeat {args.repeat}")
    out = args.out.resolve()
    parts.append(f"--out {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return " ".join(parts)


def fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--calibration", action="store_true", help="also run the calibration seeds")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--onnx-cache", type=Path, default=None, help="CAM++ ONNX export folder")
    parser.add_argument("--repeat", type=int, default=2, help="timings per file (fastest kept)")
    parser.add_argument("--cam-only", action="store_true", help="diarize without the GE2E view")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import senko
    import torch

    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization_senko import SenkoDiarizer
    from voxdock.engine.fastpath import CALIBRATED_THRESHOLDS, FALLBACK_THRESHOLD, check, default_threshold
    from voxdock.engine.models import VOICE_MODEL_NAME, resolve_voice
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="voxdock-diar-"))
    tmp.mkdir(parents=True, exist_ok=True)
    conv_specs, mono_specs = generated_specs(args.calibration)
    t0 = time.time()
    generated = generate(conv_specs, tmp)
    generated_monos = generate(mono_specs, tmp)
    gen_s = time.time() - t0

    conversations = [*FIXED_CONVERSATIONS, *generated]
    monologues = [
        *sorted(p for p in (SHARED / "real").glob("*.wav") if p.stem != "pyannote_sample"),
        ROOT / "tests" / "fixtures" / "media" / "monologue.ogg",
        ROOT / "tests" / "fixtures" / "media" / "monologue_video.mp4",
        ROOT / "examples" / "briefing_video.mp4",
        *generated_monos,
    ]

    # The engine's CAM++ path: ONNX Runtime on CPU, exported once into a cache folder (engine/loader.py).
    cache = args.onnx_cache or Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    encoder = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    embed = batched(encoder.embed_features)
    ours = SenkoDiarizer(embed, second_view=not args.cam_only, onnx_cache=cache)
    theirs = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    torch_threads = torch.get_num_threads()
    cam_threshold = CALIBRATED_THRESHOLDS.get(VOICE_MODEL_NAME, FALLBACK_THRESHOLD)
    threshold = cam_threshold if args.cam_only else default_threshold(VOICE_MODEL_NAME)
    views = "cam++ + ge2e" if ours.second_encoder is not None else "cam++"
    fast_views = "cam++" if args.cam_only or ours.second_encoder is None else "cam++ + ge2e"
    warm = decode_file(ROOT / "tests" / "fixtures" / "media" / "dialogue_2spk.wav").samples[: 16000 * 8]
    ours.diarize(warm, engine_speech(warm))
    theirs.diarize_samples(warm, 16000)

    rows = []
    print(
        f"{'file':24s} {'spk':>3s} {'ours':>4s} {'DER':>6s} {'DER0':>6s} {'miss':>6s} {'FA':>6s} "
        f"{'conf':>6s} {'RTF':>6s} {'DERn':>6s} | {'senko':>5s} {'DER':>6s} "
        f"{'DER0':>6s} {'RTF':>6s}"
    )
    for path in conversations:
        samples = decode_file(path).samples
        duration = samples.shape[0] / 16000
        ref = read_rttm(path.with_suffix(".rttm"))
        t = time.perf_counter()
        speech = engine_speech(samples)
        vad_s = time.perf_counter() - t
        ours_s = senko_s = math.inf
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            evidence = ours.prepare(samples, speech)  # with `decide`: what `ours.diarize` does
            result = ours.decide(samples, evidence)
            ours_s = min(ours_s, time.perf_counter() - t)
            t = time.perf_counter()
            senko_out = theirs.diarize_samples(samples, 16000)
            senko_s = min(senko_s, time.perf_counter() - t)
        hyp = [Turn(x.start, x.end, x.speaker) for x in result.all_turns]
        true_count = len({x.speaker for x in ref})
        told = ours.decide(samples, evidence, num_speakers=true_count)  # as `ingest --speakers N`
        known = diarization_error_rate(ref, [Turn(x.start, x.end, x.speaker) for x in told.all_turns])
        exclusive = diarization_error_rate(ref, [Turn(x.start, x.end, x.speaker) for x in result.turns])
        senko_hyp = [
            Turn(s["start"], s["end"], s["speaker"]) for s in (senko_out or {}).get("merged_segments", [])
        ]
        a = diarization_error_rate(ref, hyp)
        b = diarization_error_rate(ref, hyp, collar=0.0)
        sa = diarization_error_rate(ref, senko_hyp)
        sb = diarization_error_rate(ref, senko_hyp, collar=0.0)
        row = {
            "file": path.stem,
            "duration_s": round(duration, 2),
            "true_speakers": a.reference_speakers,
            "found_speakers": a.hypothesis_speakers,
            "der": a.der,
            "der_no_collar": b.der,
            "der_exclusive": exclusive.der,
            "der_known_count": known.der,
            "overlap_s": round(sum(x.end - x.start for x in result.overlaps), 2),
            "miss": a.miss,
            "false_alarm": a.false_alarm,
            "confusion": a.confusion,
            "rtf": ours_s / duration,
            "engine_vad_rtf": vad_s / duration,
            "senko_found_speakers": sa.hypothesis_speakers,
            "senko_der": sa.der,
            "senko_der_no_collar": sb.der,
            "senko_rtf": senko_s / duration,
            "time_ratio": ours_s / senko_s if senko_s > 0 else math.nan,
            "time_ratio_with_engine_vad": (ours_s + vad_s) / senko_s if senko_s > 0 else math.nan,
        }
        rows.append(row)
        print(
            f"{row['file']:24s} {row['true_speakers']:3d} {row['found_speakers']:4d} {fmt(a.der):>6s} "
            f"{fmt(b.der):>6s} {fmt(a.miss):>6s} {fmt(a.false_alarm):>6s} {fmt(a.confusion):>6s} "
            f"{fmt(row['rtf']):>6s} {fmt(known.der):>6s} | {sa.hypothesis_speakers:5d} {fmt(sa.der):>6s} "
            f"{fmt(sb.der):>6s} {fmt(row['senko_rtf']):>6s}",
            flush=True,
        )

    fast = []
    for kind, paths in (("conversation", conversations), ("monologue", monologues)):
        for path in paths:
            samples = decode_file(path).samples
            speech = engine_speech(samples)
            t = time.perf_counter()
            regions = ours.speech_regions(samples, speech)
            decision = check(
                samples,
                regions,
                embed,
                threshold,
                use_second_view=not args.cam_only,
                can_split=ours.can_find_two_speakers(regions),
            )
            fp_s = time.perf_counter() - t
            cam_only = check(samples, regions, embed, cam_threshold, use_second_view=False)
            fast.append(
                {
                    "file": path.stem,
                    "kind": kind,
                    "skips_diarization": decision.skips_diarization,
                    "monologue": decision.monologue,
                    "similarity": decision.similarity,
                    "reason": decision.reason,
                    "cam_similarity": cam_only.similarity,
                    "cam_monologue": cam_only.monologue,
                    "seconds": fp_s,
                }
            )
    conv_scores = [f["similarity"] for f in fast if f["kind"] == "conversation"]
    cam_conv_scores = [f["cam_similarity"] for f in fast if f["kind"] == "conversation"]
    mono = [f for f in fast if f["kind"] == "monologue"]
    measured = [f for f in mono if f["reason"] in ("similar", "dissimilar")]
    summary = {
        "command": command_line(args),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {torch_threads}",
        "generation_s": round(gen_s, 1),
        "diarizer_views": views,
        "voice_runtime": encoder.runtime,
        "fast_path_views": fast_views,
        "fast_path_threshold": threshold,
        "fast_path_conversations_skipped": sum(
            f["skips_diarization"] for f in fast if f["kind"] == "conversation"
        ),
        "fast_path_monologues_taken": f"{sum(f['skips_diarization'] for f in mono)}/{len(mono)}",
        "fast_path_highest_conversation_score": max(conv_scores) if conv_scores else None,
        "fast_path_margin": threshold - max(conv_scores) if conv_scores else None,
        "fast_path_monologues_taken_measured": f"{sum(f['reason'] == 'similar' for f in measured)}"
        f"/{len(measured)}",
        "fast_path_cam_only_threshold": cam_threshold,
        "fast_path_cam_only_highest_conversation_score": max(cam_conv_scores) if cam_conv_scores else None,
        "fast_path_cam_only_monologues_taken_measured": f"{sum(f['cam_monologue'] for f in measured)}"
        f"/{len(measured)}",
        "mean_der": float(np.mean([r["der"] for r in rows])),
        "mean_der_exclusive": float(np.mean([r["der_exclusive"] for r in rows])),
        "mean_der_no_collar": float(np.mean([r["der_no_collar"] for r in rows])),
        "mean_der_known_count": float(np.mean([r["der_known_count"] for r in rows])),
        "files_der_le_10pct_known_count": f"{sum(r['der_known_count'] <= 0.10 for r in rows)}/{len(rows)}",
        "mean_senko_der": float(np.mean([r["senko_der"] for r in rows])),
        "files_der_le_10pct": f"{sum(r['der'] <= 0.10 for r in rows)}/{len(rows)}",
        "count_right": f"{sum(r['true_speakers'] == r['found_speakers'] for r in rows)}/{len(rows)}",
        "senko_count_right": f"{sum(r['true_speakers'] == r['senko_found_speakers'] for r in rows)}"
        f"/{len(rows)}",
        "total_time_ratio": sum(r["rtf"] * r["duration_s"] for r in rows)
        / max(sum(r["senko_rtf"] * r["duration_s"] for r in rows), 1e-9),
    }
    print()
    for f in fast:
        print(
            f"fast path {f['kind']:12s} {f['file']:24s} skips={f['skips_diarization']!s:5s} "
            f"similarity={fmt(f['similarity'])} ({f['reason']})"
        )
    print(json.dumps(summary, indent=2))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diarization.json").write_text(
        json.dumps({"summary": summary, "files": rows, "fast_path": fast}, indent=2, default=float) + "\n"
    )
    lines = [
        "# Diarization evaluation (issue 5)",
        "",
        f"Command: `{summary['command']}` ({summary['machine']}).",
        "",
        *NOTES,
        "",
        "| file | true | found | DER | DER no collar | miss | FA | conf. | DER excl. | RTF | "
        "DER count given | senko found | senko DER | senko RTF |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['true_speakers']} | {r['found_speakers']} | {fmt(r['der'])} | "
            f"{fmt(r['der_no_collar'])} | {fmt(r['miss'])} | {fmt(r['false_alarm'])} | "
            f"{fmt(r['confusion'])} | {fmt(r['der_exclusive'])} | "
            f"{fmt(r['rtf'])} | {fmt(r['der_known_count'])} | {r['senko_found_speakers']} | "
            f"{fmt(r['senko_der'])} | {fmt(r['senko_rtf'])} |"
        )
    lines += ["", "Summary:", ""] + [f"- {k}: {v}" for k, v in summary.items()] + ["", "Fast path:", ""]
    lines += [
        "| file | kind | skips diarization | reason | similarity | CAM++-only similarity |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in fast:
        lines.append(
            f"| {f['file']} | {f['kind']} | {f['skips_diarization']} | {f['reason']} | "
            f"{fmt(f['similarity'])} | {fmt(f['cam_similarity'])} |"
        )
    (args.out / "diarization.md").write_text("\n".join(lines) + "\n")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
