"""The exit statuses of the `voxdock` command (README.md, "Exit statuses", lists the same)."""

from __future__ import annotations

from typing import Final

OK: Final = 0
"""Everything asked for was done."""

INCOMPLETE: Final = 1
"""The command ran, but some files failed, or there was nothing to find or to do."""

USAGE: Final = 2
"""Bad arguments, a bad setting (DATABASE_URL included), a path that does not exist or cannot be used,
a missing model. Nothing was started."""

STORE_UNAVAILABLE: Final = 3
"""The database could not be reached, or the embedded server could not be started."""

ENGINE_FAILED: Final = 4
"""The engine could not start (a model would not load, the device is not there) or died; what the run
created was cancelled or left as the message says."""

INTERRUPTED: Final = 130
"""Ctrl-C: files in flight were re-queued and the batch paused."""

TERMINATED: Final = 143
"""SIGTERM: stopped as for Ctrl-C."""
