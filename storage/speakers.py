"""Voices known across files: enrolled speakers (voice prints), matching each file's speakers to them,
and grouping unknown voices that recur across the archive. Schema: migration 0005.

A file's speaker (a segments.speaker label such as SPEAKER_00) is summed up by its centroid: the
unit-length mean of its segments' unit-length voice embeddings, kept in source_speakers. Matching
asks pgvector for the prints nearest each centroid (cosine) and gives a label the nearest print at
or above MATCH_THRESHOLD, one name per label and one label per name in a file (the diarizer said
they are different voices), the most similar pairs first. The name reaches the segments as
segments.speaker_id, which every reader joins to speakers.name.

Every file speaker also belongs to a voice (an archive-wide identity, named or not): it joins the
nearest voice whose centroid is at least VOICE_THRESHOLD similar and not taken by another speaker of
the same file, or starts a new one. Voice numbers stay put when files are matched again.

Every change runs under one advisory lock: engines storing files and an operator enrolling at the
same time serialise here and never create the same voice twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
from psycopg.rows import class_row

from voxdock.storage.database import Database

# Cosine similarity of a file speaker's centroid to a CAM++ voice print at or above which the file
# speaker is taken for the enrolled one. Calibrated on real and espeak voices across files by
# bench/speaker_matching.py (bench/results/speaker_matching.md); it belongs to the CAM++ model.
MATCH_THRESHOLD = 0.6
# Grouping unknown voices: a file speaker joins a voice at or above this similarity to its centroid.
# Stricter than naming: a voice split in two is one more enrollment, two people in one voice a wrong
# name everywhere (at 0.6 the bench's voices mixed two AMI speakers, at 0.7 no real ones).
VOICE_THRESHOLD = 0.7
# Less speech than this gives too noisy a centroid to name it or to group it.
MIN_SPEECH_S = 1.0
_LOCK_KEY = 0x766F78737065  # "voxspe"
_CANDIDATES = 3  # nearest prints looked at per file speaker (the nearest may be taken in its file)
MAX_NAME_CHARS = 80


class SpeakerError(ValueError):
    """A request about speakers that cannot be done as asked; the message says why, nothing changed."""


@dataclass(frozen=True)
class Speaker:
    id: int
    name: str
    speech_s: float  # the speech the print rests on
    enrolled_from: str | None
    created_at: datetime
    files: int  # files where one of the speakers carries this name
    heard_s: float  # the speech of those speakers, all files together


@dataclass(frozen=True)
class Voice:
    id: int
    files: int
    speech_s: float
    names: list[str]  # the enrolled names its speakers got (empty: an unknown voice)
    example: str  # one file where it is heard (the first by path)


@dataclass(frozen=True)
class FileSpeaker:
    label: str
    speech_s: float
    segment_count: int
    name: str | None
    similarity: float | None  # to the print of `name`
    voice_id: int | None


def _lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


def _array(value: object) -> np.ndarray:
    """A vector as read back (the pgvector adapter gives a numpy array or its own Vector) as numpy."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32).reshape(-1)


def _unit(vector: object) -> np.ndarray:
    array = _array(vector)
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise SpeakerError("the voice print is empty (no usable voice embedding)")
    return array / norm


# --- matching and grouping -------------------------------------------------------------------------


def refresh_source(conn: psycopg.Connection, source_id: int) -> None:
    """The store hook: called in the transaction that replaced the source's segments."""
    refresh_sources(conn, [source_id])


def refresh_sources(conn: psycopg.Connection, source_ids: Sequence[int]) -> None:
    """Recompute the sources' speaker centroids from their stored segments, then group and name them
    (run inside a transaction)."""
    ids = list(source_ids)
    if not ids:
        return
    _lock(conn)
    conn.execute(
        "INSERT INTO source_speakers (source_id, label, centroid, speech_s, segment_count)"
        " SELECT source_id, speaker, l2_normalize(avg(l2_normalize(voice_embedding))),"
        " sum(end_s - start_s), count(*) FROM segments"
        " WHERE source_id = ANY(%(ids)s) AND speaker IS NOT NULL AND voice_embedding IS NOT NULL"
        " GROUP BY source_id, speaker"
        " ON CONFLICT (source_id, label) DO UPDATE SET centroid = excluded.centroid,"
        " speech_s = excluded.speech_s, segment_count = excluded.segment_count",
        {"ids": ids},
    )
    conn.execute(
        "DELETE FROM source_speakers ss WHERE ss.source_id = ANY(%(ids)s) AND NOT EXISTS ("
        " SELECT 1 FROM segments g WHERE g.source_id = ss.source_id AND g.speaker = ss.label"
        " AND g.voice_embedding IS NOT NULL)",
        {"ids": ids},
    )
    # A speaker whose voice moved away from its group (the file was processed again) leaves it.
    left = conn.execute(
        "UPDATE source_speakers ss SET voice_id = NULL FROM voices v"
        " WHERE v.id = ss.voice_id AND ss.source_id = ANY(%(ids)s)"
        " AND (1 - (v.centroid <=> ss.centroid) < %(t)s OR ss.speech_s < %(min)s) RETURNING v.id",
        {"ids": ids, "t": VOICE_THRESHOLD, "min": MIN_SPEECH_S},
    ).fetchall()
    touched = {int(r[0]) for r in left}
    touched |= _group_voices(conn, ids)
    _update_voice_centroids(conn, touched)
    _assign_names(conn, ids)


def match_store(db: Database, source_ids: Sequence[int] | None = None, *, chunk: int = 200) -> int:
    """Match the given sources (every stored one by default) again from their stored segments, without
    running a model; returns how many sources were matched. Each chunk of sources is one transaction."""
    with db.connection() as conn:
        if source_ids is None:
            rows = conn.execute("SELECT id FROM sources WHERE segment_count > 0 ORDER BY id").fetchall()
            ids = [int(r[0]) for r in rows]
        else:
            ids = list(source_ids)
        for i in range(0, len(ids), chunk):
            with conn.transaction():
                refresh_sources(conn, ids[i : i + chunk])
        if source_ids is None:  # voices of files no longer stored
            with conn.transaction():
                _lock(conn)
                conn.execute(
                    "DELETE FROM voices v"
                    " WHERE NOT EXISTS (SELECT 1 FROM source_speakers WHERE voice_id = v.id)"
                )
    return len(ids)


def _group_voices(conn: psycopg.Connection, source_ids: list[int]) -> set[int]:
    """Give each of the sources' speakers without a voice the nearest voice it is close enough to and
    that no other speaker of its file has, or a new voice; returns the voices that changed."""
    waiting = conn.execute(
        "SELECT source_id, label, centroid FROM source_speakers"
        " WHERE source_id = ANY(%s) AND voice_id IS NULL AND speech_s >= %s"
        " ORDER BY source_id, speech_s DESC, label",
        (source_ids, MIN_SPEECH_S),
    ).fetchall()
    taken: dict[int, set[int]] = {}
    for source_id, voice_id in conn.execute(
        "SELECT source_id, voice_id FROM source_speakers WHERE source_id = ANY(%s) AND voice_id IS NOT NULL",
        (source_ids,),
    ).fetchall():
        taken.setdefault(int(source_id), set()).add(int(voice_id))
    changed: set[int] = set()
    for source_id, label, centroid in waiting:
        used = taken.setdefault(int(source_id), set())
        near = conn.execute(
            "SELECT id, 1 - (centroid <=> %(c)s) FROM voices ORDER BY centroid <=> %(c)s LIMIT %(k)s",
            {"c": centroid, "k": len(used) + 1},
        ).fetchall()
        voice_id = next((int(v) for v, sim in near if sim >= VOICE_THRESHOLD and int(v) not in used), None)
        if voice_id is None:
            row = conn.execute(
                "INSERT INTO voices (centroid) VALUES (%s) RETURNING id", (centroid,)
            ).fetchone()
            assert row is not None
            voice_id = int(row[0])
        conn.execute(
            "UPDATE source_speakers SET voice_id = %s WHERE source_id = %s AND label = %s",
            (voice_id, source_id, label),
        )
        # The voice's centroid follows its members, so the next file meets the voice as it is now.
        _update_voice_centroids(conn, {voice_id})
        used.add(voice_id)
        changed.add(voice_id)
    return changed


def _update_voice_centroids(conn: psycopg.Connection, voice_ids: set[int]) -> None:
    """Each voice's centroid is the unit-length mean of its members'; a voice left empty goes."""
    if not voice_ids:
        return
    ids = sorted(voice_ids)
    conn.execute(
        "UPDATE voices v SET centroid = c.centroid FROM ("
        " SELECT voice_id, l2_normalize(avg(centroid)) AS centroid FROM source_speakers"
        " WHERE voice_id = ANY(%(ids)s) GROUP BY voice_id) c WHERE v.id = c.voice_id",
        {"ids": ids},
    )
    conn.execute(
        "DELETE FROM voices v WHERE v.id = ANY(%(ids)s)"
        " AND NOT EXISTS (SELECT 1 FROM source_speakers WHERE voice_id = v.id)",
        {"ids": ids},
    )


def _assign_names(conn: psycopg.Connection, source_ids: list[int] | None) -> int:
    """Name the sources' speakers (every source when None) after the nearest prints, copy the names
    to their segments; returns how many file speakers carry a name."""
    scope = "" if source_ids is None else "WHERE ss.source_id = ANY(%(ids)s)"
    rows = conn.execute(
        "SELECT ss.source_id, ss.label, ss.speech_s, p.id, 1 - (p.voice_embedding <=> ss.centroid)"
        " FROM source_speakers ss LEFT JOIN LATERAL ("
        "  SELECT id, voice_embedding FROM speakers"
        "  ORDER BY voice_embedding <=> ss.centroid LIMIT %(k)s) p ON true " + scope,
        {"ids": source_ids, "k": _CANDIDATES},
    ).fetchall()
    candidates: dict[int, list[tuple[float, str, int]]] = {}
    labels: list[tuple[int, str]] = []
    for source_id, label, speech_s, speaker_id, similarity in rows:
        labels.append((int(source_id), label))
        if speaker_id is not None and similarity >= MATCH_THRESHOLD and speech_s >= MIN_SPEECH_S:
            candidates.setdefault(int(source_id), []).append((float(similarity), label, int(speaker_id)))
    chosen: dict[tuple[int, str], tuple[int, float]] = {}
    for source_id, pairs in candidates.items():
        named: set[str] = set()
        used: set[int] = set()
        for similarity, label, speaker_id in sorted(pairs, reverse=True):
            if label not in named and speaker_id not in used:
                chosen[(source_id, label)] = (speaker_id, similarity)
                named.add(label)
                used.add(speaker_id)
    keys = list(dict.fromkeys(labels))
    conn.execute(
        "UPDATE source_speakers ss SET speaker_id = m.speaker_id, similarity = m.similarity"
        " FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::real[])"
        " AS m(source_id, label, speaker_id, similarity)"
        " WHERE ss.source_id = m.source_id AND ss.label = m.label"
        " AND (ss.speaker_id IS DISTINCT FROM m.speaker_id OR ss.similarity IS DISTINCT FROM m.similarity)",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [chosen[k][0] if k in chosen else None for k in keys],
            [chosen[k][1] if k in chosen else None for k in keys],
        ),
    )
    segment_scope = "" if source_ids is None else "AND g.source_id = ANY(%(ids)s)"
    conn.execute(
        "UPDATE segments g SET speaker_id = ss.speaker_id FROM source_speakers ss"
        " WHERE ss.source_id = g.source_id AND ss.label = g.speaker"
        " AND g.speaker_id IS DISTINCT FROM ss.speaker_id " + segment_scope,
        {"ids": source_ids},
    )
    conn.execute(
        "UPDATE segments g SET speaker_id = NULL WHERE g.speaker_id IS NOT NULL " + segment_scope + " AND"
        " NOT EXISTS (SELECT 1 FROM source_speakers ss"
        " WHERE ss.source_id = g.source_id AND ss.label = g.speaker)",
        {"ids": source_ids},
    )
    return len(chosen)


# --- enrolling and managing speakers ---------------------------------------------------------------


def check_name(name: str) -> str:
    """The name as stored (surrounding spaces dropped), or SpeakerError saying what is wrong with it."""
    clean = name.strip()
    if not clean:
        raise SpeakerError("a speaker's name cannot be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise SpeakerError(f"a speaker's name is at most {MAX_NAME_CHARS} characters")
    if any(not ch.isprintable() for ch in clean):
        raise SpeakerError("a speaker's name cannot hold control characters")
    return clean


def _name_free(conn: psycopg.Connection, name: str, *, but: int | None = None) -> str:
    clean = check_name(name)
    row = conn.execute(
        "SELECT name FROM speakers WHERE lower(name) = lower(%s) AND id IS DISTINCT FROM %s::bigint",
        (clean, but),
    ).fetchone()
    if row is not None:
        raise SpeakerError(f"the name {row[0]!r} is taken by an enrolled speaker (rename or forget it first)")
    return clean


def _speaker_id(conn: psycopg.Connection, name: str) -> tuple[int, str, np.ndarray, float]:
    # Names are unique ignoring case (see _name_free); an exact match wins over older stores' twins.
    rows = conn.execute(
        "SELECT id, name, voice_embedding, speech_s FROM speakers WHERE lower(name) = lower(%s)"
        " ORDER BY name = %s DESC LIMIT 1",
        (name.strip(), name.strip()),
    ).fetchall()
    if not rows:
        raise SpeakerError(f"no enrolled speaker named {name.strip()!r} (`voxdock speakers list` lists them)")
    speaker_id, stored, vector, speech_s = rows[0]
    return int(speaker_id), str(stored), _array(vector), float(speech_s)


def _insert_print(
    conn: psycopg.Connection, name: str, vector: object, speech_s: float, enrolled_from: str
) -> int:
    row = conn.execute(
        "INSERT INTO speakers (name, voice_embedding, speech_s, enrolled_from) VALUES (%s, %s, %s, %s)"
        " RETURNING id",
        (name, _unit(vector), float(speech_s), enrolled_from),
    ).fetchone()
    assert row is not None
    return int(row[0])


def enroll_from_source(
    db: Database,
    name: str,
    source_id: int,
    *,
    label: str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    described_as: str = "",
) -> Speaker:
    """Enroll `name` from a stored file's speech: one speaker's (`label`), the speech between start_s
    and end_s, or the whole file when it has one speaker. Every stored file is matched again."""
    what = described_as or f"source {source_id}"
    if (start_s is None) != (end_s is None):
        raise SpeakerError("give both the start and the end of the speech to enroll from")
    if start_s is not None and end_s is not None and not (0 <= start_s < end_s):
        raise SpeakerError(f"bad time range {start_s:g}..{end_s:g} s: the end must come after the start")
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        clean = _name_free(conn, name)
        labels = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT speaker FROM segments WHERE source_id = %s AND speaker IS NOT NULL"
                " ORDER BY speaker",
                (source_id,),
            ).fetchall()
        ]
        if label is not None and label not in labels:
            held = f"its speakers are {', '.join(labels)}" if labels else "it has no speakers stored"
            raise SpeakerError(f"{what} has no speaker {label!r}: {held}")
        timed = start_s is not None
        overlap = "least(end_s, %(e)s) - greatest(start_s, %(s)s)" if timed else "end_s - start_s"
        row = conn.execute(
            "SELECT l2_normalize(avg(l2_normalize(voice_embedding))), coalesce(sum(" + overlap + "), 0),"
            " count(*), coalesce(array_agg(DISTINCT speaker) FILTER (WHERE speaker IS NOT NULL), '{}')"
            " FROM segments WHERE source_id = %(id)s AND voice_embedding IS NOT NULL"
            " AND (%(label)s::text IS NULL OR speaker = %(label)s)"
            + (" AND start_s < %(e)s AND end_s > %(s)s" if timed else ""),
            {"id": source_id, "label": label, "s": start_s, "e": end_s},
        ).fetchone()
        assert row is not None
        vector, speech_s, count, speakers = row
        if not count:
            where = f" between {start_s:g} and {end_s:g} s" if timed else ""
            whose = f" of {label}" if label else ""
            raise SpeakerError(f"no speech{whose} stored{where} in {what}")
        if label is None and len(speakers) > 1:
            where = "that time range" if timed else what
            raise SpeakerError(
                f"{where} holds {len(speakers)} speakers ({', '.join(speakers)}): choose one with --speaker"
            )
        chosen = label or (speakers[0] if speakers else None)
        parts = [what] + ([chosen] if chosen else []) + ([f"{start_s:g}-{end_s:g} s"] if timed else [])
        speaker_id = _insert_print(conn, clean, vector, speech_s, " ".join(parts))
        _assign_names(conn, None)
    return _one_speaker(db, speaker_id)


def enroll_print(db: Database, name: str, vector: np.ndarray, speech_s: float, enrolled_from: str) -> Speaker:
    """Enroll `name` with a print computed elsewhere (a clip embedded by the voice model); every stored
    file is matched again."""
    if not speech_s > 0:
        raise SpeakerError(f"no speech in {enrolled_from}")
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        clean = _name_free(conn, name)
        dims = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'speakers'::regclass"
            " AND attname = 'voice_embedding'"
        ).fetchone()
        given = np.asarray(vector).reshape(-1).shape[0]
        if dims is not None and int(dims[0]) != given:
            raise SpeakerError(f"the print has {given} dimensions, the store wants {int(dims[0])}")
        speaker_id = _insert_print(conn, clean, vector, speech_s, enrolled_from)
        _assign_names(conn, None)
    return _one_speaker(db, speaker_id)


def enroll_voice(db: Database, name: str, voice_id: int) -> Speaker:
    """Enroll `name` from an archive-wide voice (its centroid over every file it is heard in): all its
    appearances get the name."""
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        clean = _name_free(conn, name)
        row = conn.execute(
            "SELECT v.centroid, coalesce(sum(ss.speech_s), 0), count(DISTINCT ss.source_id) FROM voices v"
            " LEFT JOIN source_speakers ss ON ss.voice_id = v.id WHERE v.id = %s GROUP BY v.id",
            (voice_id,),
        ).fetchone()
        if row is None:
            raise SpeakerError(f"no voice #{voice_id} (`voxdock speakers list --unknown` lists them)")
        vector, speech_s, files = row
        speaker_id = _insert_print(conn, clean, vector, speech_s, f"voice #{voice_id} ({files} files)")
        _assign_names(conn, None)
    return _one_speaker(db, speaker_id)


def rename_speaker(db: Database, name: str, new_name: str) -> Speaker:
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        speaker_id, _, _, _ = _speaker_id(conn, name)
        clean = _name_free(conn, new_name, but=speaker_id)
        conn.execute("UPDATE speakers SET name = %s, updated_at = now() WHERE id = %s", (clean, speaker_id))
    return _one_speaker(db, speaker_id)


def merge_speakers(db: Database, name: str, into: str) -> Speaker:
    """`name` and `into` are one person: `into` keeps its name, its print becomes the speech-weighted
    mean of both, `name` is gone; every stored file is matched again."""
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        gone_id, gone, gone_vec, gone_s = _speaker_id(conn, name)
        kept_id, kept, kept_vec, kept_s = _speaker_id(conn, into)
        if gone_id == kept_id:
            raise SpeakerError(f"{gone!r} and {kept!r} are the same speaker")
        weights = (gone_s, kept_s) if gone_s + kept_s > 0 else (1.0, 1.0)
        merged = _unit(weights[0] * _unit(gone_vec) + weights[1] * _unit(kept_vec))
        conn.execute(
            "UPDATE speakers SET voice_embedding = %s, speech_s = %s, updated_at = now(),"
            " enrolled_from = concat_ws('; ', enrolled_from, %s::text) WHERE id = %s",
            (merged, gone_s + kept_s, f"merged {gone}", kept_id),
        )
        conn.execute("DELETE FROM speakers WHERE id = %s", (gone_id,))
        _assign_names(conn, None)
    return _one_speaker(db, kept_id)


def forget_speaker(db: Database, name: str) -> int:
    """Remove an enrolled speaker; its appearances become anonymous again (or another close enough
    print names them). Returns how many files had the name."""
    with db.connection() as conn, conn.transaction():
        _lock(conn)
        speaker_id, _, _, _ = _speaker_id(conn, name)
        row = conn.execute(
            "SELECT count(DISTINCT source_id) FROM source_speakers WHERE speaker_id = %s", (speaker_id,)
        ).fetchone()
        conn.execute("DELETE FROM speakers WHERE id = %s", (speaker_id,))
        _assign_names(conn, None)
    return int(row[0]) if row else 0


# --- reading ---------------------------------------------------------------------------------------

_SPEAKERS_SQL = (
    "SELECT p.id, p.name, p.speech_s, p.enrolled_from, p.created_at,"
    " count(DISTINCT ss.source_id)::int AS files, coalesce(sum(ss.speech_s), 0)::float8 AS heard_s"
    " FROM speakers p LEFT JOIN source_speakers ss ON ss.speaker_id = p.id"
)


def list_speakers(db: Database) -> list[Speaker]:
    """Enrolled speakers by name, with where the archive holds them."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(Speaker)) as cur:
        return cur.execute(_SPEAKERS_SQL + " GROUP BY p.id ORDER BY lower(p.name)").fetchall()


def find_speaker(db: Database, name: str) -> Speaker | None:
    """The enrolled speaker called `name` (exactly, else ignoring case), or None."""
    with db.connection() as conn:
        try:
            speaker_id = _speaker_id(conn, name)[0]
        except SpeakerError:
            return None
    return _one_speaker(db, speaker_id)


def _one_speaker(db: Database, speaker_id: int) -> Speaker:
    with db.connection() as conn, conn.cursor(row_factory=class_row(Speaker)) as cur:
        found = cur.execute(_SPEAKERS_SQL + " WHERE p.id = %s GROUP BY p.id", (speaker_id,)).fetchone()
    assert found is not None
    return found


def list_voices(db: Database, *, unknown_only: bool = False, min_files: int = 1) -> list[Voice]:
    """Archive-wide voices heard in at least `min_files` files, most files first; with unknown_only,
    only those none of whose speakers has a name."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(Voice)) as cur:
        return cur.execute(
            "SELECT v.id, count(DISTINCT ss.source_id)::int AS files, sum(ss.speech_s)::float8 AS speech_s,"
            " coalesce(array_agg(DISTINCT p.name) FILTER (WHERE p.name IS NOT NULL), '{}') AS names,"
            " min(s.path) AS example"
            " FROM voices v JOIN source_speakers ss ON ss.voice_id = v.id"
            " JOIN sources s ON s.id = ss.source_id LEFT JOIN speakers p ON p.id = ss.speaker_id"
            " GROUP BY v.id HAVING count(DISTINCT ss.source_id) >= %(min)s"
            " AND (NOT %(unknown)s OR count(p.id) = 0)"
            " ORDER BY files DESC, speech_s DESC, v.id",
            {"min": min_files, "unknown": unknown_only},
        ).fetchall()


def file_speakers(db: Database, source_id: int) -> list[FileSpeaker]:
    """A file's speakers with their names (None: anonymous) and voices, by label."""
    with db.connection() as conn, conn.cursor(row_factory=class_row(FileSpeaker)) as cur:
        return cur.execute(
            "SELECT ss.label, ss.speech_s, ss.segment_count, p.name, ss.similarity::float8 AS similarity,"
            " ss.voice_id FROM source_speakers ss LEFT JOIN speakers p ON p.id = ss.speaker_id"
            " WHERE ss.source_id = %s ORDER BY ss.label",
            (source_id,),
        ).fetchall()
