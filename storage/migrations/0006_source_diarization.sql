-- voxdock schema, version 6: how a source's speakers were found, in the words the engine logs:
-- diarized, by channel, the monologue fast path with its similarity, one speaker given, or no
-- speech. Shown by `voxdock show` and `voxdock turns` and written into the JSON export; NULL for
-- sources stored before version 6.

ALTER TABLE sources ADD COLUMN diarization text;
