"""CAM++ voice embeddings: ONNX Runtime and PyTorch agree; batching never changes an embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxdock.engine.decode import decode_file
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
