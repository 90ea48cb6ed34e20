"""voxdock: speaker-attributed, searchable transcripts from audio and video archives."""

__version__ = "0.1.0"
