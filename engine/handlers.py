"""What each stage does to a file. The runtime (engine/runtime.py) supplies threads and queues.

decode -> vad -> asr -> diarize (fast path, diarization, speaker assignment) -> voice -> text -> store
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from voxdock.engine.cpu import add_cpu_elsewhere
from voxdock.engine.decode import SAMPLE_RATE, DecodeError, decode_file
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.engine.diarization import Diarizer, single_speaker_turns
from voxdock.engine.diarization_note import ONE_SPEAKER_GIVEN, diarization_note
from voxdock.engine.fbank import fbank
from voxdock.engine.loader import LoadedModels
from voxdock.engine.oom import AdaptiveBatch, FaultInjector
from voxdock.engine.runtime import FileFailed, HandedBack
from voxdock.engine.segmenting import words_to_segments
from voxdock.engine.speaker_assignment import SINGLE_SPEAKER, assign_speakers
from voxdock.engine.vad import detect_speech
from voxdock.engine.voice import EMBEDDING_DIM, VoiceEncoder
from voxdock.engine.work import FileWork, Segment, Word
from voxdock.storage.database import Database
from voxdock.storage.segments import ModelSet, SegmentRecord, SourceOutcome, replace_segments
from voxdock.storage.turns import TurnRecord

log = logging.getLogger(__name__)

OPPOSITE_POLARITY_NOTE = "its two channels are in opposite polarity: heard as left minus right"

# A segment's own voice embedding uses at most this much of its middle: CAM++ cost grows with
# length and a speaker's voice is clear well before that.
VOICE_CLIP_MAX_S = 8.0
# Clip lengths are cut down to a multiple of this (centred), so that clips of equal length, which
# CAM++ runs together unpadded, are common and batches stay full.
VOICE_CLIP_GRID_S = 0.5


@dataclass
class Tunables:
    """Knobs read by handlers at each file; changed live by the engine's control API."""

    asr_beam_size: int
    fast_path_threshold: float


class BatchedEmbedder:
    """CAM++ calls at a stage's adaptive batch size (halved on GPU out-of-memory), through the fault
    injector. The diarizer, the fast path and the voice stage each embed through one of these."""

    def __init__(self, voice: VoiceEncoder, batch: AdaptiveBatch, faults: FaultInjector, stage: str) -> None:
        self.voice = voice
        self.batch = batch
        self.faults = faults
        self.stage = stage

    def __call__(self, features: Sequence[np.ndarray]) -> np.ndarray:
        def run(chunk: Sequence[np.ndarray]) -> list[np.ndarray]:
            self.faults.check(self.stage, len(chunk))
            return list(self.voice.embed_features(chunk))

        out = self.batch.map(list(features), run)
        return np.stack(out) if out else np.zeros((0, EMBEDDING_DIM), np.float32)


class StageHandlers:
    def __init__(
        self,
        *,
        models: LoadedModels,
        diarizer: Diarizer,
        db: Database,
        node_id: str,
        tunables: Tunables,
        batches: dict[str, AdaptiveBatch],
        faults: FaultInjector,
        model_set: ModelSet,
        on_stored: Callable[[FileWork, int], None],
        store_call: Callable[[Callable[[], int]], int] = lambda write: write(),
        on_progress: Callable[[FileWork, float], None] = lambda _work, _audio_s: None,
        decoders: DecoderProcesses | None = None,
        handing_back: Callable[[], bool] = lambda: False,
    ) -> None:
        self.models = models
        self.embed_segments = BatchedEmbedder(models.voice, batches["voice"], faults, "voice")
        self.diarizer = diarizer
        self.db = db
        self.node_id = node_id
        self.tunables = tunables
        self.batches = batches
        self.faults = faults
        self.model_set = model_set
        self.on_stored = on_stored
        self.store_call = store_call  # runs a write again once a lost store is back
        self.on_progress = on_progress  # how far into a file's audio its slowest stage has got
        self.decoders = decoders  # child processes to decode in; None: in this thread
        # True once the engine hands its files back: long work stops at its next block (a 3-hour
        # file's ASR or diarization would otherwise run on, minutes past the stop, and a model call
        # still running in a thread when the process exits aborts it).
        self.handing_back = handing_back

    def check_stop(self) -> None:
        """Raise HandedBack when the engine is handing its files back."""
        if self.handing_back():
            raise HandedBack

    def progress(self, work: FileWork, audio_s: float) -> None:
        self.check_stop()
        self.on_progress(work, audio_s)

    # --- stages --------------------------------------------------------------------------------
    def decode(self, work: FileWork) -> None:
        try:
            if self.decoders is None:
                audio = decode_file(work.path)
            else:
                audio, cpu_s = self.decoders.decode(work.path)
                add_cpu_elsewhere(cpu_s)
        except DecodeError as exc:
            if self.handing_back():  # the stop killed the decoder: not the file's fault
                raise HandedBack from None
            raise FileFailed(str(exc)) from None
        work.samples = audio.samples
        work.channel_levels = audio.channel_levels
        work.duration_s = audio.duration_s
        notes = [audio.streams_note, OPPOSITE_POLARITY_NOTE if audio.opposite_polarity else ""]
        work.decode_note = "; ".join(note for note in notes if note)

    def vad(self, work: FileWork) -> None:
        assert work.samples is not None
        work.speech = detect_speech(work.samples, self.check_stop)

    def asr(self, work: FileWork) -> None:
        assert work.samples is not None
        samples, speech = work.samples, work.speech

        def run(batch_size: int) -> list[Word]:
            self.faults.check("asr", batch_size)
            words, _language = self.models.asr.transcribe(
                samples,
                speech,
                batch_size=batch_size,
                beam_size=self.tunables.asr_beam_size,
                progress=lambda audio_s: self.progress(work, audio_s),
            )
            return words

        work.segments = words_to_segments(self.batches["asr"].call(run))

    def diarize(self, work: FileWork) -> None:
        assert work.samples is not None
        options = work.speakers
        threshold = self.tunables.fast_path_threshold
        if options.known_single:
            work.diarization = ONE_SPEAKER_GIVEN
            work.segments = assign_speakers(work.segments, None)
            work.turns = single_speaker_turns(work.speech)
            work.speaker_count = 1
            return
        result = self.diarizer.diarize(
            work.samples,
            options,
            fast_path_threshold=threshold,
            check_stop=self.check_stop,
            channel_levels=work.channel_levels,
            vad_speech=work.speech,
        )
        work.fast_path = result.fast_path
        work.fast_path_similarity = result.fast_path_similarity
        work.diarization = diarization_note(
            result, options, threshold=threshold, has_words=bool(work.segments)
        )
        # No turns although ASR found words (speech the diarizer did not hear): one speaker over the
        # VAD's regions. Without words either, the file is silence.
        work.turns = list(result.turns) or (single_speaker_turns(work.speech) if work.segments else [])
        if result.fast_path:
            work.segments = assign_speakers(work.segments, None)
            work.speaker_count = 1 if work.turns else 0
            return
        work.segments = assign_speakers(work.segments, result.turns or None)
        work.overlaps = list(result.overlaps)
        if result.window_embeddings is not None and len(result.windows):
            _reuse_window_embeddings(
                work.segments, result.windows, result.window_embeddings, result.window_speakers
            )
        # Speech without words (another language, mumbling, laughter) still has its speakers' turns.
        spoken = {s.speaker for s in work.segments if s.speaker} or {t.speaker for t in work.turns}
        work.speaker_count = len(spoken)

    def voice(self, works: list[FileWork]) -> None:
        """Voice embeddings for segments diarization did not cover, batched across files."""
        units: list[tuple[Segment, np.ndarray]] = []
        for work in works:
            assert work.samples is not None
            for seg in work.segments:
                if seg.voice_embedding is None:
                    units.append((seg, _voice_clip(work.samples, seg)))
        units.sort(key=lambda u: u[1].shape[0])  # similar lengths batch with little padding
        if units:
            embeddings = self.embed_segments([fbank(clip) for _, clip in units])
            for (seg, _), emb in zip(units, embeddings, strict=True):
                seg.voice_embedding = emb
        for work in works:
            work.release_audio()

    def text(self, works: list[FileWork]) -> None:
        segments = [seg for work in works for seg in work.segments]
        if not segments:
            return

        def run(chunk: Sequence[Segment]) -> list[np.ndarray]:
            self.faults.check("text", len(chunk))
            return list(self.models.text.encode([s.text for s in chunk]))

        for seg, emb in zip(segments, self.batches["text"].map(segments, run), strict=True):
            seg.text_embedding = emb

    def store(self, work: FileWork) -> None:
        records = [
            SegmentRecord(
                start_s=s.start,
                end_s=s.end,
                text=s.text,
                speaker=s.speaker,
                text_embedding=s.text_embedding,
                voice_embedding=s.voice_embedding,
                words=[(w.start, w.end, w.text.strip(), w.probability) for w in s.words],
            )
            for s in work.segments
        ]
        outcome = SourceOutcome(
            duration_s=work.duration_s,
            content_hash=work.job.content_hash,
            speaker_count=work.speaker_count,
            fast_path=work.fast_path,
            node_id=self.node_id,
            diarization=work.diarization or None,
            audio_note=work.decode_note or None,
        )
        turns = [TurnRecord(t.start, t.end, t.speaker) for t in work.turns]
        turns += [TurnRecord(t.start, t.end, t.speaker, overlapped=True) for t in work.overlaps]
        written = self.store_call(
            lambda: replace_segments(self.db, work.job.source_id, records, self.model_set, outcome, turns)
        )
        self.on_stored(work, written)


def count_segments(work: FileWork) -> int:
    return len(work.segments)


def count_voice_units(work: FileWork) -> int:
    return sum(1 for s in work.segments if s.voice_embedding is None)


def _voice_clip(samples: np.ndarray, seg: Segment) -> np.ndarray:
    """The middle of a segment, 0.5 s to VOICE_CLIP_MAX_S long, its length snapped down to the grid."""
    # A very short segment borrows audio around it: a voice needs about half a second to show.
    length = max(min(seg.end - seg.start, VOICE_CLIP_MAX_S), VOICE_CLIP_GRID_S)
    length = VOICE_CLIP_GRID_S * int(length / VOICE_CLIP_GRID_S)
    middle = (seg.start + seg.end) / 2
    a = max(0, int((middle - length / 2) * SAMPLE_RATE))
    b = min(samples.shape[0], max(a + 400, a + int(length * SAMPLE_RATE)))
    return samples[a:b]


def _reuse_window_embeddings(
    segments: Sequence[Segment],
    windows: Sequence[tuple[float, float]],
    embeddings: np.ndarray,
    window_speakers: Sequence[str],
) -> None:
    """A segment's voice embedding is the mean of the diarizer's embeddings of its speaker whose spans
    hold the segment's middle (the voice of that speaker around the segment, embedded once)."""
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    speakers = np.array(window_speakers)
    for seg in segments:
        middle = (seg.start + seg.end) / 2
        covering = (starts <= middle) & (ends >= middle)
        if seg.speaker is not None and len(speakers) == len(starts):
            covering &= speakers == seg.speaker
        if covering.any():
            seg.voice_embedding = embeddings[covering].mean(axis=0).astype(np.float32)


__all__ = ["SINGLE_SPEAKER", "StageHandlers", "Tunables", "count_segments", "count_voice_units"]
