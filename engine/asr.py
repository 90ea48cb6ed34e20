"""Speech recognition with faster-whisper (CTranslate2) on the decoded array.

The batched pipeline packs the speech (silences cut out) into 30 s chunks and decodes `batch_size`
chunks per call (the runtime knob); a GPU out-of-memory error is handled by the caller halving that
size. Words come with timestamps, so segments can be cut at speaker changes and sentence ends later.

faster-whisper's batched pipeline runs its own Silero VAD (the options of engine/vad.py: the same
regions as our VAD stage) and packs the regions it finds into 30 s chunks with the silences cut out.
Our VAD stage has already found those regions, so the pipeline is handed them in place of its VAD
run (`_given_speech`: its call to `get_speech_timestamps` answers with them in the calling thread):
the chunks, and so the transcripts, are the same, without running Silero a second time (about 8
CPU-seconds per audio hour, as much as the whole VAD stage). Handing them as clip timestamps
instead would keep the silences inside each clip, which cost 2.4 points of WER on the shared
3-speaker dialogue (15.3% vs 12.9%).

A long file goes to the pipeline in windows of at most WINDOW_S, cut in the middle of a pause: the
pipeline computes the log-mel features and copies of every chunk of what it is given before it
decodes any (about 0.5 GB per hour of speech), so a whole 3-hour file would hold 1.5 GB of them.
Files up to WINDOW_S go in whole, as before. Each window is handed the file's regions that fall in
it (before, the pipeline's own VAD run started cold at each cut and could place the regions near it
differently from the file's).

Host cost (engine/cpu.py): all of faster-whisper's work counts as a model call, under two names:
"ctranslate2" (the network's encode, generate, align and language calls) and "faster-whisper" (the
rest of it: log-mel features, chunking, word timings, on the host); "silero-vad" only when it runs
its own VAD (never in the engine).
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper.vad import get_speech_timestamps

from voxdock.engine.cpu import model_call
from voxdock.engine.vad import VAD_OPTIONS, count_vad_calls
from voxdock.engine.work import Word

log = logging.getLogger(__name__)

# Whisper's own rule for a window with nothing said: the no-speech token is likely and the text is
# not. The batched pipeline reports both numbers but, unlike the sequential one, drops nothing.
NO_SPEECH_PROB = 0.6
LOW_AVG_LOGPROB = -1.0
VAD_MARGIN_S = 0.5  # word times drift a little from the VAD's region edges
MIN_WORD_S = 0.02  # a word aligned shorter than this was given no duration
_WORD_CHARS = re.compile(r"[^\w']+")
WINDOW_S = 600.0
SAMPLE_RATE = 16000
MODEL_CALL = "faster-whisper"  # its calls' names in the host-cost figures (engine/cpu.py)
NETWORK_CALL = "ctranslate2"


def is_silence(no_speech_prob: float, avg_logprob: float) -> bool:
    return no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_AVG_LOGPROB


def in_speech(word: Word, speech: list[tuple[float, float]]) -> bool:
    """Whether the word lies (within a margin) in a region the VAD heard speech in."""
    return any(word.start < end + VAD_MARGIN_S and word.end > start - VAD_MARGIN_S for start, end in speech)


def spoken_words(segments: Iterable[Any], speech: list[tuple[float, float]]) -> tuple[list[Word], int]:
    """The words of Whisper's segments that were said: segments Whisper itself rates as silence,
    words without text or with an end before their start, words outside every speech region, and
    repeats (`is_repeat`) are left out; also returns how many. Words of zero duration stay: on real
    recordings they are real words (9 of 311 with tiny.en on AMI excerpts and the dialogue fixture)
    that the aligner could not stretch."""
    words: list[Word] = []
    dropped = 0
    for segment in segments:  # a generator: decoding happens while iterating
        silent = is_silence(segment.no_speech_prob, segment.avg_logprob)
        for w in segment.words or []:
            word = Word(float(w.start), float(w.end), w.word, float(w.probability))
            if silent or not w.word.strip() or word.end < word.start or not in_speech(word, speech):
                dropped += bool(w.word.strip())
                continue
            words.append(word)
    words.sort(key=lambda w: w.start)
    said = [w for previous, w in zip([None, *words], words, strict=False) if not is_repeat(w, previous)]
    return said, dropped + len(words) - len(said)


def is_repeat(word: Word, previous: Word | None) -> bool:
    """Whether `word` is Whisper repeating itself: the same word as the one before, given no
    duration by the aligner. On the real call (tests/fixtures/media/real) tiny.en wrote "Hello."
    six times where three were said, the last three at 0 s each (WER 21.0 -> 18.5 % without them);
    none of the other zero-duration words of the real recordings, the AMI excerpts and the espeak
    conversations (about 40) repeats the word before it."""
    if previous is None or word.end - word.start >= MIN_WORD_S:
        return False
    text = _WORD_CHARS.sub("", word.text.lower())
    return bool(text) and text == _WORD_CHARS.sub("", previous.text.lower())


def speech_windows(
    speech: list[tuple[float, float]], duration_s: float, max_s: float = WINDOW_S
) -> list[tuple[float, float]]:
    """Consecutive spans covering [0, duration_s], each holding whole speech regions; a span ends at
    the last region that ends within `max_s` of its start (a longer region makes a span alone), and
    each cut lies in the middle of the pause that follows."""
    if duration_s <= max_s or not speech:
        return [(0.0, duration_s)]
    windows: list[tuple[float, float]] = []
    start = 0.0
    for (_, prev_end), (next_start, next_end) in itertools.pairwise(speech):
        if next_end - start > max_s:
            cut = (prev_end + next_start) / 2
            windows.append((start, cut))
            start = cut
    windows.append((start, duration_s))
    return windows


class _GivenSpeech(threading.local):
    stamps: list[dict[str, int]] | None = None


_given_speech = _GivenSpeech()


def _speech_or_detect(audio: np.ndarray, *args: Any, **kwargs: Any) -> list[dict[str, int]]:
    """faster-whisper's VAD call: the regions this thread's transcription was given, or a VAD run
    when it was given none (someone else's use of faster-whisper in this process)."""
    stamps = _given_speech.stamps
    if stamps is not None:
        return [dict(stamp) for stamp in stamps]
    result: list[dict[str, int]] = get_speech_timestamps(audio, *args, **kwargs)
    return result


def _install_given_speech() -> None:
    """Route the batched pipeline's VAD call through `_speech_or_detect` (once per process)."""
    import faster_whisper.transcribe as fw

    fw.get_speech_timestamps = _speech_or_detect  # one assignment, the same each time


def region_stamps(
    speech: list[tuple[float, float]], first_sample: int, num_samples: int
) -> list[dict[str, int]]:
    """Speech regions (file seconds, as engine/vad.py gives them from Silero's sample stamps) as the
    sample stamps of a window of `num_samples` starting at file sample `first_sample`."""
    stamps = []
    for start_s, end_s in speech:
        start = min(max(round(start_s * SAMPLE_RATE) - first_sample, 0), num_samples)
        end = min(max(round(end_s * SAMPLE_RATE) - first_sample, 0), num_samples)
        if end > start:
            stamps.append({"start": start, "end": end})
    return stamps


class AsrModel:
    """One loaded Whisper model; `transcribe` may be called from several threads at once."""

    def __init__(self, path: Path, *, device: str, compute_type: str, cpu_threads: int, workers: int) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=workers
        )
        self.model.model = _CountedWhisper(self.model.model)  # its network calls count as such
        self.pipeline = BatchedInferencePipeline(self.model)
        self.english_only = not self.model.model.is_multilingual
        count_vad_calls()
        _install_given_speech()

    def transcribe(
        self,
        samples: np.ndarray,
        speech: list[tuple[float, float]],
        *,
        batch_size: int,
        beam_size: int,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[list[Word], str | None]:
        """All recognised words in time order, and the language (None when nothing was said).
        `progress` hears how far into the audio decoding has got (seconds) as segments arrive."""
        if not speech:  # our VAD found none: nothing to decode
            return [], None
        words: list[Word] = []
        language: str | None = None
        for start, end in speech_windows(speech, samples.shape[0] / SAMPLE_RATE, WINDOW_S):
            local = [(a - start, b - start) for a, b in speech if a < end and b > start]
            if not local:
                continue
            first = int(start * SAMPLE_RATE)
            window = samples[first : int(end * SAMPLE_RATE)]
            stamps = region_stamps(speech, first, window.shape[0])
            found, heard = self._transcribe_window(
                window, local, stamps, batch_size, beam_size, start, progress
            )
            words += [Word(w.start + start, w.end + start, w.text, w.probability) for w in found]
            language = language or heard
        return words, language

    def _transcribe_window(
        self,
        samples: np.ndarray,
        speech: list[tuple[float, float]],
        stamps: list[dict[str, int]] | None,
        batch_size: int,
        beam_size: int,
        offset: float,
        progress: Callable[[float], None] | None,
    ) -> tuple[list[Word], str | None]:
        """Words of one window; `stamps`: its speech regions in window samples (None: the pipeline
        runs its own VAD)."""
        with model_call(MODEL_CALL):
            _given_speech.stamps = stamps
            try:
                segments, info = self.pipeline.transcribe(
                    samples,
                    language="en" if self.english_only else None,
                    vad_filter=True,
                    vad_parameters={"min_silence_duration_ms": VAD_OPTIONS.min_silence_duration_ms},
                    batch_size=batch_size,
                    beam_size=beam_size,
                    word_timestamps=True,
                )
            finally:
                _given_speech.stamps = None
            if progress is not None:
                segments = _reporting(segments, lambda at: progress(offset + at))
            decoded = list(segments)  # a generator: decoding happens while it is read
        words, dropped = spoken_words(decoded, speech)
        if dropped:
            log.debug("left out %d word(s) Whisper decoded where nothing was said", dropped)
        return words, info.language


class _CountedWhisper:
    """CTranslate2's Whisper model with its compute calls counted as model calls (engine/cpu.py);
    everything else passes through."""

    COUNTED = frozenset({"encode", "generate", "align", "detect_language", "generate_tokens"})

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name not in self.COUNTED or not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            with model_call(NETWORK_CALL):
                return value(*args, **kwargs)

        return counted


def _reporting(segments: Iterable[Any], progress: Callable[[float], None]) -> Iterator[Any]:
    # Whisper's segments arrive lazily, a batch at a time: each one's end is how far decoding got.
    for segment in segments:
        progress(segment.end)
        yield segment
