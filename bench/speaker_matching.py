"""Speaker matching across files: how well a stored file's speakers are matched to enrolled voices.

    .venv/bin/python bench/speaker_matching.py

1. Files with known voices: the real recordings of ../shared/eval/real (ps_cards_00x: one speaker in
   five files, ps_librivox_0xxx: one reader in five, jfk, LJ, sb_example1, pyannote_sample with two),
   the AMI meeting excerpts of ../shared/eval/meetings (speakers such as MEE068 or FEE087 recur in
   several excerpts) and espeak-ng dialogues made here by ../shared/eval/make_dialogue.py, two voices
   each from a pool of six, every voice in three dialogues (every voice at espeak's default pitch
   and one speed, so a voice sounds the same in every file).
2. The real engine (decode, VAD, ASR, diarization, CAM++ voice embeddings, store) processes them into
   a fresh embedded store; everything below is measured on what it stored: the per-file speaker
   centroids storage/speakers.py keeps (the unit mean of a label's segment voice embeddings).
3. Each stored label gets the reference voice it overlaps most. Over every pair of labels from
   different files (with at least MIN_SPEECH_S of speech): same voice -> a target pair, else an
   impostor pair. False accepts (impostor pairs at or above a threshold) and false rejects (target
   pairs below it) are swept. The threshold is chosen on natural speech (the real recordings and AMI):
   the lowest with at most 0.5% false accepts there. espeak voices are reported beside it: CAM++ puts
   espeak-ng's voices close together (one synthesiser), much closer than real voices.
4. Enrolling one file per voice: for every voice, the file where it speaks most is enrolled (its
   label there, as an operator would pick a good example) with storage.speakers.enroll_from_source,
   the code `voxdock speakers enroll` runs; then the share of the voice's appearances in other files
   that get its name, get another name, or stay anonymous.
5. Grouping unknown voices: how the archive-wide voices the store formed split or mix the references.

Results: bench/results/speaker_matching.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from engine_bench import run_engine

from voxdock.cli import load_planned_models, model_plan
from voxdock.engine.models import vector_spec
from voxdock.evaluation import Turn, read_rttm
from voxdock.settings import load_settings
from voxdock.storage import speakers as speakers_store
from voxdock.storage.database import Database
from voxdock.storage.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
EVAL = ROOT.parent / "shared" / "eval"
ESPEAK_VOICES = ["en-us+m3", "en-gb+f2", "en-us+m7", "en-gb-scotland+f4", "en-029+m1", "en-us+f3"]
# Two voices per dialogue; each voice is in three or four of them.
DIALOGUES = [(0, 1), (2, 3), (4, 5), (0, 2), (1, 4), (3, 5), (0, 5), (1, 3), (2, 4)]
MAX_FALSE_ACCEPT = 0.005


def real_references() -> dict[Path, list[Turn]]:
    """Reference turns of each real file: RTTM where there is one, else one voice over the whole file
    (named after the person, so files of the same speaker share it)."""
    refs: dict[Path, list[Turn]] = {}
    whole = {
        "jfk": "jfk",
        "sb_LJ050-0131": "lj",
        "sb_example1": "sb_example1",
        **{f"ps_cards_00{i}": "ps_cards" for i in range(1, 6)},
        **{f"ps_librivox_{n}": "librivox" for n in ("0870", "0880", "0890", "0920", "0930")},
    }
    for stem, who in whole.items():
        refs[EVAL / "real" / f"{stem}.wav"] = [Turn(0.0, 1e9, who)]
    refs[EVAL / "real" / "pyannote_sample.wav"] = read_rttm(EVAL / "real" / "pyannote_sample.rttm")
    for rttm in sorted((EVAL / "meetings").glob("ami_*.rttm")):
        refs[rttm.with_suffix(".wav")] = [Turn(t.start, t.end, "ami:" + t.speaker) for t in read_rttm(rttm)]
    return refs


def espeak_references(folder: Path, seconds: float) -> dict[Path, list[Turn]]:
    refs: dict[Path, list[Turn]] = {}
    for n, (a, b) in enumerate(DIALOGUES):
        prefix = folder / f"espeak_{n:02d}"
        subprocess.run(
            [
                sys.executable,
                str(EVAL / "make_dialogue.py"),
                "--speakers=2",
                f"--seconds={seconds}",
                f"--seed={100 + n}",
                f"--out={prefix}",
                f"--voices={ESPEAK_VOICES[a]},{ESPEAK_VOICES[b]}",
                "--pitch-range=50:50",
                "--speed-range=165:165",
            ],
            check=True,
            capture_output=True,
        )
        meta = json.loads(prefix.with_suffix(".json").read_text())
        refs[prefix.with_suffix(".wav")] = [
            Turn(t["start"], t["end"], "espeak:" + t["voice"]) for t in meta["turns"]
        ]
    return refs


def label_truth(db: Database, refs: dict[Path, list[Turn]]) -> list[dict]:
    """Every stored file speaker with its centroid, speech, and the reference voice it overlaps most."""
    by_path = {str(p.resolve()): turns for p, turns in refs.items()}
    with db.connection() as conn:
        labels = conn.execute(
            "SELECT s.path, ss.source_id, ss.label, ss.centroid, ss.speech_s FROM source_speakers ss"
            " JOIN sources s ON s.id = ss.source_id ORDER BY s.path, ss.label"
        ).fetchall()
        segments = conn.execute("SELECT source_id, speaker, start_s, end_s FROM segments").fetchall()
    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for source_id, label, start, end in segments:
        spans[(source_id, label)].append((start, end))
    out = []
    for path, source_id, label, centroid, speech_s in labels:
        turns = by_path[str(Path(path).resolve())]
        overlap: dict[str, float] = defaultdict(float)
        for start, end in spans[(source_id, label)]:
            for t in turns:
                overlap[t.speaker] += max(0.0, min(end, t.end) - max(start, t.start))
        total = sum(overlap.values())
        who = max(overlap, key=lambda k: overlap[k]) if total > 0 else None
        out.append(
            {
                "file": Path(path).name,
                "source_id": source_id,
                "label": label,
                "centroid": as_array(centroid),
                "speech_s": float(speech_s),
                "voice": who,
                "purity": overlap[who] / total if who else 0.0,
            }
        )
    return out


def kind_of(voice: str) -> str:
    """real, ami or espeak: where a reference voice comes from."""
    return voice.split(":")[0] if ":" in voice else "real"


def as_array(value: object) -> np.ndarray:
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)


def pair_scores(labels: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    target, impostor = [], []
    for a, b in itertools.combinations(labels, 2):
        if a["source_id"] == b["source_id"]:
            continue
        sim = float(np.dot(a["centroid"], b["centroid"]))
        (target if a["voice"] == b["voice"] else impostor).append(sim)
    return np.array(target), np.array(impostor)


def sweep(target: np.ndarray, impostor: np.ndarray) -> list[dict]:
    rows = []
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        rows.append(
            {
                "threshold": float(t),
                "false_accept": float((impostor >= t).mean()),
                "false_reject": float((target < t).mean()),
            }
        )
    return rows


def enroll_one_file_per_voice(
    db: Database, labels: list[dict], threshold: float, only: set[str] | None = None
) -> dict:
    """Enroll each voice (of `only`, when given) from its label with the most speech; score every
    other label: an enrolled voice's should get its name, any other voice's should stay anonymous."""
    speakers_store.MATCH_THRESHOLD = threshold
    with db.connection() as conn:
        conn.execute("DELETE FROM speakers")
    enrolled: dict[str, tuple[int, str]] = {}
    for voice in sorted(
        {lab["voice"] for lab in labels if lab["voice"] and (only is None or lab["voice"] in only)}
    ):
        mine = [lab for lab in labels if lab["voice"] == voice]
        best = max(mine, key=lambda lab: lab["speech_s"])
        speakers_store.enroll_from_source(db, voice, best["source_id"], label=best["label"])
        enrolled[voice] = (best["source_id"], best["label"])
    with db.connection() as conn:
        named = {
            (sid, label): name
            for sid, label, name in conn.execute(
                "SELECT ss.source_id, ss.label, p.name FROM source_speakers ss"
                " LEFT JOIN speakers p ON p.id = ss.speaker_id"
            ).fetchall()
        }
    outcome: dict[str, int] = defaultdict(int)
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for lab in labels:
        key = (lab["source_id"], lab["label"])
        if lab["voice"] is None or lab["source_id"] in {
            e[0] for v, e in enrolled.items() if v == lab["voice"]
        }:
            continue
        kind = kind_of(lab["voice"])
        if lab["voice"] not in enrolled:
            result = "not enrolled, named" if named.get(key) else "not enrolled, anonymous"
        elif lab["speech_s"] < speakers_store.MIN_SPEECH_S:
            result = "too little speech"
        elif named.get(key) is None:
            result = "anonymous"
        elif named[key] == lab["voice"]:
            result = "right name"
        else:
            result = "wrong name"
        outcome[result] += 1
        by_kind[kind][result] += 1
    other = sum(v for k, v in outcome.items() if not k.startswith("not enrolled"))
    strangers = outcome["not enrolled, named"] + outcome["not enrolled, anonymous"]
    return {
        "threshold": threshold,
        "voices_enrolled": len(enrolled),
        "other_appearances": other,
        "outcome": dict(outcome),
        "share_named_right": outcome["right name"] / other if other else 0.0,
        "share_named_wrong": outcome["wrong name"] / other if other else 0.0,
        "not_enrolled_appearances": strangers,
        "share_not_enrolled_named": outcome["not enrolled, named"] / strangers if strangers else 0.0,
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
    }


def voice_groups(db: Database, labels: list[dict]) -> dict:
    with db.connection() as conn:
        member = {
            (sid, label): vid
            for sid, label, vid in conn.execute("SELECT source_id, label, voice_id FROM source_speakers")
        }
    groups: dict[int, set[str]] = defaultdict(set)
    split: dict[str, set[int]] = defaultdict(set)
    for lab in labels:
        vid = member.get((lab["source_id"], lab["label"]))
        if vid is None or lab["voice"] is None:
            continue
        groups[vid].add(lab["voice"])
        split[lab["voice"]].add(vid)
    recurring = {v for v in split if len({lab["file"] for lab in labels if lab["voice"] == v}) > 1}
    return {
        "voice_threshold": speakers_store.VOICE_THRESHOLD,
        "mixed_voices": sorted(sorted(g) for g in groups.values() if len(g) > 1),
        "reference_voices": len(split),
        "voices_formed": len(groups),
        "voices_mixing_references": sum(1 for g in groups.values() if len(g) > 1),
        "recurring_references_in_one_voice": sum(1 for v in recurring if len(split[v]) == 1),
        "recurring_references": len(recurring),
    }


def regroup(db: Database, threshold: float) -> None:
    speakers_store.VOICE_THRESHOLD = threshold
    with db.connection() as conn:
        conn.execute("UPDATE source_speakers SET voice_id = NULL")
        conn.execute("DELETE FROM voices")
    speakers_store.match_store(db)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--espeak-seconds", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "speaker_matching.json")
    parser.add_argument("--dump", type=Path, default=None, help="Write every file speaker here (JSON).")
    args = parser.parse_args()
    code_threshold = speakers_store.MATCH_THRESHOLD

    with tempfile.TemporaryDirectory(prefix="voxdock-speaker-bench-") as tmp_name:
        tmp = Path(tmp_name)
        refs = real_references()
        refs.update(espeak_references(tmp / "espeak", args.espeak_seconds))
        settings = load_settings(_env_file=None, voxdock_data_dir=tmp / "data")
        plan = model_plan(settings)
        models = load_planned_models(settings, plan, tmp / "cache")
        db = Database.open(None, tmp / "store")
        migrate(db, vector_spec(plan))
        run = run_engine(settings, db, plan, models, sorted(refs))
        if run["failed"]:
            print(f"warning: {run['failed']} file(s) failed", flush=True)
        wall = run["wall_s"]
        print(f"engine: {len(refs)} files in {wall:.0f} s", flush=True)

        labels = label_truth(db, refs)
        usable = [lab for lab in labels if lab["speech_s"] >= speakers_store.MIN_SPEECH_S and lab["voice"]]
        natural = [lab for lab in usable if kind_of(lab["voice"]) != "espeak"]
        target, impostor = pair_scores(natural)
        rows = sweep(target, impostor)
        all_target, all_impostor = pair_scores(usable)
        rows_all = sweep(all_target, all_impostor)
        if args.dump:
            args.dump.write_text(
                json.dumps([{**lab, "centroid": lab["centroid"].round(5).tolist()} for lab in labels])
            )
        chosen = next((r for r in rows if r["false_accept"] <= MAX_FALSE_ACCEPT), rows[-1])
        eer = min(rows, key=lambda r: abs(r["false_accept"] - r["false_reject"]))
        at_code = next(r for r in rows if abs(r["threshold"] - code_threshold) < 1e-6)
        at_code_all = next(r for r in rows_all if abs(r["threshold"] - code_threshold) < 1e-6)
        by_kind = {}
        for kind in ("real", "ami", "espeak"):
            subset = [lab for lab in usable if kind_of(lab["voice"]) == kind]
            t_k, i_k = pair_scores(subset)
            by_kind[kind] = {
                "labels": len(subset),
                "target_pairs": len(t_k),
                "impostor_pairs": len(i_k),
                "target_mean": float(t_k.mean()) if len(t_k) else None,
                "impostor_mean": float(i_k.mean()) if len(i_k) else None,
                "false_accept_at_code": float((i_k >= code_threshold).mean()) if len(i_k) else None,
                "false_reject_at_code": float((t_k < code_threshold).mean()) if len(t_k) else None,
            }
        grouping = {}
        code_voice_threshold = speakers_store.VOICE_THRESHOLD
        for t in sorted({0.5, 0.6, 0.7, code_voice_threshold}):
            regroup(db, t)
            grouping[f"{t:.2f}"] = voice_groups(db, labels)
        regroup(db, code_voice_threshold)
        enrolled_at_code = enroll_one_file_per_voice(db, labels, code_threshold)
        # Half the voices enrolled (alternate ones by name, both halves): the others must stay anonymous.
        every = sorted({lab["voice"] for lab in labels if lab["voice"]})
        halves = [
            enroll_one_file_per_voice(db, labels, code_threshold, only=set(every[start::2]))
            for start in (0, 1)
        ]
        db.close()

    result = {
        "benchmark": "speaker matching across files",
        "command": ".venv/bin/python bench/speaker_matching.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, device {models.device}",
        "measured_on": "what the engine stored: per-file speaker centroids (storage/speakers.py)",
        "files": len(refs),
        "engine_wall_s": round(wall, 1),
        "file_speakers": len(labels),
        "file_speakers_used": len(usable),
        "min_speech_s": speakers_store.MIN_SPEECH_S,
        "mean_label_purity": float(np.mean([lab["purity"] for lab in usable])),
        "natural_speech": {
            "target_pairs": len(target),
            "impostor_pairs": len(impostor),
            "target_mean": float(target.mean()),
            "impostor_mean": float(impostor.mean()),
        },
        "code_threshold": code_threshold,
        "at_code_threshold": at_code,
        "at_code_threshold_espeak_included": at_code_all,
        "chosen_rule": f"lowest threshold with false accepts <= {MAX_FALSE_ACCEPT:.1%} on natural speech",
        "chosen": chosen,
        "equal_error": eer,
        "by_kind": by_kind,
        "enroll_one_file_per_voice": enrolled_at_code,
        "enroll_half_the_voices": halves,
        "grouping": grouping,
        "sweep": rows,
        "sweep_espeak_included": rows_all,
        "labels": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in lab.items() if k != "centroid"}
            for lab in labels
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("sweep", "labels")}, indent=2))


if __name__ == "__main__":
    main()
