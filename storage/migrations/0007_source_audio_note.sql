-- voxdock schema, version 7: what the decoder did with a source's audio that a reader of its transcript
-- should know, in the words the engine logs: which of several audio streams were heard (one version of
-- a programme, or all the tracks of one recording), or a channel heard in opposite polarity. NULL when
-- there was nothing to say, and for sources stored before version 7. Shown by `voxdock show` and
-- `voxdock turns` and written into the JSON export.

ALTER TABLE sources ADD COLUMN audio_note text;
