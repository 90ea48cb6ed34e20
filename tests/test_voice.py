"""CAM++ voice embeddings: ONNX Runtime and PyTorch agree; batching never changes an embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.decode import decode_file
from voxdock.engine.diarization.embedding import unlike_their_unit
from voxdock.engine.fbank import fbank
from voxdock.engine.models import resolve_voice
from voxdock.engine.voice import VoiceEncoder, cosine

pytestmark = pytest.mark.models
MEDIA = Path(__file__).parent / "fixtures" / "media"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[VoiceEncoder, VoiceEncoder]:
    weights = resolve_voice(Path("/nonexistent")).require()
    onnx = VoiceEncoder(weights, onnx_cache=tmp_path_factory.mktemp("onnx"))
    assert onnx.runtime == "onnxruntime/cpu"
    assert not onnx.model.training  # the export leaves CAM++ as it found it
    return onnx, VoiceEncoder(weights)


def clips() -> list[np.ndarray]:
    audio = decode_file(MEDIA / "dialogue_2spk.wav").samples
    spans = [(0.3, 2.9), (4.0, 7.5), (8.2, 11.3), (15.1, 15.15), (12.2, 14.6), (0.5, 2.0)]
    return [fbank(audio[int(a * 16000) : int(b * 16000)]) for a, b in spans]


def test_onnx_matches_pytorch_including_very_short_clips(encoders: tuple[VoiceEncoder, VoiceEncoder]) -> None:
    onnx, torch_encoder = encoders
    feats = clips()
    a, b = onnx.embed_features(feats), torch_encoder.embed_features(feats)
    assert np.all(np.isfinite(a))  # the 50 ms clip included
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_an_embedding_does_not_depend_on_its_batch(encoders: tuple[VoiceEncoder, VoiceEncoder]) -> None:
    onnx, _ = encoders
    feats = clips()
    together = onnx.embed_features(feats)
    alone = np.stack([onnx.embed_features([f])[0] for f in feats])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_voices_separate(encoders: tuple[VoiceEncoder, VoiceEncoder]) -> None:
    onnx, _ = encoders
    e = onnx.embed_features(clips())
    # turns 0 and 2 are the same speaker, turns 1 and 4 the other (dialogue_2spk.json)
    assert cosine(e[0], e[2]) > cosine(e[0], e[1]) + 0.2
    assert cosine(e[1], e[4]) > cosine(e[1], e[2]) + 0.2


def normalised(feats: np.ndarray) -> np.ndarray:
    return feats - feats.mean(axis=0, keepdims=True)


def test_a_piece_covering_the_whole_item_is_its_embedding(
    encoders: tuple[VoiceEncoder, VoiceEncoder],
) -> None:
    onnx, torch_encoder = encoders
    feats = [normalised(f) for f in clips()[:3]]
    length = min(f.shape[0] for f in feats)
    feats = [f[:length] for f in feats]
    halves = (np.arange(length // 2), np.arange(length // 2, length))
    pieces = [(np.arange(length), *halves)] * len(feats)
    with_onnx = onnx.embed_with_pieces(feats, pieces)
    with_torch = torch_encoder.embed_with_pieces(feats, pieces)
    plain = onnx.embed_equal_length(feats)
    for item_onnx, item_torch, alone in zip(with_onnx, with_torch, plain, strict=True):
        assert item_onnx.shape == (4, 192)
        np.testing.assert_allclose(item_onnx[0], alone, atol=1e-5)  # the item's own embedding unchanged
        np.testing.assert_allclose(item_onnx[1], item_onnx[0], atol=1e-4)  # all its frames: the same pooling
        np.testing.assert_allclose(item_onnx, item_torch, atol=1e-4)  # both runtimes, pieces too
        assert cosine(item_onnx[2], item_onnx[3]) < 0.999  # halves pool different frames


def test_a_short_answer_inside_an_item_is_told_by_its_piece_and_embedded_alone(
    encoders: tuple[VoiceEncoder, VoiceEncoder],
) -> None:
    """A reader (5.3 s) answered by someone naming cards (1.2 s), as one item (real recordings). From
    the item's own pass, the reader's piece is clearly the reader, but the answer's piece is drawn
    towards the whole (CAM++'s masking sees all of it): no nearer the card reader than the reader
    (measured 0.71 and 0.69). It is unlike the whole, though, so the diarizer embeds it again alone,
    and alone it is clearly the card reader."""
    onnx, _ = encoders
    real = MEDIA / "real"
    reader = decode_file(real / "ps_librivox_0890.wav").samples
    cards = decode_file(real / "ps_cards_003.wav").samples
    both = fbank(np.concatenate([reader, cards]))
    split = fbank(reader).shape[0]
    length = (both.shape[0] // 50) * 50
    pieces = (np.arange(split), np.arange(split, length))
    whole, reader_piece, cards_piece = onnx.embed_with_pieces([normalised(both[:length])], [pieces])[0]
    voices = onnx.embed_features([normalised(fbank(reader)), normalised(fbank(cards))])
    assert cosine(reader_piece, voices[0]) > cosine(reader_piece, voices[1]) + 0.3
    assert cosine(cards_piece, voices[1]) < cosine(cards_piece, voices[0]) + 0.1  # drawn to the whole
    unlike = unlike_their_unit(np.stack([reader_piece, cards_piece]), np.stack([whole, whole]))
    assert unlike.tolist() == [False, True]
    (alone,) = onnx.embed_features([normalised(both[split:length])])
    assert cosine(alone, voices[1]) > cosine(alone, voices[0]) + 0.3
