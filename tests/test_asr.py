"""What Whisper decoded but nobody said stays out: Whisper's silence rule, the VAD's regions, noise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import REAL
from faster_whisper.transcribe import Segment as WhisperSegment
from faster_whisper.transcribe import Word as WhisperWord

from voxdock.engine import asr
from voxdock.engine.asr import speech_windows, spoken_words
from voxdock.engine.decode import decode_file
from voxdock.engine.loader import LoadedModels
from voxdock.engine.vad import detect_speech
from voxdock.evaluation import word_error_rate

SR = 16000


def segment(
    words: list[tuple[float, float, str]], *, no_speech: float = 0.1, logprob: float = -0.3
) -> WhisperSegment:
    return WhisperSegment(
        id=0,
        seek=0,
        start=words[0][0],
        end=words[-1][1],
        text="".join(w for _, _, w in words),
        tokens=[],
        avg_logprob=logprob,
        compression_ratio=1.0,
        no_speech_prob=no_speech,
        words=[WhisperWord(start=a, end=b, word=w, probability=0.9) for a, b, w in words],
        temperature=0.0,
    )


def test_spoken_words_follow_whispers_silence_rule_and_the_vad() -> None:
    speech = [(0.0, 5.0), (10.0, 12.0)]
    segments = [
        segment([(0.5, 0.9, " Hello"), (1.0, 1.0, " there."), (1.2, 1.1, " bad")]),
        # Whisper itself rates this window as silence: likely no-speech and unlikely text.
        segment([(3.0, 3.5, " Thank"), (3.5, 4.0, " you.")], no_speech=0.8, logprob=-1.4),
        # Likely no-speech but confident text is kept, as Whisper's own rule does.
        segment([(4.0, 4.4, " Yes.")], no_speech=0.8, logprob=-0.2),
        segment([(7.0, 7.5, " ghost"), (10.2, 10.6, " Bye."), (11.0, 11.2, "  ")]),
    ]
    words, dropped = spoken_words(segments, speech)
    assert [w.text for w in words] == [" Hello", " there.", " Yes.", " Bye."]
    # The zero-length word is a real word kept with its time; the backwards one is not.
    assert words[1].start == words[1].end == 1.0
    assert dropped == 4  # bad, Thank, you., ghost (blank text is not counted)


def test_a_word_repeated_with_no_duration_is_whisper_repeating_itself() -> None:
    speech = [(0.0, 10.0)]
    segments = [
        segment([(0.5, 0.9, " Hello."), (1.2, 1.5, " Hello."), (1.6, 1.6, " hello"), (1.8, 1.8, " Hello.")]),
        # Said twice, each with its time: both kept; a zero-length word after another word: kept.
        segment([(3.0, 3.3, " No,"), (3.4, 3.7, " no."), (4.0, 4.0, " I"), (4.0, 4.3, " didn't.")]),
    ]
    words, dropped = spoken_words(segments, speech)
    assert [w.text for w in words] == [" Hello.", " Hello.", " No,", " no.", " I", " didn't."]
    assert dropped == 2


def noises(seconds: float = 20.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    brown = np.cumsum(rng.normal(0, 1, n))
    brown -= np.convolve(brown, np.ones(200) / 200, "same")
    clicks = np.zeros(n)
    clicks[:: SR // 4] = 0.9
    chords = sum(
        0.05 * np.sin(2 * np.pi * f * t) * (np.sin(np.pi * k * t) > 0)
        for k, f in enumerate((262, 330, 392), 1)
    )
    return {
        "white": rng.normal(0, 0.1, n),
        "brown": brown / np.abs(brown).max() * 0.3,
        "mains hum": 0.2 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t),
        "clicks": clicks,
        "chords": np.asarray(chords),
    }


@pytest.mark.parametrize("kind", list(noises(1.0)))
def test_noise_gives_no_words(models: LoadedModels, kind: str) -> None:
    audio = noises()[kind].astype(np.float32)
    speech = detect_speech(audio)
    # Even told the whole file is speech, Whisper's pass over it finds nothing said.
    words, _ = models.asr.transcribe(audio, speech or [(0.0, 20.0)], batch_size=4, beam_size=1)
    assert speech == []
    assert words == []


def test_every_word_of_real_speech_lies_in_a_speech_region(models: LoadedModels) -> None:
    audio = decode_file(REAL / "ami_trn03.wav").samples
    speech = detect_speech(audio)
    words, _ = models.asr.transcribe(audio, speech, batch_size=4, beam_size=1)
    assert len(words) > 40
    assert all(any(a - 0.5 < w.start and w.end < b + 0.5 for a, b in speech) for w in words)
    assert all(w.end >= w.start and w.text.strip() for w in words)


def test_the_real_call_is_not_transcribed_with_a_loop_of_hellos(models: LoadedModels) -> None:
    """tiny.en wrote "Hello." six times at the start of the real call, where the two people say it
    three times (pyannote-audio's transcript); the last three were given no duration."""
    audio = decode_file(REAL / "pyannote_sample.wav").samples
    words, _ = models.asr.transcribe(audio, detect_speech(audio), batch_size=4, beam_size=1)
    hellos = [w for w in words if w.text.strip(" .,?!").lower() == "hello"]
    assert 1 <= len(hellos) <= 3, [(w.start, w.end) for w in hellos]


def test_progress_follows_decoding_through_the_file(models: LoadedModels) -> None:
    """The live pace counts a long file's decoded part: ASR reports how far into the audio it got
    (a segment at a time: Whisper's batched pipeline decodes up to 30 s per segment)."""
    names = ("ami_trn03.wav", "pyannote_sample.wav", "ami_trn09.wav")
    audio = np.concatenate([decode_file(REAL / name).samples for name in names])
    heard: list[float] = []
    words, _ = models.asr.transcribe(
        audio, detect_speech(audio), batch_size=4, beam_size=1, progress=heard.append
    )
    duration = audio.shape[0] / 16000
    assert len(heard) >= 3
    assert heard == sorted(heard)
    assert heard[0] < duration / 2
    assert words[-1].end - 1.0 <= heard[-1] <= duration + 0.01


def test_speech_windows_cut_long_files_in_pauses() -> None:
    assert speech_windows([(1.0, 5.0)], 500.0, 600.0) == [(0.0, 500.0)]
    regions = [(float(a), float(a) + 50.0) for a in range(10, 3000, 60)]  # 50 s said, 10 s pauses
    windows = speech_windows(regions, 3010.0, 600.0)
    assert windows[0][0] == 0.0 and windows[-1][1] == 3010.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    for start, end in windows:
        assert end - start <= 600.0 + 10.0
        assert not any(a < start < b or a < end < b for a, b in regions), "a cut inside speech"
    assert len(windows) == 5
    # One region longer than a window makes a window alone.
    long = [(0.0, 10.0), (20.0, 900.0), (910.0, 920.0)]
    assert speech_windows(long, 930.0, 600.0) == [(0.0, 15.0), (15.0, 905.0), (905.0, 930.0)]


def test_windows_transcribe_like_the_whole_file(
    models: LoadedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long file goes to Whisper in windows (bounded memory); cut in pauses, the words are the
    same as from the whole file, at the same times."""
    names = ("ami_trn03.wav", "pyannote_sample.wav", "ami_trn09.wav")
    audio = np.concatenate([decode_file(REAL / name).samples for name in names])
    speech = detect_speech(audio)
    whole, _ = models.asr.transcribe(audio, speech, batch_size=4, beam_size=1)
    monkeypatch.setattr(asr, "WINDOW_S", 35.0)
    assert len(speech_windows(speech, audio.shape[0] / 16000, 35.0)) >= 3
    heard: list[float] = []
    windowed, _ = models.asr.transcribe(audio, speech, batch_size=4, beam_size=1, progress=heard.append)
    text = " ".join(w.text.strip() for w in whole)
    assert word_error_rate(text, " ".join(w.text.strip() for w in windowed)) < 0.05
    assert [w.start for w in windowed] == sorted(w.start for w in windowed)
    assert abs(windowed[-1].end - whole[-1].end) < 0.5
    assert heard == sorted(heard) and heard[-1] > 60.0


def test_whisper_is_handed_the_vad_stages_regions_and_decodes_the_same_words(
    models: LoadedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silero runs once per file (the VAD stage): the batched pipeline is handed those regions
    instead of running it again, and decodes exactly the words its own run would give. (A file
    long enough to go in windows gets the file's regions in each window too; its own run on a
    window would start cold at the cut and can place the regions near it differently.)"""
    names = ("ami_trn03.wav", "pyannote_sample.wav", "ami_trn09.wav")
    audio = np.concatenate([decode_file(REAL / name).samples for name in names])
    speech = detect_speech(audio)
    runs: list[int] = []
    silero = asr.get_speech_timestamps

    def counted(*args: object, **kwargs: object) -> list[dict[str, int]]:
        runs.append(1)
        return silero(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asr, "get_speech_timestamps", counted)
    given, _ = models.asr.transcribe(audio, speech, batch_size=4, beam_size=1)
    assert runs == []
    own, _ = models.asr._transcribe_window(audio, speech, None, 4, 1, 0.0, None)
    assert runs == [1]  # told nothing, the pipeline runs Silero itself
    assert len(own) > 100
    assert given == own
    # The regions handed over are the ones decoded: only the first three, only their words.
    first = asr.region_stamps(speech[:3], 0, audio.shape[0])
    some, _ = models.asr._transcribe_window(audio, speech, first, 4, 1, 0.0, None)
    assert 0 < len(some) < len(own)
    assert all(w.end <= speech[2][1] + 0.5 for w in some)
    monkeypatch.setattr(asr, "WINDOW_S", 35.0)
    models.asr.transcribe(audio, speech, batch_size=4, beam_size=1)
    assert runs == [1]  # in windows too
