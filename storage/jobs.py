"""The work queue in PostgreSQL: batches, the files in them, and claims with leases.

A claim takes the oldest claimable job of a running batch with `FOR UPDATE SKIP LOCKED`, so any
number of claimers on any number of hosts never get the same file. A claim carries a lease; the
claiming node renews it while it works, and a job whose lease ran out (its node died) is claimable
again, until it has been tried `max_attempts` times.

A batch's state has one source: `batches.state` holds what was asked of it (`BATCH_STATES`: running,
paused, cancelled; claims read it) and the `batch_status` view derives what it is (`BATCH_STATUSES`:
running, paused, done, failed, cancelled) from its jobs, with the SQL function `batch_state()`.
Every reader here goes through that view, so the command line, the console and the database agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from voxdock.storage.database import Database

BATCH_STATES = ("running", "paused", "cancelled")  # what can be asked of a batch
BATCH_STATUSES = ("running", "paused", "done", "failed", "cancelled")  # what a batch is
FINISHED_STATUSES = ("done", "failed", "cancelled")


class BatchNotFound(LookupError):
    pass


@dataclass(frozen=True)
class FileEntry:
    """A file found on disk, ready to be registered as a source."""

    path: str
    size_bytes: int
    content_hash: str | None


@dataclass(frozen=True)
class ClaimedJob:
    job_id: int
    batch_id: int
    source_id: int
    path: str
    content_hash: str | None
    attempts: int
    options: dict[str, Any]


@dataclass(frozen=True)
class EnqueueResult:
    batch_id: int
    queued: int
    skipped: int


@dataclass(frozen=True)
class BatchProgress:
    id: int
    name: str
    state: str
    created_at: datetime
    total: int
    queued: int
    claimed: int
    done: int
    failed: int
    skipped: int
    audio_seconds_done: float
    audio_seconds_total: float | None
    options: dict[str, Any] = field(default_factory=dict)  # what the batch was submitted with
    cancelled: int = 0  # files cancelled with the batch, or adopted by a later ingest of them
    owner: str | None = None  # the node (a headless ingest) that runs the batch itself

    @property
    def left(self) -> int:
        """Files still to do: queued, or claimed by some node."""
        return self.queued + self.claimed

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATUSES


@dataclass(frozen=True)
class CancelResult:
    cancelled: int  # files that will not be processed
    in_flight: int  # files some node is working on now: they finish (or are cancelled when given back)


@dataclass(frozen=True)
class Adoption:
    """What a new ingest took over from an earlier batch whose ingest is gone."""

    batch_id: int
    name: str
    files: int  # unfinished files of that batch that the new batch now does
    left: int  # its unfinished files outside the new paths, still in that batch


@dataclass(frozen=True)
class JobRow:
    job_id: int
    source_id: int
    path: str
    state: str
    attempts: int
    last_error: str | None
    claimed_by: str | None
    duration_s: float | None
    segment_count: int
    speaker_count: int | None = None  # as the diarizer found them
    speaker_names: Sequence[str] = ()  # the enrolled names its speakers were matched to
    diarization: str | None = None  # how its speakers were found (migration 0006)


def create_batch(
    db: Database, name: str, *, options: dict[str, Any] | None = None, created_by: str | None = None
) -> int:
    """Make a batch; a name already taken gets a numeric suffix (`name-2`, ...)."""
    with db.connection() as conn, conn.transaction():
        candidate, n = name, 1
        while True:
            row = conn.execute(
                "INSERT INTO batches (name, options, created_by) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (candidate, json.dumps(options or {}), created_by),
            ).fetchone()
            if row is not None:
                return int(row[0])
            n += 1
            candidate = f"{name}-{n}"


def find_batch(db: Database, name_or_id: str | int) -> int:
    with db.connection() as conn:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = conn.execute("SELECT id FROM batches WHERE id = %s", (int(name_or_id),)).fetchone()
        else:
            row = conn.execute("SELECT id FROM batches WHERE name = %s", (name_or_id,)).fetchone()
    if row is None:
        raise BatchNotFound(f"no batch named {name_or_id!r}")
    return int(row[0])


def register_sources(db: Database, files: Sequence[FileEntry]) -> list[int]:
    """Upsert sources by path; a file whose content changed goes back to 'new'. Returns ids in order."""
    if not files:
        return []
    with db.connection() as conn, conn.transaction():
        ids = []
        for entry in files:
            row = conn.execute(
                "INSERT INTO sources (path, size_bytes, content_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (path) DO UPDATE SET size_bytes = excluded.size_bytes,"
                " content_hash = excluded.content_hash,"
                " status = CASE WHEN sources.content_hash IS DISTINCT FROM excluded.content_hash"
                "   THEN 'new' ELSE sources.status END,"
                " updated_at = now()"
                " RETURNING id",
                (entry.path, entry.size_bytes, entry.content_hash),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def enqueue(
    db: Database,
    batch_id: int,
    source_ids: Sequence[int],
    *,
    skip_existing: bool = True,
    options: dict[str, Any] | None = None,
) -> EnqueueResult:
    """Queue sources in a batch. With skip_existing, a source whose content (hash) is already
    stored by a finished source is entered as 'skipped' instead, so a re-run does no work."""
    queued = skipped = 0
    payload = json.dumps(options or {})
    with db.connection() as conn, conn.transaction():
        for source_id in source_ids:
            reason = None
            if skip_existing:
                hit = conn.execute(
                    "SELECT d.path FROM sources s JOIN sources d"
                    " ON d.content_hash = s.content_hash AND d.status = 'done'"
                    " WHERE s.id = %s AND s.content_hash IS NOT NULL"
                    " ORDER BY (d.id = s.id) DESC LIMIT 1",
                    (source_id,),
                ).fetchone()
                if hit is not None:
                    reason = f"already stored (same content as {hit[0]})"
            state = "skipped" if reason else "queued"
            row = conn.execute(
                "INSERT INTO jobs (batch_id, source_id, state, last_error, options, finished_at)"
                " VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'skipped' THEN now() END)"
                " ON CONFLICT (batch_id, source_id) DO NOTHING RETURNING id",
                (batch_id, source_id, state, reason, payload, state),
            ).fetchone()
            if row is None:
                continue
            if reason:
                skipped += 1
            else:
                queued += 1
    return EnqueueResult(batch_id=batch_id, queued=queued, skipped=skipped)


# The oldest claimable job of a running batch whose file no other engine holds now (a live claim in
# any batch, on the same source or on a copy with the same content): two ingests of overlapping
# folders work on each file once. Locking the source row too (SKIP LOCKED) keeps two claimers from
# taking two batches' jobs of one file at the same instant. `stored_as` names a copy of the content
# stored after the job was queued: another batch did the work meanwhile, so the job is skipped.
_CANDIDATE_SQL = """
SELECT j.id,
       (SELECT d.path FROM sources d
        WHERE d.status = 'done' AND d.processed_at > j.enqueued_at
          AND (d.id = s.id OR (s.content_hash IS NOT NULL AND d.content_hash = s.content_hash))
        ORDER BY (d.id = s.id) DESC LIMIT 1) AS stored_as
FROM jobs j JOIN batches b ON b.id = j.batch_id JOIN sources s ON s.id = j.source_id
WHERE b.state = 'running'
  AND (j.state = 'queued' OR (j.state = 'claimed' AND j.lease_expires_at < now()))
  AND j.attempts < %(max_attempts)s
  AND (%(batches)s::bigint[] IS NULL OR j.batch_id = ANY(%(batches)s::bigint[]))
  AND NOT (j.id = ANY(%(holding)s::bigint[]))
  AND NOT EXISTS (
      SELECT 1 FROM jobs o JOIN sources os ON os.id = o.source_id
      WHERE o.id <> j.id AND o.state = 'claimed'
        AND (o.lease_expires_at >= now() OR o.id = ANY(%(holding)s::bigint[]))
        AND (o.source_id = j.source_id
             OR (s.content_hash IS NOT NULL AND os.content_hash = s.content_hash)))
ORDER BY j.id
LIMIT 1
FOR UPDATE OF j, s SKIP LOCKED
"""

_SKIP_SQL = """
UPDATE jobs SET state = 'skipped', finished_at = now(), lease_expires_at = NULL,
    last_error = format('already stored after it was queued (same content as %%s)', %(path)s::text)
WHERE id = %(id)s
"""

_CLAIM_SQL = """
WITH claimed AS (
    UPDATE jobs j
    SET state = 'claimed', claimed_by = %(node)s, attempts = j.attempts + 1, started_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease)s), last_error = NULL
    WHERE j.id = %(id)s
    RETURNING j.id, j.batch_id, j.source_id, j.attempts, j.options
)
UPDATE sources s SET status = 'processing', updated_at = now()
FROM claimed WHERE s.id = claimed.source_id
RETURNING claimed.id, claimed.batch_id, claimed.source_id, s.path, s.content_hash, claimed.attempts,
          claimed.options
"""


def claim_next(
    db: Database,
    node_id: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    only_batches: Sequence[int] | None = None,
    holding: Iterable[int] = (),
) -> ClaimedJob | None:
    """Claim the oldest claimable file of a running batch (of `only_batches`, if given) that no other
    engine is working on, or None. Jobs whose content another batch stored since they were queued
    are marked skipped on the way, with the reason.

    `holding` names the jobs the caller is still working on: their leases may have run out while the
    store was down, but they are still live claims. Taking one again, or another batch's job for the
    same file, would start a second copy of the file beside the first."""
    params: dict[str, Any] = {
        "node": node_id,
        "lease": float(lease_seconds),
        "max_attempts": max_attempts,
        "batches": list(only_batches) if only_batches is not None else None,
        "holding": list(holding),
    }
    with db.connection() as conn, conn.transaction():
        while True:
            candidate = conn.execute(_CANDIDATE_SQL, params).fetchone()
            if candidate is None:
                return None
            job_id, stored_as = int(candidate[0]), candidate[1]
            if stored_as is None:
                break
            conn.execute(_SKIP_SQL, {"id": job_id, "path": stored_as})
        row = conn.execute(_CLAIM_SQL, {**params, "id": job_id}).fetchone()
    if row is None:
        return None
    return ClaimedJob(
        job_id=int(row[0]),
        batch_id=int(row[1]),
        source_id=int(row[2]),
        path=str(row[3]),
        content_hash=row[4],
        attempts=int(row[5]),
        options=dict(row[6] or {}),
    )


def renew_leases(db: Database, node_id: str, job_ids: Iterable[int], *, lease_seconds: float) -> int:
    ids = list(job_ids)
    if not ids:
        return 0
    with db.connection() as conn, conn.transaction():
        cur = conn.execute(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE id = ANY(%s) AND claimed_by = %s AND state = 'claimed'",
            (float(lease_seconds), ids, node_id),
        )
        return cur.rowcount


def fail_abandoned(db: Database, *, max_attempts: int) -> int:
    """Jobs whose lease ran out after their last allowed attempt fail for good, with a reason."""
    with db.connection() as conn, conn.transaction():
        cur = conn.execute(
            "WITH gone AS ("
            "  UPDATE jobs SET state = 'failed', finished_at = now(),"
            "   last_error = format('abandoned: its node stopped renewing the lease %%s times', attempts)"
            "  WHERE state = 'claimed' AND lease_expires_at < now() AND attempts >= %s"
            "  RETURNING source_id, last_error)"
            " UPDATE sources s SET status = 'failed', error = gone.last_error, updated_at = now()"
            " FROM gone WHERE s.id = gone.source_id",
            (max_attempts,),
        )
        return cur.rowcount


def complete_job(db: Database, job_id: int, node_id: str) -> None:
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = now(), lease_expires_at = NULL, last_error = NULL"
            " WHERE id = %s AND claimed_by = %s",
            (job_id, node_id),
        )


def fail_job(db: Database, job_id: int, source_id: int, error: str) -> None:
    """Record a failure on the job and its source. Segments stored earlier stay as they were."""
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs SET state = 'failed', finished_at = now(), lease_expires_at = NULL, last_error = %s"
            " WHERE id = %s",
            (error, job_id),
        )
        conn.execute(
            "UPDATE sources SET status = 'failed', error = %s, updated_at = now() WHERE id = %s",
            (error, source_id),
        )


def requeue_job(db: Database, job_id: int, source_id: int) -> None:
    """Give a claimed job back (a graceful stop); the attempt does not count against it. In a batch
    cancelled meanwhile, the job is cancelled instead of queued again."""
    with db.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs j SET claimed_by = NULL, lease_expires_at = NULL, started_at = NULL,"
            " attempts = greatest(j.attempts - 1, 0),"
            " state = CASE WHEN b.state = 'cancelled' THEN 'cancelled' ELSE 'queued' END,"
            " finished_at = CASE WHEN b.state = 'cancelled' THEN now() END,"
            " last_error = CASE WHEN b.state = 'cancelled' THEN 'cancelled with its batch' END"
            " FROM batches b WHERE b.id = j.batch_id AND j.id = %s AND j.state = 'claimed'",
            (job_id,),
        )
        conn.execute(
            "UPDATE sources SET status = CASE WHEN segment_count > 0 THEN 'done' ELSE 'new' END,"
            " updated_at = now() WHERE id = %s AND status = 'processing'",
            (source_id,),
        )


def set_batch_state(db: Database, batch_id: int, state: str) -> None:
    """Ask a batch to run, pause or be cancelled (only the request: `cancel_batch` also cancels its
    queued files). What the batch then is comes from `batch_state`."""
    if state not in BATCH_STATES:
        raise ValueError(f"batch state must be one of {BATCH_STATES}, not {state!r}")
    with db.connection() as conn, conn.transaction():
        cur = conn.execute(
            "UPDATE batches SET state = %s, updated_at = now() WHERE id = %s", (state, batch_id)
        )
        if cur.rowcount == 0:
            raise BatchNotFound(f"no batch with id {batch_id}")


def set_batch_owner(db: Database, batch_id: int, node_id: str | None) -> None:
    """Record the node that runs this batch itself (a headless ingest), or none."""
    with db.connection() as conn, conn.transaction():
        cur = conn.execute("UPDATE batches SET owner = %s WHERE id = %s", (node_id, batch_id))
        if cur.rowcount == 0:
            raise BatchNotFound(f"no batch with id {batch_id}")


_STATE_SQL = """
SELECT batch_state(
    b.state,
    (SELECT count(*) FROM jobs j WHERE j.batch_id = b.id AND j.state IN ('queued', 'claimed')),
    (SELECT count(*) FROM jobs j WHERE j.batch_id = b.id AND j.state = 'failed'),
    (SELECT count(*) FROM jobs j WHERE j.batch_id = b.id AND j.state = 'cancelled'))
FROM batches b WHERE b.id = %s
"""


def batch_state(db: Database, batch_id: int) -> str:
    """What the batch is now: running, paused, done, failed or cancelled (`BATCH_STATUSES`)."""
    with db.connection() as conn:
        row = conn.execute(_STATE_SQL, (batch_id,)).fetchone()
    if row is None:
        raise BatchNotFound(f"no batch with id {batch_id}")
    return str(row[0])


_CANCEL_SQL = """
WITH gone AS (
    UPDATE jobs SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL,
        last_error = 'cancelled with its batch'
    WHERE batch_id = %(batch)s
      AND (state = 'queued' OR (state = 'claimed' AND lease_expires_at < now()))
    RETURNING source_id
)
UPDATE sources s SET status = CASE WHEN s.segment_count > 0 THEN 'done' ELSE 'new' END, updated_at = now()
FROM gone WHERE s.id = gone.source_id AND s.status = 'processing'
"""


def cancel_batch(db: Database, batch_id: int) -> CancelResult:
    """Cancel a batch: no node starts another of its files. Its queued files (and those claimed by a
    node that stopped renewing its lease) are cancelled now; files in flight on a live node finish,
    or are cancelled when that node gives them back."""
    with db.connection() as conn, conn.transaction():
        cur = conn.execute(
            "UPDATE batches SET state = 'cancelled', updated_at = now() WHERE id = %s", (batch_id,)
        )
        if cur.rowcount == 0:
            raise BatchNotFound(f"no batch with id {batch_id}")
        conn.execute(_CANCEL_SQL, {"batch": batch_id})
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'cancelled'), count(*) FILTER (WHERE state = 'claimed')"
            " FROM jobs WHERE batch_id = %s",
            (batch_id,),
        ).fetchone()
    assert row is not None
    return CancelResult(cancelled=int(row[0]), in_flight=int(row[1]))


def retry_batch(db: Database, batch_id: int) -> int:
    """Queue a batch's failed and cancelled files again, with their attempts reset, and ask the batch
    to run. Returns how many files went back to the queue. A file whose content another batch stored
    meanwhile is skipped when claimed, not redone (its queued time is kept for that check)."""
    with db.connection() as conn, conn.transaction():
        found = conn.execute("SELECT 1 FROM batches WHERE id = %s FOR UPDATE", (batch_id,)).fetchone()
        if found is None:
            raise BatchNotFound(f"no batch with id {batch_id}")
        sources = [
            int(row[0])
            for row in conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, claimed_by = NULL, lease_expires_at = NULL,"
                " last_error = NULL, started_at = NULL, finished_at = NULL"
                " WHERE batch_id = %s AND state IN ('failed', 'cancelled') RETURNING source_id",
                (batch_id,),
            ).fetchall()
        ]
        conn.execute(
            "UPDATE sources SET status = 'new', error = NULL, updated_at = now()"
            " WHERE id = ANY(%s) AND status = 'failed'",
            (sources,),
        )
        conn.execute("UPDATE batches SET state = 'running', updated_at = now() WHERE id = %s", (batch_id,))
    return len(sources)


# Batches an ingest ran itself, still running or paused with unfinished files among those of the new
# batch, with what is known of the node that ran them (no row: forgotten long ago).
_ORPHANS_SQL = """
SELECT b.id, b.name, b.owner, n.hostname, n.pid, n.state,
       extract(epoch FROM now() - n.heartbeat_at)::float8 AS silent_s
FROM batches b LEFT JOIN nodes n ON n.id = b.owner
WHERE b.id <> %(new)s AND b.owner IS NOT NULL AND b.state IN ('running', 'paused')
  AND EXISTS (SELECT 1 FROM jobs o JOIN jobs mine ON mine.source_id = o.source_id
              WHERE mine.batch_id = %(new)s AND o.batch_id = b.id AND o.state IN ('queued', 'claimed'))
ORDER BY b.id
FOR UPDATE OF b
"""

# Its unfinished files that the new batch also has: queued ones, and claimed ones that no live node
# holds (the gone owner's, or any whose lease ran out).
_ADOPT_SQL = """
UPDATE jobs o SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL,
    last_error = %(reason)s
WHERE o.batch_id = %(old)s
  AND (o.state = 'queued'
       OR (o.state = 'claimed'
           AND (o.claimed_by IS NULL OR o.claimed_by = %(owner)s OR o.lease_expires_at < now())))
  AND o.source_id IN (SELECT source_id FROM jobs WHERE batch_id = %(new)s)
RETURNING o.source_id
"""


def adopt_leftovers(db: Database, batch_id: int, *, lost_after_s: float) -> list[Adoption]:
    """Take over from earlier batches that a headless ingest ran itself and left unfinished when it
    died (its node stopped, went silent for `lost_after_s`, or is a killed process of this host):
    their unfinished files that batch `batch_id` also has are cancelled there, naming this batch, so
    only this batch does them. Files of theirs outside this batch stay where they are."""
    from voxdock.storage import nodes

    adopted: list[Adoption] = []
    with db.connection() as conn, conn.transaction():
        row = conn.execute("SELECT name FROM batches WHERE id = %s", (batch_id,)).fetchone()
        if row is None:
            raise BatchNotFound(f"no batch with id {batch_id}")
        new_name = str(row[0])
        candidates = conn.execute(_ORPHANS_SQL, {"new": batch_id}).fetchall()
        for old_id, old_name, owner, hostname, pid, state, silent_s in candidates:
            if not nodes.node_gone(hostname, pid, state, silent_s, lost_after_s=lost_after_s):
                continue
            reason = f"adopted by batch {new_name}: the ingest that ran this batch stopped"
            taken = [
                int(r[0])
                for r in conn.execute(
                    _ADOPT_SQL, {"old": old_id, "new": batch_id, "owner": owner, "reason": reason}
                ).fetchall()
            ]
            if not taken:
                continue
            # A file the dead node was working on is no longer in progress, unless a live node holds it.
            conn.execute(
                "UPDATE sources s SET status = CASE WHEN s.segment_count > 0 THEN 'done' ELSE 'new' END,"
                " updated_at = now()"
                " WHERE s.id = ANY(%s) AND s.status = 'processing' AND NOT EXISTS ("
                "  SELECT 1 FROM jobs x WHERE x.source_id = s.id AND x.state = 'claimed'"
                "   AND x.lease_expires_at >= now())",
                (taken,),
            )
            left = conn.execute(
                "SELECT count(*) FROM jobs WHERE batch_id = %s AND state IN ('queued', 'claimed')", (old_id,)
            ).fetchone()
            adopted.append(Adoption(int(old_id), str(old_name), len(taken), int(left[0]) if left else 0))
    return adopted


_PROGRESS_SQL = """
SELECT id, name, state, created_at, total, queued, claimed, done, failed, skipped, audio_seconds_done,
       audio_seconds_total, options, cancelled, owner
FROM batch_status
WHERE (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
ORDER BY id DESC
LIMIT %(limit)s
"""


def batch_progress(
    db: Database, batch_ids: Sequence[int] | None = None, *, limit: int = 50
) -> list[BatchProgress]:
    with db.connection() as conn, conn.cursor(row_factory=class_row(BatchProgress)) as cur:
        return cur.execute(
            _PROGRESS_SQL, {"ids": list(batch_ids) if batch_ids is not None else None, "limit": limit}
        ).fetchall()


def batch_jobs(db: Database, batch_id: int, *, limit: int = 500) -> list[JobRow]:
    with db.connection() as conn, conn.cursor(row_factory=class_row(JobRow)) as cur:
        return cur.execute(
            "SELECT j.id AS job_id, j.source_id, s.path, j.state, j.attempts, j.last_error, j.claimed_by,"
            " s.duration_s, s.segment_count, s.speaker_count, coalesce(("
            "  SELECT array_agg(DISTINCT p.name ORDER BY p.name) FROM source_speakers ss"
            "  JOIN speakers p ON p.id = ss.speaker_id WHERE ss.source_id = s.id), '{}') AS speaker_names,"
            " s.diarization FROM jobs j JOIN sources s ON s.id = j.source_id WHERE j.batch_id = %s"
            " ORDER BY (j.state = 'failed') DESC, j.id LIMIT %s",
            (batch_id, limit),
        ).fetchall()
