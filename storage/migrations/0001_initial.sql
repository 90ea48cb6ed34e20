-- voxdock schema, version 1.
-- @TEXT_DIM@ and @VOICE_DIM@ are the vector sizes of the configured models, fixed when the store is
-- made and recorded in store_meta; a store opened later with other models is refused.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE store_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE nodes (
    id            text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'stopping', 'stopped')),
    metrics       jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE batches (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'paused', 'cancelled')),
    options     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sources (
    id              bigserial PRIMARY KEY,
    path            text NOT NULL UNIQUE,
    content_hash    text,
    size_bytes      bigint,
    duration_s      double precision,
    status          text NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'processing', 'done', 'failed')),
    error           text,
    segment_count   integer NOT NULL DEFAULT 0,
    speaker_count   integer,
    fast_path       boolean,
    processed_by    text,
    processed_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_content_hash ON sources (content_hash) WHERE status = 'done';

-- One row per (batch, source): the queue. A claim sets claimed_by and a lease; a node that dies
-- stops renewing its leases and the rows become claimable again.
CREATE TABLE jobs (
    id                bigserial PRIMARY KEY,
    batch_id          bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    source_id         bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'skipped')),
    claimed_by        text REFERENCES nodes (id) ON DELETE SET NULL,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    options           jsonb NOT NULL DEFAULT '{}'::jsonb,
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    UNIQUE (batch_id, source_id)
);
CREATE INDEX jobs_claimable ON jobs (id) WHERE state IN ('queued', 'claimed');
CREATE INDEX jobs_by_batch ON jobs (batch_id, state);

CREATE TABLE model_sets (
    id          serial PRIMARY KEY,
    asr         text NOT NULL,
    diarizer    text NOT NULL,
    voice       text NOT NULL,
    text_model  text NOT NULL,
    UNIQUE (asr, diarizer, voice, text_model)
);

CREATE TABLE speakers (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    voice_embedding  vector(@VOICE_DIM@) NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE segments (
    id               bigserial PRIMARY KEY,
    source_id        bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    seq              integer NOT NULL,
    start_s          double precision NOT NULL,
    end_s            double precision NOT NULL,
    text             text NOT NULL,
    speaker          text,
    speaker_id       bigint REFERENCES speakers (id) ON DELETE SET NULL,
    text_embedding   vector(@TEXT_DIM@),
    voice_embedding  vector(@VOICE_DIM@),
    model_set_id     integer REFERENCES model_sets (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, seq),
    CHECK (end_s >= start_s)
);
CREATE INDEX segments_text_hnsw ON segments USING hnsw (text_embedding vector_cosine_ops);
CREATE INDEX segments_voice_hnsw ON segments USING hnsw (voice_embedding vector_cosine_ops);
