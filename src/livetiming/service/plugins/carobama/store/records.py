"""What the recorder hands to the writer: small immutable write operations.

The recorder (reactor thread) creates them from frames, feed events and the timing model; the
writer (its own thread) applies them in order, in batched transactions. They refer to sessions by
:class:`SessionRef` (a run and a feed generation), never by database ids, so building them needs
no database and every one of them can be applied twice without changing the result (idempotent
writes: a batch whose commit outcome is unknown is simply written again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DriverSeen",
    "EntryUpsert",
    "FrameRecord",
    "LapRecord",
    "LapsTruncate",
    "MessageRecord",
    "PitCount",
    "PitIn",
    "PitOut",
    "RunEnd",
    "RunStart",
    "SessionEnd",
    "SessionRef",
    "SessionUpsert",
]


@dataclass(frozen=True, slots=True)
class SessionRef:
    """One feed session as the recorder saw it: ``generation`` of the feed in run ``run``."""

    run: str
    generation: int


@dataclass(frozen=True, slots=True)
class RunStart:
    """A service run began (written first, before any frame of the run)."""

    run: str
    source: str
    upstream: str | None
    service_uuid: str | None
    version: str | None
    started_at: float


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The run stopped normally."""

    run: str
    ended_at: float


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One raw upstream frame (``seq`` counts the run's frames from 0)."""

    run: str
    seq: int
    received_at: float
    t: float
    data: str
    escaped: bool = False

    @property
    def size(self) -> int:
        """Approximate memory held (for the writer's byte bound)."""
        return len(self.data) + 96


@dataclass(frozen=True, slots=True)
class SessionUpsert:
    """Create or update a session row, identified by ``(source, host, server, key)``.

    ``key`` is the upstream's identity of the session; when it changes for the same ``ref`` (an
    identity learnt late) the row is re-keyed. ``first_seq`` is the first frame of the session in
    this run. ``fields`` are column values (``name``, ``type``, ``track`` …).
    """

    ref: SessionRef
    source: str
    host: str
    server: str
    key: str
    first_seq: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The session's results became final (or another session replaced it)."""

    ref: SessionRef
    ended_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class EntryUpsert:
    """Create or update an entry (car or kart) of a session."""

    ref: SessionRef
    entry_key: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriverSeen:
    """A driver drove (or is driving) an entry."""

    ref: SessionRef
    entry_key: str
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class LapRecord:
    """One completed lap. Written with "insert, or fill in what the stored lap lacks"; a
    ``correction`` (the timekeeper changed the lap's time) overwrites the stored time."""

    ref: SessionRef
    entry_key: str
    number: int
    driver: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    correction: bool = False


@dataclass(frozen=True, slots=True)
class LapsTruncate:
    """The feed removed an entry's laps above ``count`` (a timekeeper's correction): so do we, and
    pit stops inferred from those laps no longer count."""

    ref: SessionRef
    entry_key: str
    count: int


@dataclass(frozen=True, slots=True)
class PitIn:
    """A car came into the pits at ``at``; ``counted`` when the pit counter rose with it."""

    ref: SessionRef
    entry_key: str
    at: float
    counted: bool
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PitOut:
    """A car left the pits at ``at``: closes its open stop (if any)."""

    ref: SessionRef
    entry_key: str
    at: float
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PitCount:
    """The published pit counter of an entry is ``count``: at least that many stops are counted."""

    ref: SessionRef
    entry_key: str
    count: int
    lap: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A feed event worth keeping (chat, collision, join, flag …); ``ref`` None: no session."""

    ref: SessionRef | None
    run: str
    seq: int
    idx: int
    received_at: float
    kind: str
    car_number: str | None
    text: str
    data: dict[str, Any]
    dedup_key: str | None = None
