"""Scoring against references: word error rate and diarization error rate (DER).

Used by the tests and the benchmarks, on what the engine stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

_PUNCT = re.compile(r"[^\w\s']")


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> list[str]:
    """0..999999 spelled out the way the references write them ("twenty five", "one hundred")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    if n < 1_000_000:
        return [*number_words(n // 1000), "thousand"] + (number_words(n % 1000) if n % 1000 else [])
    return [str(n)]


def normalise_words(text: str) -> list[str]:
    """Lowercase words without punctuation, digits spelled out (Whisper writes 5, references five)."""
    text = text.lower().replace("-", " ")
    words: list[str] = []
    for word in _PUNCT.sub(" ", text).split():
        word = word.strip("'")
        if word.isdigit():
            words.extend(number_words(int(word)))
        elif word:
            words.append(word)
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (lowercase, no punctuation)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


def turns_from_segments(segments: Sequence[Turn], bridge_gap: float = 1.0) -> list[Turn]:
    """Speaker turns from stored segments (time order): consecutive segments of one speaker join
    across pauses shorter than `bridge_gap` s. Reference RTTMs mark a speaker's turn through its
    short pauses, while ASR segments stop at them; scored raw, every such pause counts as missed
    speech although nobody else spoke in it."""
    out: list[Turn] = []
    for seg in sorted(segments, key=lambda t: t.start):
        last = out[-1] if out else None
        if last is not None and last.speaker == seg.speaker and seg.start - last.end < bridge_gap:
            out[-1] = Turn(last.start, max(last.end, seg.end), last.speaker)
        else:
            out.append(seg)
    return out


def read_rttm(path: str | Path) -> list[Turn]:
    turns = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == "SPEAKER":
            start, duration = float(parts[3]), float(parts[4])
            turns.append(Turn(start, start + duration, parts[7]))
    return turns


@dataclass(frozen=True)
class DerResult:
    der: float
    miss: float
    false_alarm: float
    confusion: float
    reference_speech_s: float
    reference_speakers: int
    hypothesis_speakers: int


def _frames(turns: Sequence[Turn], speakers: list[str], n: int, step: float) -> np.ndarray:
    grid = np.zeros((n, len(speakers)), dtype=bool)
    index = {s: i for i, s in enumerate(speakers)}
    for t in turns:
        a, b = round(t.start / step), round(t.end / step)
        grid[max(a, 0) : max(min(b, n), 0), index[t.speaker]] = True
    return grid


def diarization_error_rate(
    reference: Sequence[Turn], hypothesis: Sequence[Turn], *, collar: float = 0.25, step: float = 0.01
) -> DerResult:
    """DER with overlap scored (NIST-style): (miss + false alarm + confusion) / reference speech.

    `collar` seconds either side of every reference boundary are not scored. Speakers are mapped
    one-to-one to maximise agreement (Hungarian assignment).
    """
    end = max([t.end for t in reference] + [t.end for t in hypothesis] + [0.0])
    n = int(np.ceil(end / step)) + 1
    ref_spk = sorted({t.speaker for t in reference})
    hyp_spk = sorted({t.speaker for t in hypothesis})
    ref = _frames(reference, ref_spk, n, step)
    hyp = _frames(hypothesis, hyp_spk, n, step)
    scored = np.ones(n, dtype=bool)
    if collar > 0:
        c = round(collar / step)
        for t in reference:
            for edge in (t.start, t.end):
                e = round(edge / step)
                scored[max(e - c, 0) : min(e + c, n)] = False
    ref, hyp = ref[scored], hyp[scored]
    if ref_spk and hyp_spk:
        overlap = ref.T.astype(np.int64) @ hyp.astype(np.int64)  # (ref, hyp) co-active frames
        rows, cols = linear_sum_assignment(-overlap)
        mapped = np.zeros_like(ref)
        for r, h in zip(rows, cols, strict=True):
            mapped[:, r] = hyp[:, h]
    else:
        mapped = np.zeros_like(ref)
    n_ref = ref.sum(axis=1)
    n_hyp = hyp.sum(axis=1)
    n_correct = (ref & mapped).sum(axis=1)
    total = float(n_ref.sum())
    miss = float(np.maximum(n_ref - n_hyp, 0).sum())
    false_alarm = float(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = float((np.minimum(n_ref, n_hyp) - n_correct).sum())
    denom = total if total > 0 else 1.0
    return DerResult(
        der=(miss + false_alarm + confusion) / denom,
        miss=miss / denom,
        false_alarm=false_alarm / denom,
        confusion=confusion / denom,
        reference_speech_s=total * step,
        reference_speakers=len(ref_spk),
        hypothesis_speakers=len(hyp_spk),
    )


def mix_conversation(
    voices: dict[str, Sequence[np.ndarray]],
    turn_s: float,
    seed: int,
    *,
    sample_rate: int = 16000,
    gap_s: tuple[float, float] = (0.2, 0.8),
) -> tuple[np.ndarray, list[Turn]]:
    """A conversation of real voices from single-speaker recordings: each voice's audio cut into
    pieces of `turn_s` seconds (pieces under half a second dropped), the voices taking turns in the
    order given until each has said all of its pieces, with a pause of `gap_s` seconds (seeded)
    before every turn. Returns the samples and the reference turns (the speaker's key as its name).

    Unlike espeak voices these are real, distinct people; unlike the AMI excerpts every speaker has
    seconds of speech, so the speaker count can be judged."""
    rng = np.random.default_rng(seed)
    step = int(turn_s * sample_rate)
    queues: dict[str, list[np.ndarray]] = {}
    for name, clips in voices.items():
        pieces = [clip[a : a + step] for clip in clips for a in range(0, len(clip), step)]
        queues[name] = [p.astype(np.float32) for p in pieces if len(p) >= sample_rate // 2]
    audio: list[np.ndarray] = []
    turns: list[Turn] = []
    t = 0
    while any(queues.values()):
        for name, queue in queues.items():
            if not queue:
                continue
            piece = queue.pop(0)
            gap = int(rng.uniform(*gap_s) * sample_rate)
            audio += [np.zeros(gap, dtype=np.float32), piece]
            t += gap
            turns.append(Turn(t / sample_rate, (t + len(piece)) / sample_rate, name))
            t += len(piece)
    return (np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)), turns


def telephone_channel(samples: np.ndarray) -> np.ndarray:
    """16 kHz mono audio as a telephone line carries it, back at 16 kHz: sampled at 8 kHz, band-passed
    to 300-3400 Hz, companded to 8-bit G.711 mu-law and expanded again. Archives hold calls; the
    models here were trained on wideband speech (bench/diarization_eval.py --channel phone)."""
    from scipy.signal import butter, resample_poly, sosfilt

    narrow = resample_poly(np.asarray(samples, dtype=np.float64), 1, 2)
    narrow = np.clip(sosfilt(butter(6, [300, 3400], btype="bandpass", fs=8000, output="sos"), narrow), -1, 1)
    mu = 255.0
    coded = np.round(np.sign(narrow) * np.log1p(mu * np.abs(narrow)) / np.log1p(mu) * 127) / 127
    narrow = np.sign(coded) * ((1 + mu) ** np.abs(coded) - 1) / mu
    wide = resample_poly(narrow, 2, 1)[: samples.shape[0]]
    return np.clip(np.pad(wide, (0, samples.shape[0] - wide.shape[0])), -1, 1).astype(np.float32)


def lossy_codec(samples: np.ndarray, codec: str, container: str, rate: int, bit_rate: int) -> np.ndarray:
    """16 kHz mono audio encoded with `codec` at `rate` Hz and `bit_rate` bit/s as an archive would store
    it, decoded again by the engine's own decoder, and realigned to the input (an encoder's delay of a
    few dozen milliseconds would otherwise shift every turn)."""
    import tempfile

    import av

    from voxdock.engine.decode import decode_file

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    with tempfile.TemporaryDirectory(prefix="voxdock-codec-") as tmp:
        path = Path(tmp) / f"audio.{container}"
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=rate, layout="mono")
            assert isinstance(stream, av.AudioStream)
            stream.bit_rate = bit_rate
            resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate = 16000
            for part in [*resampler.resample(frame), *resampler.resample(None)]:
                for packet in stream.encode(part):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        coded = decode_file(path).samples
    lag = _lag(samples, coded, max_lag=3200)
    coded = coded[lag:] if lag >= 0 else np.pad(coded, (-lag, 0))
    coded = coded[: samples.shape[0]]
    return np.pad(coded, (0, samples.shape[0] - coded.shape[0])).astype(np.float32)


def _lag(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    """How many samples `delayed` runs behind `reference` (up to `max_lag` either way), by the
    cross-correlation of their first minute."""
    from scipy.signal import correlate

    a = np.asarray(reference[: 16000 * 60], dtype=np.float64)
    b = np.asarray(delayed[: a.shape[0] + max_lag], dtype=np.float64)
    if a.shape[0] <= 2 * max_lag or not a.any() or not b.any():  # too short or silent to tell: in step
        return 0
    full = correlate(b, a, mode="full", method="fft")
    zero = a.shape[0] - 1  # index of lag 0
    window = full[zero - max_lag : zero + max_lag + 1]
    return int(np.argmax(window)) - max_lag


CHANNELS = {
    "clean": lambda samples: samples,
    "phone": telephone_channel,
    # What archives hold: a low-bitrate podcast/dictation MP3, a VoIP call's Opus, a mobile call's AMR.
    "mp3": lambda samples: lossy_codec(samples, "libmp3lame", "mp3", 16000, 32_000),
    "opus": lambda samples: lossy_codec(samples, "libopus", "ogg", 16000, 12_000),
    "amr": lambda samples: lossy_codec(samples, "libopencore_amrnb", "amr", 8000, 12_200),
}


def split_channels(
    samples: np.ndarray,
    turns: Sequence[Turn],
    left: Sequence[str],
    *,
    crosstalk_db: float = -26.0,
    delay_ms: float = 5.0,
    sample_rate: int = 16000,
) -> np.ndarray:
    """(2, n) a recording with one party per channel, as a call centre or a two-microphone interview
    stores it, made from a mono conversation without overlap (`mix_conversation`'s): the speakers
    named in `left` on the first channel, everything else (the others, and the sound between turns)
    on the second, each channel also carrying the other's `crosstalk_db` down and `delay_ms` late (a
    headset hearing the other person)."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    first = np.where(_turns_mask(turns, left, audio.shape[0], sample_rate), audio, 0.0)
    second = audio - first
    gain = 10 ** (crosstalk_db / 20)
    late = delay_ms / 1000
    return np.stack(
        [first + delayed(second, late, sample_rate) * gain, second + delayed(first, late, sample_rate) * gain]
    ).astype(np.float32)


def _turns_mask(turns: Sequence[Turn], speakers: Sequence[str], n: int, sample_rate: int) -> np.ndarray:
    """(n,) bool: the samples of the turns of `speakers`."""
    mine = np.zeros(n, dtype=bool)
    for turn in turns:
        if turn.speaker in speakers:
            mine[int(turn.start * sample_rate) : int(turn.end * sample_rate)] = True
    return mine


def channel_per_party(
    samples: np.ndarray,
    turns: Sequence[Turn],
    parties: Sequence[Sequence[str]],
    *,
    crosstalk_db: float = -26.0,
    delay_ms: float = 5.0,
    sample_rate: int = 16000,
) -> np.ndarray:
    """(channels, n) a recording with a channel per party (a field recorder's lavalier per person),
    made from a mono conversation without overlap: channel k carries the turns of the speakers in
    `parties[k]`, and everyone else's speech `crosstalk_db` down and `delay_ms` late (a microphone
    hearing the others)."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    gain = 10 ** (crosstalk_db / 20)
    channels = []
    for party in parties:
        own = np.where(_turns_mask(turns, party, audio.shape[0], sample_rate), audio, 0.0)
        channels.append(own + delayed(audio - own, delay_ms / 1000, sample_rate) * gain)
    return np.stack(channels).astype(np.float32)


def delayed(samples: np.ndarray, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """`samples` `seconds` late: silence first, the same length."""
    lag = int(seconds * sample_rate)
    x = np.asarray(samples, dtype=np.float32)
    return np.concatenate([np.zeros(lag, np.float32), x[: x.shape[0] - lag]])


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = 16000) -> Path:
    """Float samples (clipped to [-1, 1]) as a 16-bit WAV, mono from (n,) and one channel per row
    from (channels, n); returns `path`."""
    import wave

    frames = np.atleast_2d(np.asarray(samples))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((np.clip(frames.T, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path


def write_tracks(
    path: Path,
    tracks: Sequence[np.ndarray | Sequence[tuple[float, np.ndarray]]],
    *,
    codec: str = "aac",
    starts_s: Sequence[float] | None = None,
    languages: Sequence[str] | None = None,
    dispositions: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    interleave: bool = True,
    sample_rate: int = 16000,
) -> Path:
    """A container (by `path`'s suffix) with one mono audio stream per track of float samples, each
    starting at `starts_s` by its timestamps, or given as (start s, samples) pieces (a gap between
    them: no packets, the timestamps jump), with its language tag, FFmpeg disposition flags and title
    where given (engine/audio_streams.py). Packets are muxed in time order, or with `interleave`
    False a stream after another (as some tools write them); returns `path`."""
    from fractions import Fraction

    import av
    from av.stream import Disposition

    with av.open(str(path), "w") as container:
        streams = []
        for k in range(len(tracks)):
            stream = container.add_stream(codec, rate=sample_rate)
            if not isinstance(stream, av.AudioStream):
                raise TypeError(f"{codec} did not give an audio stream")
            stream.layout = "mono"
            if languages:
                stream.metadata["language"] = languages[k]
            if titles:
                stream.metadata["title"] = titles[k]
            if dispositions:
                stream.disposition = Disposition(dispositions[k])
            streams.append(stream)
        packets: list[tuple[float, int, av.Packet]] = []
        for k, (stream, track) in enumerate(zip(streams, tracks, strict=True)):
            pieces = [((starts_s[k] if starts_s else 0.0), track)] if isinstance(track, np.ndarray) else track
            for start, samples in pieces:
                pcm = (np.clip(np.asarray(samples), -1.0, 1.0) * 32767).astype(np.int16)
                first = round(start * sample_rate)
                for i in range(0, pcm.shape[0], 1024):
                    frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
                    frame.sample_rate = sample_rate
                    frame.pts, frame.time_base = first + i, Fraction(1, sample_rate)
                    packets += [(_packet_time(p), k, p) for p in stream.encode(frame)]
            packets += [(_packet_time(p), k, p) for p in stream.encode(None)]
        order = sorted(packets, key=lambda item: (item[0], item[1])) if interleave else packets
        for _, _, packet in order:
            container.mux(packet)
    return path


def _packet_time(packet: Any) -> float:
    return float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else 0.0


def write_rttm(path: str | Path, file_id: str, turns: Sequence[Turn]) -> None:
    Path(path).write_text(
        "".join(
            f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
            for t in turns
        )
    )
