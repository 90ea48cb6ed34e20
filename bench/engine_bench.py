"""Engine benchmark: the threaded, batched engine against a plain sequential baseline, same run.

    .venv/bin/python bench/engine_bench.py            # ../shared/eval when present, else bundled media
    .venv/bin/python bench/engine_bench.py --files examples tests/fixtures/media

On the same files with the same loaded models, in one process:

1. engine: the real Engine (worker threads, bounded queues, batches across files, COPY writes) on a
   fresh embedded store, timed from the first claim to the last write;
2. baseline: one file at a time, stage after stage, voice and text embeddings one segment at a time,
   segments written with one INSERT per row (the same stage code, so transcripts must be identical);
3. ASR alone: decode + VAD + ASR of every file and nothing else, ASR_WORKERS files at a time (the
   engine's own ASR configuration).

Prints per-stage RTF, end-to-end RTF and hours of audio per hour for the engine, the baseline's time,
the ratios (baseline / engine, engine / ASR alone), whether transcripts are identical, and WER / DER
of what the engine stored against the references (DER of the speaker turns the stored segments make:
one speaker's consecutive segments joined across pauses under 1 s, as the references mark turns;
`der_segments_raw` scores the segments as they are; `der_turns` scores the stored speaker turns,
overlapped speech included). Results go to bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from voxdock.cli import load_planned_models, model_plan
from voxdock.engine.discovery import discover
from voxdock.engine.engine import Engine
from voxdock.engine.handlers import StageHandlers
from voxdock.engine.loader import LoadedModels
from voxdock.engine.models import vector_spec
from voxdock.engine.oom import AdaptiveBatch, FaultInjector
from voxdock.engine.work import FileWork
from voxdock.evaluation import Turn, diarization_error_rate, read_rttm, turns_from_segments, word_error_rate
from voxdock.settings import Settings, load_settings
from voxdock.storage import jobs, nodes
from voxdock.storage.database import Database
from voxdock.storage.migrate import migrate
from voxdock.storage.segments import ModelSet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SHARED_EVAL = ROOT.parent / "shared" / "eval"
INSERT_SQL = (
    "INSERT INTO segments (source_id, seq, start_s, end_s, text, speaker, text_embedding, voice_embedding,"
    " model_set_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def default_inputs() -> list[Path]:
    if SHARED_EVAL.is_dir():
        return [SHARED_EVAL / "real", SHARED_EVAL / "synth", SHARED_EVAL / "meetings"]
    return [ROOT / "examples", ROOT / "tests" / "fixtures" / "media"]


def fresh_store(tmp: Path, name: str, spec) -> Database:  # type: ignore[no-untyped-def]
    db = Database.open(None, tmp / name)
    migrate(db, spec)
    return db


def run_engine(settings: Settings, db: Database, plan, models: LoadedModels, paths: list[Path]) -> dict:  # type: ignore[no-untyped-def]
    engine = Engine(settings, db, plan, models=models)
    engine.start(wait=True)
    start = time.perf_counter()
    submission = engine.submit(paths)
    while True:
        progress = jobs.batch_progress(db, [submission.batch_id])[0]
        if progress.queued + progress.claimed == 0 and engine.files_in_flight() == 0:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - start
    snap = engine.snapshot()
    engine.stop()
    return {
        "wall_s": wall,
        "snapshot": snap,
        "batch_id": submission.batch_id,
        "done": progress.done,
        "failed": progress.failed,
    }


def store_row_by_row(db: Database, work: FileWork, model_set: ModelSet) -> None:
    with db.connection() as conn, conn.transaction():
        ms = conn.execute(
            "INSERT INTO model_sets (asr, diarizer, voice, text_model) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (asr, diarizer, voice, text_model) DO UPDATE SET asr = excluded.asr RETURNING id",
            (model_set.asr, model_set.diarizer, model_set.voice, model_set.text_model),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DELETE FROM segments WHERE source_id = %s", (work.job.source_id,))
        for seq, s in enumerate(work.segments):
            conn.execute(
                INSERT_SQL,
                (
                    work.job.source_id,
                    seq,
                    s.start,
                    s.end,
                    s.text,
                    s.speaker,
                    s.text_embedding,
                    s.voice_embedding,
                    ms,
                ),
            )
        conn.execute(
            "UPDATE sources SET status = 'done', segment_count = %s, duration_s = %s WHERE id = %s",
            (len(work.segments), work.duration_s, work.job.source_id),
        )


def run_baseline(settings: Settings, db: Database, plan, models: LoadedModels, paths: list[Path]) -> dict:  # type: ignore[no-untyped-def]
    """Sequential: every stage of one file, then the next file; embeddings one segment at a time."""
    from voxdock.engine.diarization import build_diarizer
    from voxdock.engine.engine import initial_fast_path_threshold
    from voxdock.engine.handlers import Tunables

    threshold = initial_fast_path_threshold(settings)
    batches = {
        "asr": AdaptiveBatch(settings.asr_batch_size),
        # Diarization embeds each file's local speakers together in both runs: it is not a
        # per-segment step.
        "diarize": AdaptiveBatch(settings.diarization_batch_size),
        "voice": AdaptiveBatch(1),
        "text": AdaptiveBatch(1),
    }
    faults = FaultInjector()
    # As the engine makes it (Engine._make_diarizer), so both runs do the same diarization work.
    diarizer = build_diarizer(
        voice=models.voice,
        batch=batches["diarize"],
        faults=faults,
        device=models.device,
        onnx_cache=settings.voxdock_data_dir.expanduser() / "cache",
        pyannote_snapshot=plan.diarization.pyannote_pipeline,
    )
    model_set = ModelSet(models.names["asr"], diarizer.name, models.names["voice"], models.names["text"])
    handlers = StageHandlers(
        models=models,
        diarizer=diarizer,
        db=db,
        node_id="baseline",
        tunables=Tunables(settings.asr_beam_size, threshold),
        batches=batches,
        faults=faults,
        model_set=model_set,
        on_stored=lambda w, n: None,
    )
    found = discover(paths)
    batch = jobs.create_batch(db, "baseline")
    jobs.enqueue(db, batch, jobs.register_sources(db, found.files), skip_existing=False)
    jobs_and_works = []
    nodes.register_node(db, "baseline", "bench", os.getpid(), "bench")
    start = time.perf_counter()
    audio = 0.0
    while (job := jobs.claim_next(db, "baseline", lease_seconds=3600, max_attempts=3)) is not None:
        work = FileWork(job=job)
        try:
            handlers.decode(work)
        except Exception:
            continue
        handlers.vad(work)
        handlers.asr(work)
        handlers.diarize(work)
        handlers.voice([work])  # batch size 1: one segment per call
        handlers.text([work])
        store_row_by_row(db, work, model_set)
        audio += work.duration_s
        jobs_and_works.append(work)
    return {"wall_s": time.perf_counter() - start, "audio_s": audio, "works": jobs_and_works}


def run_asr_alone(settings: Settings, models: LoadedModels, paths: list[Path]) -> dict:  # type: ignore[no-untyped-def]
    """Decode, VAD and ASR of every file and nothing else, with as many files transcribed at once as
    the engine has ASR workers (the engine's own ASR configuration, so the comparison is fair)."""
    from concurrent.futures import ThreadPoolExecutor

    from voxdock.engine.decode import DecodeError, decode_file
    from voxdock.engine.vad import detect_speech

    def one(path: str) -> float:
        try:
            decoded = decode_file(path)
        except DecodeError:
            return 0.0
        speech = detect_speech(decoded.samples)
        models.asr.transcribe(
            decoded.samples, speech, batch_size=settings.asr_batch_size, beam_size=settings.asr_beam_size
        )
        return decoded.duration_s

    files = [entry.path for entry in discover(paths).files]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=settings.asr_workers) as pool:
        audio = sum(pool.map(one, files))
    return {"wall_s": time.perf_counter() - start, "audio_s": audio, "workers": settings.asr_workers}


def stored_texts(db: Database) -> dict[str, list[tuple[str, str | None]]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT s.path, g.text, g.speaker, g.start_s, g.end_s FROM segments g JOIN sources s"
            " ON s.id = g.source_id ORDER BY s.path, g.seq"
        ).fetchall()
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for path, text, speaker, start, end in rows:
        out.setdefault(path, []).append((text, speaker, start, end))
    return out


def stored_turns(db: Database) -> dict[str, list[Turn]]:
    """The speaker_turns table per source path (one speaker at a time, and overlapped speech)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT s.path, t.start_s, t.end_s, t.speaker FROM speaker_turns t JOIN sources s"
            " ON s.id = t.source_id ORDER BY s.path, t.seq"
        ).fetchall()
    out: dict[str, list[Turn]] = {}
    for path, start, end, speaker in rows:
        out.setdefault(path, []).append(Turn(start, end, speaker))
    return out


def quality(stored: dict[str, list], turns_by_path: dict[str, list[Turn]]) -> list[dict]:  # type: ignore[type-arg]
    report = []
    for path, segs in sorted(stored.items()):
        p = Path(path)
        row: dict[str, object] = {"file": p.name}
        ref_txt = p.with_suffix(".txt")
        if ref_txt.exists():
            row["wer"] = round(word_error_rate(ref_txt.read_text(), " ".join(s[0] for s in segs)), 4)
        ref_rttm = p.with_suffix(".rttm")
        if ref_rttm.exists():
            hyp = [Turn(s[2], s[3], s[1] or "?") for s in segs]
            ref = read_rttm(ref_rttm)
            turns = turns_from_segments(hyp)
            der = diarization_error_rate(ref, turns, collar=0.25)
            raw = diarization_error_rate(ref, hyp, collar=0.25)
            row["der"] = round(der.der, 4)  # turns: same-speaker segments joined across pauses < 1 s
            row["der_no_collar"] = round(diarization_error_rate(ref, turns, collar=0).der, 4)
            row["der_segments_raw"] = round(raw.der, 4)  # every pause between segments counted as miss
            row["miss"], row["false_alarm"], row["confusion"] = (
                round(der.miss, 4),
                round(der.false_alarm, 4),
                round(der.confusion, 4),
            )
            row["speakers"] = f"{der.hypothesis_speakers}/{der.reference_speakers}"
            stored_t = turns_by_path.get(path, [])
            row["der_turns"] = round(diarization_error_rate(ref, stored_t, collar=0.25).der, 4)
            row["der_turns_no_collar"] = round(diarization_error_rate(ref, stored_t, collar=0).der, 4)
        report.append(row)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", nargs="*", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    args = parser.parse_args()
    paths = args.files or default_inputs()

    with tempfile.TemporaryDirectory(prefix="voxdock-engine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = load_settings(_env_file=None, voxdock_data_dir=tmp / "data")
        plan = model_plan(settings)
        spec = vector_spec(plan)
        t0 = time.perf_counter()
        models = load_planned_models(settings, plan, tmp / "cache")
        print(f"models loaded in {time.perf_counter() - t0:.1f} s on {models.device}", flush=True)

        # Warm every model once so neither run pays first-call costs.
        warm_db = fresh_store(tmp, "warm", spec)
        run_engine(
            settings, warm_db, plan, models, [ROOT / "tests" / "fixtures" / "media" / "dialogue_2spk.wav"]
        )
        warm_db.close()

        engine_db = fresh_store(tmp, "engine", spec)
        engine = run_engine(settings, engine_db, plan, models, paths)
        print(f"engine:     {engine['wall_s']:.1f} s", flush=True)
        base_db = fresh_store(tmp, "baseline", spec)
        baseline = run_baseline(settings, base_db, plan, models, paths)
        print(f"baseline:   {baseline['wall_s']:.1f} s", flush=True)
        asr = run_asr_alone(settings, models, paths)
        print(f"ASR alone:  {asr['wall_s']:.1f} s", flush=True)

        engine_text = {p: [(s[0], s[1]) for s in v] for p, v in stored_texts(engine_db).items()}
        base_text = {p: [(s[0], s[1]) for s in v] for p, v in stored_texts(base_db).items()}
        identical = engine_text == base_text
        differing = {}
        for p in sorted(set(engine_text) | set(base_text)):
            mine, theirs = engine_text.get(p, []), base_text.get(p, [])
            if mine != theirs:
                first = next(
                    (i for i, (x, y) in enumerate(zip(mine, theirs, strict=False)) if x != y),
                    min(len(mine), len(theirs)),
                )
                differing[Path(p).name] = {
                    "segments": [len(mine), len(theirs)],
                    "first_difference": [
                        mine[first] if first < len(mine) else None,
                        theirs[first] if first < len(theirs) else None,
                    ],
                }
        scores = quality(stored_texts(engine_db), stored_turns(engine_db))
        engine_db.close()
        base_db.close()

    snap = engine["snapshot"]
    audio = snap.totals.audio_s_done
    result = {
        "benchmark": "engine vs sequential baseline",
        "command": "python bench/engine_bench.py"
        + (" --files " + " ".join(map(str, args.files)) if args.files else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, device {models.device}",
        "inputs": [str(p) for p in paths],
        "files_done": engine["done"],
        "files_failed": engine["failed"],
        "audio_s": round(audio, 2),
        "settings": {
            "asr_workers": settings.asr_workers,
            "asr_batch_size": settings.asr_batch_size,
            "voice_batch": settings.voice_enrollment_batch_size,
            "text_batch": settings.text_embedding_batch_size,
            "asr_model": settings.asr_model,
        },
        "engine": {
            "wall_s": round(engine["wall_s"], 2),
            "end_to_end_rtf": round(engine["wall_s"] / audio, 4) if audio else None,
            "hours_per_hour": round(audio / engine["wall_s"], 1) if engine["wall_s"] else None,
            "stages": {
                s.name: {
                    "rtf": round(s.rtf_run or 0, 4),
                    "busy_s": round(s.busy_s, 2),
                    "items": s.items,
                    "workers": s.workers,
                    "batch": s.batch_size,
                }
                for s in snap.stages
            },
            "fast_path_skips": snap.totals.fast_path_skips,
            "segments": snap.totals.segments_written,
        },
        "baseline": {
            "wall_s": round(baseline["wall_s"], 2),
            "end_to_end_rtf": round(baseline["wall_s"] / baseline["audio_s"], 4),
        },
        "asr_alone": {
            "wall_s": round(asr["wall_s"], 2),
            "rtf": round(asr["wall_s"] / asr["audio_s"], 4),
            "workers": asr["workers"],
        },
        "ratios": {
            "baseline_over_engine": round(baseline["wall_s"] / engine["wall_s"], 2),
            "engine_over_asr_alone": round(engine["wall_s"] / asr["wall_s"], 2),
        },
        "transcripts_identical": identical,  # text and speaker of every segment, in order
        "transcripts_differing": differing,
        "quality": scores,
    }
    print(
        json.dumps(
            {k: result[k] for k in ("engine", "baseline", "asr_alone", "ratios", "transcripts_identical")},
            indent=2,
        )
    )
    for row in scores:
        print(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
