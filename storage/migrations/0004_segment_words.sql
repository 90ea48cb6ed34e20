-- voxdock schema, version 4: the words of each segment with their times.
--
-- faster-whisper times every word; exports (JSON, word-level subtitles) and a future aligner need
-- them. One jsonb array per segment, in time order, each word {"start", "end", "word", "p"} with
-- times in seconds from the start of the source (not the segment) and Whisper's probability.
-- NULL for segments stored before version 4, and for segments the engine gave no words.

ALTER TABLE segments ADD COLUMN words jsonb;
