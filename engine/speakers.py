"""What the operator knows about how many people speak in a file: one value, passed as it is from the
command line or the console, through the batch's stored options, to the diarizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpeakerOptions:
    """What the operator knows about the speakers of a file (ingest --speakers / --min/--max-speakers)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SpeakerOptions:
        def get(name: str) -> int | None:
            value = options.get(name)
            return int(value) if value is not None else None

        return cls(get("num_speakers"), get("min_speakers"), get("max_speakers"))

    @classmethod
    def parse(cls, text: str) -> SpeakerOptions:
        """An operator's entry: "" (estimate), "2" (known count) or "2-4" (bounds); ValueError
        with the reason otherwise."""
        text = text.strip()
        if not text:
            return cls()
        low, sep, high = (part.strip() for part in text.partition("-"))
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise ValueError(f"speakers: {text!r} is not a count (2) or a range (2-4)")
        if not sep:
            return cls(num_speakers=_at_least_one(int(low)))
        lo, hi = _at_least_one(int(low)), _at_least_one(int(high))
        if lo > hi:
            raise ValueError(f"speakers: {lo} is more than {hi}")
        return cls(min_speakers=lo, max_speakers=hi)

    @property
    def known_single(self) -> bool:
        """One speaker given (count 1 or at most 1): nothing to diarize."""
        return self.num_speakers == 1 or self.max_speakers == 1

    @property
    def may_be_monologue(self) -> bool:
        """Whether a file with these options may be one voice (the monologue fast path may apply)."""
        return self.num_speakers is None and (self.min_speakers or 1) < 2

    def bounds(self, most: int) -> tuple[int, int]:
        """(fewest, most) speakers to look for, `most` when nothing bounds it from above."""
        if self.num_speakers is not None:
            return self.num_speakers, self.num_speakers
        low = max(1, self.min_speakers or 1)
        return low, max(low, self.max_speakers or most)

    def as_options(self) -> dict[str, int]:
        """The batch options (only what is known)."""
        given = {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
        }
        return {name: value for name, value in given.items() if value is not None}

    def describe(self) -> str:
        """For listings: "auto" when nothing is known, else "2", "2-4", ">= 2" or "<= 3"."""
        if self.num_speakers is not None:
            return str(self.num_speakers)
        if self.min_speakers is not None and self.max_speakers is not None:
            return f"{self.min_speakers}-{self.max_speakers}"
        if self.min_speakers is not None:
            return f">= {self.min_speakers}"
        if self.max_speakers is not None:
            return f"<= {self.max_speakers}"
        return "auto"


def _at_least_one(count: int) -> int:
    if count < 1:
        raise ValueError("speakers: a file has at least one speaker")
    return count
