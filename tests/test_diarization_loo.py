"""bench/diarization_loo.py's leave-one-out: each file is scored with the grid point best on the others
alone, never with one chosen on itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from diarization_loo import leave_one_out


def rows(der: dict[str, float]) -> dict[str, dict[str, float]]:
    return {name: {"der_s": e, "miss_s": e / 2, "ref_s": 10.0, "right": True} for name, e in der.items()}


def test_each_file_is_scored_with_the_point_best_on_the_others() -> None:
    # Point A fits "odd" alone very well and everything else badly; B is good on the rest. Chosen on
    # all three files, A would win (in sample); left out, "odd" gets B, which the others prefer.
    a, b = (0.3, 0.4, 0.2), (0.4, 0.4, 0.2)
    table = {
        a: rows({"odd": 0.0, "f1": 4.0, "f2": 4.0}),
        b: rows({"odd": 9.0, "f1": 1.0, "f2": 1.0}),
    }
    report = leave_one_out(table, shipped=b)
    chosen = {f["file"]: f["chosen"] for f in report["files"]}
    assert chosen == {"odd": b, "f1": a, "f2": a}  # f1 left out: on {odd, f2} A pools 4/20 < B's 10/20
    assert report["left_out_der"] == pytest.approx((9.0 + 4.0 + 4.0) / 30)
    assert report["left_out_miss"] == pytest.approx((9.0 + 4.0 + 4.0) / 2 / 30)
    assert report["shipped"]["der"] == pytest.approx(11.0 / 30)
    assert report["in_sample_best"] == {"point": a, "der": pytest.approx(8.0 / 30)}
