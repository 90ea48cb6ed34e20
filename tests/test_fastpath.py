"""The monologue fast path (engine/diarization/fastpath.py): its rules on synthetic data, then the
real models: real conversations are never skipped, real monologues are."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import MEDIA, REAL, two_voices

from voxdock.engine.diarization import (
    DEFAULT_FAST_PATH_THRESHOLD,
    SINGLE_SPEAKER,
    SpeakerOptions,
)
from voxdock.engine.diarization.fastpath import (
    DEFAULT_THRESHOLD,
    DISSIMILAR,
    MIN_SPEECH_S,
    ONE_VOICE,
    SAMPLE_CHUNKS,
    SECOND_VOICE_CHUNKS,
    SECOND_VOICE_S,
    TOO_SHORT,
    TWO_ALIKE,
    FastPathDecision,
    one_voice,
    sample_chunks,
    second_voice_heard,
)
from voxdock.engine.diarization.pipeline import SegmentationDiarizer


def test_the_default_threshold_is_the_calibrated_one() -> None:
    assert DEFAULT_FAST_PATH_THRESHOLD == DEFAULT_THRESHOLD
    # Above the real conversations' scores, 0.935 over a telephone line included, and below the real
    # monologues' (0.98 and up).
    assert 0.935 < DEFAULT_FAST_PATH_THRESHOLD < 0.98


def _alone(*rows: tuple[float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def test_a_short_file_is_sampled_whole() -> None:
    alone = _alone((4.0, 0, 0), (0, 0, 0), (3.0, 0.2, 0), (0, 5.0, 0))
    assert sample_chunks(alone).tolist() == [0, 2, 3]  # every chunk with speech, none without
    assert sample_chunks(_alone()).tolist() == []
    assert sample_chunks(_alone((0, 0, 0), (0, 0, 0))).tolist() == []


def test_a_long_file_is_sampled_spread_over_its_speech() -> None:
    alone = np.zeros((40, 3))
    alone[5:, 0] = 6.0  # speech from chunk 5 on
    picked = sample_chunks(alone)
    assert len(picked) == SAMPLE_CHUNKS
    assert picked[0] == 5 and picked[-1] == 39
    gaps = np.diff(picked)
    assert gaps.min() >= 4 and gaps.max() <= 6  # evenly spread


def test_chunks_where_a_second_voice_talks_are_added_to_the_sample() -> None:
    alone = np.zeros((40, 3))
    alone[:, 0] = 6.0
    second = {11: 0.6, 12: 2.0, 13: 1.5, 17: 0.9, 23: 3.0, 30: SECOND_VOICE_S - 0.01}
    for chunk, seconds in second.items():
        alone[chunk, 2] = seconds
    spread = set(sample_chunks(alone[:, :1]).tolist())  # one local speaker: the spread sample alone
    picked = set(sample_chunks(alone).tolist())
    strongest = {23, 12, 13, 17}  # the SECOND_VOICE_CHUNKS longest, at least SECOND_VOICE_S each
    assert len(strongest) == SECOND_VOICE_CHUNKS
    assert picked == spread | strongest
    assert 30 not in picked - spread  # a second voice shorter than SECOND_VOICE_S is no reason


def test_second_voice_heard() -> None:
    assert second_voice_heard(_alone((3.0, SECOND_VOICE_S, 0)))
    assert second_voice_heard(_alone((3.0, 0, 0), (0, 0, 0), (0.0, 1.0, 2.0)))
    # Different local speakers in different chunks are not two voices: chunks do not agree on names.
    assert not second_voice_heard(_alone((3.0, 0, 0), (0, 3.0, 0), (0, 0, 3.0)))
    assert not second_voice_heard(_alone((3.0, SECOND_VOICE_S - 0.1, 0)))
    assert not second_voice_heard(_alone())
    assert not second_voice_heard(np.ones((4, 1)))


def _voices(rng: np.random.Generator, counts: list[int], noise: float = 0.25) -> np.ndarray:
    """Rows around one random direction per voice."""
    centres = rng.standard_normal((len(counts), 192))
    return np.concatenate(
        [c + noise * rng.standard_normal((n, 192)) for c, n in zip(centres, counts, strict=True)]
    )


def test_one_voice_is_taken_and_two_are_not() -> None:
    rng = np.random.default_rng(0)
    seconds = np.full(10, 4.0)
    one = one_voice(_voices(rng, [10]), seconds, 0.88, heard_at_once=False, second_voice=False)
    assert one == FastPathDecision(True, ONE_VOICE, one.similarity, 0.88)
    assert one.similarity >= 0.88 and one.monologue
    two = one_voice(_voices(rng, [8, 2]), seconds, 0.88, heard_at_once=False, second_voice=False)
    assert not two.monologue and two.reason == DISSIMILAR and two.similarity < 0.5
    assert not two.monologue
    # The similarity is the lowest of any sampled voice to the mean: a threshold above it refuses.
    again = one_voice(
        _voices(np.random.default_rng(0), [10]),
        seconds,
        one.similarity + 1e-6,
        heard_at_once=False,
        second_voice=False,
    )
    assert not again.monologue


def test_a_sample_whose_units_hold_two_alike_voices_is_not_a_monologue() -> None:
    # Two near twins, 0.92 alike (the espeak generator's closest pair scores 0.95-0.98 on its sampled
    # tracks, as espeak monologues do): their 40 units split stably in two.
    units, _ = two_voices(alike=0.92)
    tracks = np.repeat(units.mean(axis=0, keepdims=True), 2, axis=0)  # each sampled track holds both
    seconds = np.full(2, 30.0)
    plain = one_voice(tracks, seconds, 0.88, heard_at_once=False, second_voice=False)
    assert plain.monologue
    told = one_voice(
        tracks, seconds, 0.88, heard_at_once=False, second_voice=False, units=(units, np.full(40, 2.0))
    )
    assert not told.monologue and told.reason == TWO_ALIKE and told.similarity == plain.similarity
    # One voice's units, as many, do not split: still a monologue.
    one, _ = two_voices(alike=1.0)
    kept = one_voice(
        tracks, seconds, 0.88, heard_at_once=False, second_voice=False, units=(one, np.full(40, 2.0))
    )
    assert kept.monologue and kept.reason == ONE_VOICE


def test_sampled_speakers_with_little_speech_are_not_compared() -> None:
    rng = np.random.default_rng(1)
    embeddings = _voices(rng, [6, 1])
    seconds = np.array([3.0] * 6 + [MIN_SPEECH_S / 2])  # the other voice: a short backchannel
    assert one_voice(embeddings, seconds, 0.88, heard_at_once=False, second_voice=True).monologue
    seconds[-1] = MIN_SPEECH_S
    assert not one_voice(embeddings, seconds, 0.88, heard_at_once=False, second_voice=True).monologue


def test_too_little_to_compare_is_taken_only_for_one_chunk_with_one_voice() -> None:
    rng = np.random.default_rng(2)
    embeddings = _voices(rng, [1])
    seconds = np.array([5.0])

    def decide(heard_at_once: bool, second_voice: bool) -> FastPathDecision:
        return one_voice(embeddings, seconds, 0.88, heard_at_once=heard_at_once, second_voice=second_voice)

    taken = decide(heard_at_once=True, second_voice=False)
    assert taken.monologue and taken.reason == TOO_SHORT and math.isnan(taken.similarity)
    assert not decide(heard_at_once=True, second_voice=True).monologue  # the model heard two voices
    assert not decide(heard_at_once=False, second_voice=False).monologue  # several chunks: diarized
    nothing = one_voice(np.zeros((0, 192)), np.zeros(0), 0.88, heard_at_once=False, second_voice=False)
    assert nothing.reason == TOO_SHORT and not nothing.monologue


# ---- the real models ------------------------------------------------------------------------------


def _load(path):  # type: ignore[no-untyped-def]
    from voxdock.engine.decode import decode_file

    return decode_file(path).samples


# Measured (ONNX Runtime on CPU) when the tests were written: the lowest similarity of a sampled
# local speaker to the sample's mean voice, against the default threshold (0.95).
CONVERSATIONS = {
    "real/pyannote_sample.wav": 0.785,
    "real/ami_trn03.wav": 0.423,
    "real/ami_trn09.wav": 0.535,
    "real/ami_trn05.wav": 0.751,  # one voice holds 80 % of the speech: the nearest to a monologue
    "dialogue_2spk.wav": 0.794,  # espeak voices
    "dialogue_3spk.flac": 0.781,
}
MONOLOGUES = {
    "real/jfk.wav": (ONE_VOICE, 0.995),  # 11 s: two chunks, compared
    "real/sb_LJ050-0131.wav": (TOO_SHORT, None),  # 7.7 s: one chunk, one voice heard in it
    "monologue.ogg": (ONE_VOICE, 0.979),  # espeak
}


@pytest.mark.models
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_conversations_are_never_skipped(diarizer: SegmentationDiarizer, name: str) -> None:
    samples = _load(MEDIA / name)
    result = diarizer.diarize(samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD)
    assert not result.fast_path and result.fast_path_reason == ""
    assert len(result.speakers) >= 2
    assert result.fast_path_similarity is not None
    assert result.fast_path_similarity < DEFAULT_FAST_PATH_THRESHOLD - 0.05  # with a margin
    # The sampled chunks' embeddings are reused: the same turns as without the fast path.
    assert result.turns == diarizer.diarize(samples).turns


@pytest.mark.models
def test_a_real_conversation_over_a_telephone_line_is_not_skipped(diarizer: SegmentationDiarizer) -> None:
    """Over a telephone line (8 kHz, 300-3400 Hz, mu-law) CAM++ hears voices as more alike: this AMI
    excerpt's two speakers (one of them with 1.2 s of 30 s) scored 0.935, a monologue at the old 0.91."""
    from voxdock.evaluation import telephone_channel

    samples = telephone_channel(_load(REAL / "ami_trn03.wav"))
    result = diarizer.diarize(samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD)
    assert not result.fast_path
    assert result.fast_path_similarity is not None
    assert 0.91 < result.fast_path_similarity < DEFAULT_FAST_PATH_THRESHOLD


@pytest.mark.models
@pytest.mark.parametrize("name", list(MONOLOGUES))
def test_monologues_take_the_fast_path(diarizer: SegmentationDiarizer, name: str) -> None:
    reason, _measured = MONOLOGUES[name]
    samples = _load(MEDIA / name)
    result = diarizer.diarize(samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD)
    assert result.fast_path and result.fast_path_reason == reason
    if reason == ONE_VOICE:
        assert result.fast_path_similarity is not None
        assert result.fast_path_similarity >= DEFAULT_FAST_PATH_THRESHOLD + 0.02  # with a margin
    assert result.speakers == [SINGLE_SPEAKER] and not result.overlaps
    speech = sum(t.end - t.start for t in result.turns)
    assert 0.5 * samples.shape[0] / 16000 < speech <= samples.shape[0] / 16000 + 0.05
    # Without the fast path the diarizer also hears one voice: skipping lost nobody.
    assert len(diarizer.diarize(samples).speakers) == 1
    # Two speakers promised: never the fast path.
    told = diarizer.diarize(
        samples, SpeakerOptions(min_speakers=2), fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD
    )
    assert not told.fast_path


@pytest.mark.models
def test_the_fast_path_embeds_a_sample_of_a_long_monologue(diarizer: SegmentationDiarizer) -> None:
    samples = np.tile(_load(REAL / "jfk.wav"), 6)  # 66 s of one real voice: 12 chunks
    fast = diarizer.measure(samples, fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD)
    assert fast.decision is not None and fast.decision.monologue
    full = diarizer.measure(samples)
    sampled, every = set(fast.speakers.chunk.tolist()), set(full.speakers.chunk.tolist())
    assert len(sampled) <= SAMPLE_CHUNKS < len(every) and sampled < every
    assert diarizer.decide(fast).fast_path and diarizer.decide(fast).speakers == [SINGLE_SPEAKER]


@pytest.mark.models
def test_silence_takes_no_turns(diarizer: SegmentationDiarizer) -> None:
    result = diarizer.diarize(_load(MEDIA / "silence.wav"), fast_path_threshold=DEFAULT_FAST_PATH_THRESHOLD)
    assert result.turns == [] and result.window_embeddings is None
    assert not result.fast_path  # nothing was skipped: silence is not a fast-path skip
