"""Monologue fast path: window choice, the decision rule, thresholds, and real CAM++ on fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.fastpath import (
    CALIBRATED_THRESHOLDS,
    FALLBACK_THRESHOLD,
    FUSED_MODEL_KEY,
    MIN_SPEECH_S,
    TOO_SHORT,
    check,
    decide,
    default_threshold,
    pick_windows,
    second_view,
)
from voxdock.engine.models import VOICE_MODEL_NAME

MEDIA = Path(__file__).parent / "fixtures" / "media"
ROOT = Path(__file__).resolve().parents[1]


def test_thresholds_per_voice_model() -> None:
    expected = FUSED_MODEL_KEY if second_view() is not None else VOICE_MODEL_NAME
    assert default_threshold(VOICE_MODEL_NAME) == CALIBRATED_THRESHOLDS[expected]
    # different CAM++ voices score ~0.65-0.8: the operators' 0.434 would skip conversations
    assert CALIBRATED_THRESHOLDS[VOICE_MODEL_NAME] > 0.75
    assert CALIBRATED_THRESHOLDS[FUSED_MODEL_KEY] > 0.75
    assert default_threshold("some-other-model") == FALLBACK_THRESHOLD


def test_fused_score_weighs_both_views() -> None:
    rng = np.random.default_rng(1)
    windows = [(float(i), float(i) + 3.0) for i in range(4)]
    cam = rng.standard_normal(192) + 0.05 * rng.standard_normal((4, 192))  # one voice in CAM++
    ge2e = rng.standard_normal((4, 256))  # unrelated in GE2E
    alone = decide(cam, windows, 0.8)
    fused = decide(cam, windows, 0.8, second=ge2e, cam_weight=0.5)
    assert alone.monologue and alone.views == "cam++"
    assert not fused.monologue and fused.views == "cam++ + ge2e"
    assert fused.similarity < 0.6 < alone.similarity


def test_windows_spread_over_speech() -> None:
    speech = [(1.0, 11.0), (20.0, 40.0)]
    windows = pick_windows(speech, 45.0)
    assert len(windows) == 6
    assert all(math.isclose(b - a, 3.0) for a, b in windows)
    centres = [(a + b) / 2 for a, b in windows]
    assert centres == sorted(centres)
    assert centres[0] < 11.0 and centres[-1] > 30.0  # from both regions, first to last
    assert all(a >= 0.0 and b <= 45.0 for a, b in windows)


def test_short_and_silent_files_take_the_fast_path() -> None:
    assert pick_windows([(0.0, MIN_SPEECH_S - 0.1)], 10.0) == []
    short = decide(None, [], 0.8, speech_s=4.0)
    assert short.monologue and math.isnan(short.similarity) and short.reason == "short"
    silent = decide(None, [], 0.8, speech_s=0.0)
    assert silent.monologue and silent.reason == "no speech"


def test_a_file_the_diarizer_cannot_split_skips_without_measuring() -> None:
    def no_embedding(_features):  # neither path may spend time embedding windows
        raise AssertionError("embedded")

    samples = np.zeros(16000 * 20, dtype=np.float32)
    speech = [(1.0, 4.0)]
    taken = check(samples, speech, no_embedding, 0.8, can_split=lambda _s, _r: False)
    assert taken.reason == TOO_SHORT and taken.skips_diarization and math.isnan(taken.similarity)
    # The diarizer could split it but it is too short to measure: diarized, not skipped.
    short = check(samples, speech, no_embedding, 0.8, can_split=lambda _s, _r: True)
    assert short.reason == "short" and not short.skips_diarization
    # No speech: nothing to ask the diarizer.
    silent = check(samples, [], no_embedding, 0.8, can_split=lambda _s, _r: False)
    assert silent.reason == "no speech" and not silent.skips_diarization


def test_decision_uses_the_least_similar_pair() -> None:
    rng = np.random.default_rng(0)
    voice = rng.standard_normal(192)
    other = rng.standard_normal(192)
    same = voice + 0.1 * rng.standard_normal((6, 192))
    windows = [(float(i), float(i) + 3.0) for i in range(6)]
    one = decide(same, windows, 0.8)
    assert one.monologue and one.similarity > 0.9
    mixed = same.copy()
    mixed[4] = other
    two = decide(mixed, windows, 0.8)
    assert not two.monologue and two.similarity < 0.5
    assert two.windows == windows


# ---- real CAM++ on the project's fixtures -------------------------------------------------------


@pytest.fixture(scope="module")
def embed():
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder

    return VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu").embed_features


def _load(name: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from voxdock.engine.decode import decode_file

    samples = decode_file(MEDIA / name).samples
    opts = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    speech = [(s["start"] / 16000, s["end"] / 16000) for s in get_speech_timestamps(samples, opts)]
    return samples, speech


@pytest.mark.models
@pytest.mark.parametrize("name", ["monologue.ogg", "monologue_video.mp4"])
def test_monologues_take_the_fast_path(embed, name: str) -> None:
    samples, speech = _load(name)
    decision = check(samples, speech, embed, default_threshold(VOICE_MODEL_NAME))
    assert decision.monologue, decision
    assert decision.reason == "similar" and len(decision.windows) >= 2


@pytest.mark.models
@pytest.mark.parametrize("name", ["monologue.ogg", "dialogue_2spk.wav"])
def test_cam_only_fallback_keeps_its_own_threshold(embed, name: str) -> None:
    samples, speech = _load(name)
    decision = check(samples, speech, embed, CALIBRATED_THRESHOLDS[VOICE_MODEL_NAME], use_second_view=False)
    assert decision.views == "cam++"
    assert decision.monologue == name.startswith("monologue")


@pytest.mark.models
@pytest.mark.parametrize("name", ["dialogue_2spk.wav", "dialogue_3spk.flac"])
def test_conversations_are_diarized(embed, name: str) -> None:
    samples, speech = _load(name)
    decision = check(samples, speech, embed, default_threshold(VOICE_MODEL_NAME))
    assert not decision.monologue, decision
    assert decision.similarity < default_threshold(VOICE_MODEL_NAME)
