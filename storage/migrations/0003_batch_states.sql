-- voxdock schema, version 3: one truth about a batch, cancelled files, and batches an ingest runs.
--
-- batches.state stays what was asked of a batch (running, paused, cancelled): claims read it, and
-- nodes of earlier versions keep working. What a batch *is* (running, paused, done, failed,
-- cancelled) is derived from its jobs by batch_state(), in the batch_status view that every reader
-- uses (`voxdock batch list`, the console, the headless display), so it cannot drift from the jobs:
--   cancelled  asked so, or nothing left and some of its files were cancelled (or adopted elsewhere)
--   running / paused  files still queued or claimed, as asked
--   failed     nothing left, and some files failed
--   done       nothing left, and none failed

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'skipped', 'cancelled'));

-- The node that runs this batch itself (a headless `voxdock ingest`); NULL for a batch any node takes.
-- When that node is gone, a re-run of the ingest on the same files adopts what the batch left.
ALTER TABLE batches ADD COLUMN owner text;

COMMENT ON COLUMN batches.state IS
    'what was asked of the batch (running, paused, cancelled); what it is: batch_status.state';
COMMENT ON COLUMN batches.owner IS
    'the node (a headless ingest) that runs this batch itself; NULL: any node takes its files';

-- Batches cancelled before this version left their files queued (or claimed by a dead node).
UPDATE jobs j
SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL,
    last_error = coalesce(j.last_error, 'cancelled with its batch')
FROM batches b
WHERE b.id = j.batch_id AND b.state = 'cancelled'
  AND (j.state = 'queued' OR (j.state = 'claimed' AND j.lease_expires_at < now()));

CREATE FUNCTION batch_state(asked text, unfinished bigint, failed bigint, cancelled bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN asked = 'cancelled' THEN 'cancelled'
        WHEN unfinished > 0 THEN asked
        WHEN failed > 0 THEN 'failed'
        WHEN cancelled > 0 THEN 'cancelled'
        ELSE 'done'
    END
$$;

CREATE VIEW batch_status AS
SELECT b.id, b.name,
       batch_state(
           b.state,
           count(*) FILTER (WHERE j.state IN ('queued', 'claimed')),
           count(*) FILTER (WHERE j.state = 'failed'),
           count(*) FILTER (WHERE j.state = 'cancelled')
       ) AS state,
       b.state AS asked,
       b.owner,
       b.created_by,
       b.created_at,
       b.options,
       count(j.id) AS total,
       count(*) FILTER (WHERE j.state = 'queued') AS queued,
       count(*) FILTER (WHERE j.state = 'claimed') AS claimed,
       count(*) FILTER (WHERE j.state = 'done') AS done,
       count(*) FILTER (WHERE j.state = 'failed') AS failed,
       count(*) FILTER (WHERE j.state = 'skipped') AS skipped,
       count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
       coalesce(sum(s.duration_s) FILTER (WHERE j.state = 'done'), 0) AS audio_seconds_done,
       sum(s.duration_s) AS audio_seconds_total
FROM batches b
LEFT JOIN jobs j ON j.batch_id = b.id
LEFT JOIN sources s ON s.id = j.source_id
GROUP BY b.id;
