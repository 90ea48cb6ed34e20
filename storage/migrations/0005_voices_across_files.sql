-- voxdock schema, version 5: voices known across files (storage/speakers.py).
--
-- speakers: enrolled voices. voice_embedding is the print: the unit-length mean of the unit-length
-- voice embeddings of the speech it was enrolled from; speech_s says how much speech that was.
-- source_speakers: each file's own speakers (segments.speaker labels), with the centroid of their
-- voice embeddings, the enrolled speaker they were matched to (copied to segments.speaker_id) and the
-- archive-wide voice they belong to.
-- voices: one identity per voice across the archive, enrolled or not (voice #17), found by grouping
-- the files' speaker centroids; its centroid is the unit-length mean of its members'.

ALTER TABLE speakers ADD COLUMN speech_s double precision NOT NULL DEFAULT 0;
ALTER TABLE speakers ADD COLUMN enrolled_from text;
ALTER TABLE speakers ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX speakers_voice_hnsw ON speakers USING hnsw (voice_embedding vector_cosine_ops);

CREATE TABLE voices (
    id          bigserial PRIMARY KEY,
    centroid    vector(@VOICE_DIM@) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX voices_centroid_hnsw ON voices USING hnsw (centroid vector_cosine_ops);

CREATE TABLE source_speakers (
    source_id      bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    label          text NOT NULL,
    centroid       vector(@VOICE_DIM@) NOT NULL,
    speech_s       double precision NOT NULL,
    segment_count  integer NOT NULL,
    speaker_id     bigint REFERENCES speakers (id) ON DELETE SET NULL,
    similarity     real,  -- cosine of the centroid to the matched print
    voice_id       bigint REFERENCES voices (id) ON DELETE SET NULL,
    PRIMARY KEY (source_id, label)
);
CREATE INDEX source_speakers_by_speaker ON source_speakers (speaker_id);
CREATE INDEX source_speakers_by_voice ON source_speakers (voice_id);

-- Files stored before this version get their speakers' centroids now; names and voices come with
-- the next `voxdock speakers match`.
INSERT INTO source_speakers (source_id, label, centroid, speech_s, segment_count)
SELECT source_id, speaker, l2_normalize(avg(l2_normalize(voice_embedding))), sum(end_s - start_s), count(*)
FROM segments
WHERE speaker IS NOT NULL AND voice_embedding IS NOT NULL
GROUP BY source_id, speaker;
