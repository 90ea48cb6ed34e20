"""bench/gpu_check.py, the prepared script a session lent a GPU runs in one device call: here its
steps run on the CPU over the test recordings, so that it still works when a GPU comes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.models
@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_and_compares_the_runtimes(tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    for folder, names in (("meetings", ("ami_trn03", "ami_trn05")), ("real", ("jfk", "pyannote_sample"))):
        (eval_dir / folder).mkdir(parents=True)
        for name in names:
            for path in REAL.glob(f"{name}.*"):
                if path.suffix in (".wav", ".rttm"):
                    shutil.copy(path, eval_dir / folder / path.name)
    out = tmp_path / "out"
    options = ["--device", "cpu", "--quick", "--steps", "device,vad,diarizer"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_check.py"),
            *options,
            "--eval",
            str(eval_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["device", "vad", "diarizer"]  # in the order asked
    assert all(step["status"] == "ok" for step in steps.values())
    vad = steps["vad"]["result"]
    assert vad["all_regions_identical"] and vad["max_probability_difference"] < 1e-4
    assert len(vad["files"]) == 5  # four recordings and all of them end to end
    diarizer = steps["diarizer"]["result"]
    assert diarizer["files"] == 3  # the recordings with reference turns
    assert diarizer["same_turns"] == "3/3"
    assert diarizer["pooled_der_device"] == diarizer["pooled_der_cpu"] < 0.2
    assert "## vad: ok" in (out / "gpu_check.md").read_text()
