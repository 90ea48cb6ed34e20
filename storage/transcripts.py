"""A source's transcript read back from the store: its segments in time order, each with its speaker
label, the enrolled name of that speaker where one is known, and its words; and its speaker turns.
What `voxdock show` prints and `voxdock export` writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxdock.storage.database import Database
from voxdock.storage.sources import StoredSource
from voxdock.storage.turns import TurnRecord, source_turns


@dataclass(frozen=True)
class StoredWord:
    start_s: float
    end_s: float
    word: str
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    start_s: float
    end_s: float
    text: str
    speaker: str | None  # the file's own label (SPEAKER_00), None where no speaker was assigned
    speaker_name: str | None = None  # the enrolled speaker it was matched to
    words: tuple[StoredWord, ...] = ()

    @property
    def who(self) -> str | None:
        """How to call the speaker: the enrolled name, else the file's label."""
        return self.speaker_name or self.speaker


@dataclass(frozen=True)
class Transcript:
    source: StoredSource
    segments: list[TranscriptSegment]
    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.source.path

    def speaker_names(self) -> dict[str, str]:
        """Label -> enrolled name, for the labels whose segments were matched to an enrolled speaker."""
        return {s.speaker: s.speaker_name for s in self.segments if s.speaker and s.speaker_name}


_SEGMENTS_SQL = (
    "SELECT g.start_s, g.end_s, g.text, g.speaker, p.name, g.words FROM segments g"
    " LEFT JOIN speakers p ON p.id = g.speaker_id WHERE g.source_id = %s ORDER BY g.seq"
)


def read_transcript(db: Database, source: StoredSource) -> Transcript:
    with db.connection() as conn:
        rows = conn.execute(_SEGMENTS_SQL, (source.id,)).fetchall()
    segments = [
        TranscriptSegment(
            start_s=start,
            end_s=end,
            text=text,
            speaker=speaker,
            speaker_name=name,
            words=tuple(StoredWord(w["start"], w["end"], w["word"], w["p"]) for w in words or ()),
        )
        for start, end, text, speaker, name, words in rows
    ]
    return Transcript(source, segments, source_turns(db, source.id))
