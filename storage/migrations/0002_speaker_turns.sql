-- voxdock schema, version 2: who speaks when, per source.
-- The diarizer's turns, one speaker at a time (overlapped = false), and where two people talk at
-- once the extra turns that give the stretch to the voice those left out (overlapped = true).
-- Written in the same transaction as the source's segments and replaced with them. Speakers are
-- named as in segments.speaker.

CREATE TABLE speaker_turns (
    source_id   bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    start_s     double precision NOT NULL,
    end_s       double precision NOT NULL,
    speaker     text NOT NULL,
    overlapped  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (source_id, seq),
    CHECK (end_s > start_s)
);
