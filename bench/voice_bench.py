"""CAM++ speed: PyTorch eager against the ONNX Runtime export, same weights, same windows, one run.

    .venv/bin/python bench/voice_bench.py

Embeds 256 windows of 1.5 s (148 frames, the diarizer's windows) in batches of 64 with each runtime
at 1 and at all CPU threads, checks the two agree, and writes bench/results/voice_onnx.json.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from voxdock.engine.models import resolve_voice
from voxdock.engine.onnx_models import OnnxCampplus, export_campplus
from voxdock.engine.voice import VoiceEncoder

RESULTS = Path(__file__).parent / "results"


def rate(run, batches: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    run(batches[0][:8])  # warm up
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    weights = resolve_voice(Path("/nonexistent")).require()
    encoder = VoiceEncoder(weights)  # PyTorch
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((64, 148, 80), dtype=np.float32) for _ in range(4)]
    cpus = os.cpu_count() or 1
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_campplus(encoder.model, weights, Path(tmp))
        for threads in sorted({1, cpus}):
            torch.set_num_threads(threads)

            def torch_run(b: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return encoder.model(torch.from_numpy(b)).numpy()

            onnx = OnnxCampplus(path, threads)
            results[f"{threads}_threads"] = {
                "torch_windows_per_s": round(rate(torch_run, batches), 1),
                "onnxruntime_windows_per_s": round(rate(onnx.run, batches), 1),
            }
            results[f"{threads}_threads"]["ratio"] = round(
                results[f"{threads}_threads"]["onnxruntime_windows_per_s"]
                / results[f"{threads}_threads"]["torch_windows_per_s"],
                2,
            )
            difference = float(np.abs(torch_run(batches[0]) - onnx.run(batches[0])).max())
    report = {
        "benchmark": "CAM++ runtime: PyTorch eager vs ONNX Runtime",
        "command": "python bench/voice_bench.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {cpus} cpus, torch {torch.__version__}",
        "windows": "4 batches of 64 x 1.5 s (148 frames)",
        "results": results,
        "max_abs_difference": difference,
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "voice_onnx.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
