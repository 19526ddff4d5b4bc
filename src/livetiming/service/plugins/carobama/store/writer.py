"""The writer: a thread that commits the recorder's operations in batched transactions.

Threads and waiting
===================

The reactor thread only calls :meth:`StoreWriter.submit` / :meth:`StoreWriter.submit_frame`, which
append to an in-memory buffer under a lock that the writer thread never holds while talking to the
database: the reactor never waits on the database. The writer thread:

1. creates or upgrades the schema (Alembic, :func:`.db.upgrade`), retrying while the database is
   unreachable;
2. then loops: waits until something is buffered and ``flush_interval`` seconds have passed since
   the previous commit (or the buffer holds a full batch), copies up to one batch from the buffer,
   writes it in **one transaction**, and only after the commit removes it from the buffer.

So a commit happens at least every ``flush_interval`` (0.5 s by default) while data flows, and a
process killed with SIGKILL loses at most the rows of the last ``flush_interval`` plus one commit.

Outages
=======

When the database is unreachable (connection refused or lost, server shutting down, SQLite locked
or disk full: SQLAlchemy's ``OperationalError`` / ``InterfaceError`` or an invalidated
connection), the batch stays buffered and is retried with a back-off of 0.5 s doubling up to
``retry_max``. The outage is logged once when it starts and once when it ends (with how much was
written then). The buffer is bounded: at most ``max_rows`` operations and ``max_frame_bytes`` of
raw frames; beyond that new items are dropped, counted, and logged once per episode, frames and
rows separately (frames are the bulk, so they run out first and laps survive longer).

Any other error (a value the database refuses, or a bug) is a bad operation, not an outage: the
batch is retried one operation at a time in savepoints, the bad ones are logged and skipped.

Stopping
========

:meth:`close` asks the thread to write everything still buffered and stop; while the database is
down it keeps trying until ``close_timeout`` and then reports what it could not write.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from livetiming.service.plugins.carobama.store.apply import Applier
from livetiming.service.plugins.carobama.store.db import display_url, upgrade
from livetiming.service.plugins.carobama.store.records import FrameRecord

__all__ = ["LogFn", "StoreWriter", "WriterStats", "is_outage"]

#: Default bound of the buffered raw frames: twice the largest frame the upstream connection accepts
#: (64 MiB), so that one such frame is buffered next to a normal backlog instead of filling the
#: buffer on its own and making every frame after it be dropped until it is written.
MAX_FRAME_BYTES = 128 * 1024 * 1024

#: ``log(level, text)`` with level "info", "warn" or "error"; may be called from any thread.
LogFn = Callable[[str, str], None]


def is_outage(error: BaseException) -> bool:
    """True when ``error`` means "the database cannot be reached now" (retry later), rather than
    "this operation is bad"."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, InterfaceError):
        # psycopg: "the connection is closed"; sqlite3 uses it for values it cannot bind.
        return type(error.orig).__module__.split(".")[0] != "sqlite3"
    return isinstance(error, OperationalError | ConnectionError | TimeoutError)


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return " ".join(text.split())[:300] or type(error).__name__


@dataclass(slots=True)
class WriterStats:
    """Counters of the writer (read them from any thread; they are only indicative while running)."""

    rows_written: int = 0
    frames_written: int = 0
    batches: int = 0
    rows_dropped: int = 0
    frames_dropped: int = 0
    bad_operations: int = 0
    outages: int = 0
    last_commit_seconds: float = 0.0
    max_commit_seconds: float = 0.0


class StoreWriter:
    """Buffers write operations and commits them from its own thread (see the module docstring).

    Args:
        engine: the store's engine (used only by the writer thread).
        flush_interval: longest time between a submit and its commit while the database is up.
        max_rows: bound of the buffer of operations other than frames.
        max_frame_bytes: bound of the buffer of raw frames, in bytes of frame text.
        batch_size: most operations (and most frames) written in one transaction.
        retry_max: longest wait between two attempts while the database is unavailable.
        close_timeout: how long :meth:`close` keeps trying to write the rest during an outage.
        migrate: create/upgrade the schema before writing (tests may pass False on a prepared db).
        log: ``log(level, text)``; the default discards.
        on_closed: called (in the writer thread) once the thread has finished.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 0.5,
        max_rows: int = 200_000,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        batch_size: int = 5000,
        retry_max: float = 5.0,
        close_timeout: float = 5.0,
        migrate: bool = True,
        log: LogFn | None = None,
        on_closed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.engine = engine
        self.url = display_url(engine.url)
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self.max_frame_bytes = max_frame_bytes
        self.batch_size = batch_size
        self.retry_max = retry_max
        self.close_timeout = close_timeout
        self.migrate = migrate
        self._log = log if log is not None else (lambda _level, _text: None)
        self._on_closed = on_closed
        self._clock = clock
        self.stats = WriterStats()
        self.applier = Applier(engine.dialect.name, warn=lambda text: self._log("warn", text))

        self._cond = threading.Condition()
        self._rows: deque[Any] = deque()
        self._frames: deque[FrameRecord] = deque()
        self._frame_bytes = 0
        self._closing = False
        self._close_deadline: float | None = None
        self._dropping = {"rows": False, "frames": False}
        self._dropped_since_log = {"rows": 0, "frames": 0}
        self._thread: threading.Thread | None = None
        self._ready = not migrate
        self._last_commit = -float("inf")
        self._down_since: float | None = None
        self._down_error = ""
        self._retry_delay = 0.5
        self._finished = threading.Event()
        self._abandoned = (0, 0)

    # ----- reactor side ------------------------------------------------------------------------

    def submit(self, op: Any) -> None:
        """Queue one operation (never blocks on the database; drops when the buffer is full)."""
        with self._cond:
            if self._closing and self._finished.is_set():
                self.stats.rows_dropped += 1
                return
            if len(self._rows) >= self.max_rows:
                self._drop("rows")
                return
            self._rows.append(op)
            if len(self._rows) + len(self._frames) == 1:
                self._cond.notify()

    def submit_frame(self, frame: FrameRecord) -> None:
        """Queue one raw frame (never blocks on the database; drops when the buffer is full)."""
        size = frame.size
        with self._cond:
            if self._closing and self._finished.is_set():
                self.stats.frames_dropped += 1
                return
            if self._frame_bytes + size > self.max_frame_bytes and self._frames:
                self._drop("frames")
                return
            self._frames.append(frame)
            self._frame_bytes += size
            if len(self._rows) + len(self._frames) == 1:
                self._cond.notify()

    def _drop(self, kind: str) -> None:
        """Count a dropped item; log the first of an episode (called with the lock held)."""
        if kind == "rows":
            self.stats.rows_dropped += 1
        else:
            self.stats.frames_dropped += 1
        self._dropped_since_log[kind] += 1
        if not self._dropping[kind]:
            self._dropping[kind] = True
            what = (f"{self.max_rows} operations" if kind == "rows"
                    else f"{self.max_frame_bytes / 1048576:.0f} MiB of raw frames")
            reason = "the database is unavailable" if self._down_since is not None else \
                "the database is not keeping up"
            self._log("error", f"Store buffer full ({what}, {reason}): dropping new "
                               f"{'laps/events' if kind == 'rows' else 'raw frames'} until it drains")

    @property
    def pending(self) -> tuple[int, int]:
        """``(operations, frames)`` buffered and not committed yet."""
        with self._cond:
            return len(self._rows), len(self._frames)

    @property
    def available(self) -> bool:
        """False while the database is known to be unreachable."""
        return self._down_since is None

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="carobama-store-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Ask the thread to write what is buffered and stop (returns at once; see :meth:`join`)."""
        with self._cond:
            self._closing = True
            limit = self.close_timeout if timeout is None else timeout
            self._close_deadline = self._clock() + limit
            self._cond.notify_all()
        if self._thread is None:
            self._finish()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish (tests, export); True when it did."""
        return self._finished.wait(timeout)

    @property
    def unwritten(self) -> tuple[int, int]:
        """``(operations, frames)`` given up at close because the database stayed unavailable."""
        return self._abandoned

    def flush_now(self) -> bool:
        """Write everything buffered, in the calling thread; False if the database is unavailable.

        For tests and tools that run the writer without its thread (never while it runs).
        """
        if not self._ready and not self._prepare():
            return False
        while True:
            with self._cond:
                rows = list(islice(self._rows, self.batch_size))
                frames = list(islice(self._frames, self.batch_size))
            if not rows and not frames:
                return True
            if not self.write_batch(rows, frames):
                return False

    # ----- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if not self._ready:
                    if not self._prepare():
                        if self._wait_retry():
                            continue
                        break
                    continue
                batch = self._next_batch()
                if batch is None:
                    break
                if not self.write_batch(*batch) and not self._wait_retry():
                    break
        except Exception as error:  # a bug: never let it pass silently
            self._log("error", f"Store writer stopped by an unexpected error: {error!r}")
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._cond:
            rows, frames = len(self._rows), len(self._frames)
            self._rows.clear()
            self._frames.clear()
            self._frame_bytes = 0
            self._finished.set()
        if rows or frames:
            self._abandoned = (rows, frames)
            self._log("error", f"Store closed with {rows} operations and {frames} raw frames not written "
                               f"({self.url} unavailable)")
        try:
            self.engine.dispose()
        except SQLAlchemyError:
            pass
        if self._on_closed is not None:
            self._on_closed()

    def _prepare(self) -> bool:
        """Create or upgrade the schema; True when done."""
        try:
            upgrade(self.engine)
        except Exception as error:
            if is_outage(error) or isinstance(error, OSError):
                self._outage(error)
                return False
            self._log("error", f"Store disabled: cannot create or upgrade the schema of {self.url}: "
                               f"{_one_line(error)}")
            with self._cond:
                self._closing = True
                self._close_deadline = self._clock()
            return False
        self._ready = True
        self._recovered()
        return True

    def _next_batch(self) -> tuple[list[Any], list[FrameRecord]] | None:
        """Wait for work; None when closing and everything is written."""
        with self._cond:
            while not self._rows and not self._frames:
                if self._closing:
                    return None
                self._cond.wait()
            while not self._closing:
                due = self._last_commit + self.flush_interval - self._clock()
                if due <= 0 or len(self._rows) >= self.batch_size or len(self._frames) >= self.batch_size:
                    break
                self._cond.wait(due)
            rows = list(islice(self._rows, self.batch_size))
            frames = list(islice(self._frames, self.batch_size))
        return rows, frames

    def _wait_retry(self) -> bool:
        """Wait before the next attempt; False when closing and out of time."""
        with self._cond:
            now = self._clock()
            if self._closing and self._close_deadline is not None and now >= self._close_deadline:
                return False
            delay = self._retry_delay
            if self._closing and self._close_deadline is not None:
                delay = min(delay, self._close_deadline - now)
            self._cond.wait(max(0.0, delay))
            self._retry_delay = min(self._retry_delay * 2, self.retry_max)
            return True

    def write_batch(self, rows: list[Any], frames: list[FrameRecord]) -> bool:
        """Write ``rows`` then ``frames`` in one transaction and drop them from the buffer (they
        must be its first items); False on an outage (they stay buffered). Thread-safe with
        :meth:`submit`; called by the writer thread, or directly by tests without a thread."""
        started = self._clock()
        applier = self.applier
        try:
            with self.engine.begin() as conn:
                for op in rows:
                    applier.apply(conn, op)
                applier.frames(conn, frames)
        except Exception as error:
            applier.rollback()
            if is_outage(error) or isinstance(error, OSError):
                self._outage(error)
                return False
            # A value the database refuses, or a bug: find the culprits one by one.
            if not self._write_one_by_one(rows, frames):
                return False
        else:
            applier.commit()
        elapsed = self._clock() - started
        with self._cond:
            for _ in range(len(rows)):
                self._rows.popleft()
            for _ in range(len(frames)):
                self._frame_bytes -= self._frames.popleft().size
            if self._dropping["rows"] and len(self._rows) < self.max_rows // 2:
                self._dropping["rows"] = False
            if self._dropping["frames"] and self._frame_bytes < self.max_frame_bytes // 2:
                self._dropping["frames"] = False
        stats = self.stats
        stats.rows_written += len(rows)
        stats.frames_written += len(frames)
        stats.batches += 1
        stats.last_commit_seconds = elapsed
        stats.max_commit_seconds = max(stats.max_commit_seconds, elapsed)
        self._last_commit = self._clock()
        self._recovered(len(rows), len(frames))
        return True

    def _write_one_by_one(self, rows: list[Any], frames: list[FrameRecord]) -> bool:
        """Retry a batch that hit a bad operation: each one in a savepoint, skipping bad ones."""
        applier = self.applier
        try:
            with self.engine.begin() as conn:
                for op in rows:
                    mark = applier.mark()
                    try:
                        with conn.begin_nested():
                            applier.apply(conn, op)
                    except Exception as error:
                        applier.rollback(mark)
                        if is_outage(error) or isinstance(error, OSError):
                            raise
                        self._bad(op, error)
                for frame in frames:
                    mark = applier.mark()
                    try:
                        with conn.begin_nested():
                            applier.frames(conn, [frame])
                    except Exception as error:
                        applier.rollback(mark)
                        if is_outage(error) or isinstance(error, OSError):
                            raise
                        self._bad(frame, error)
        except Exception as error:
            applier.rollback()
            if is_outage(error) or isinstance(error, OSError):
                self._outage(error)
                return False
            raise  # the transaction itself failed without an outage: a bug, stop loudly
        applier.commit()
        return True

    def _bad(self, op: Any, error: BaseException) -> None:
        self.stats.bad_operations += 1
        if self.stats.bad_operations <= 20 or self.stats.bad_operations % 1000 == 0:
            self._log("error", f"Store skipped a {type(op).__name__} the database refused "
                               f"({self.stats.bad_operations} so far): {_one_line(error)}")

    def _outage(self, error: BaseException) -> None:
        try:
            self.engine.dispose()
        except SQLAlchemyError:
            pass
        if self._down_since is None:
            self._down_since = self._clock()
            self._down_error = _one_line(error)
            self.stats.outages += 1
            self._log("warn", f"Database {self.url} unavailable ({self._down_error}); timing goes on, "
                              f"rows are buffered and retried")

    def _recovered(self, rows: int = 0, frames: int = 0) -> None:
        if self._down_since is None:
            return
        down = self._clock() - self._down_since
        self._down_since = None
        self._retry_delay = 0.5
        with self._cond:
            dropped = dict(self._dropped_since_log)
            self._dropped_since_log = {"rows": 0, "frames": 0}
            still = len(self._rows) + len(self._frames)
        lost = ""
        if dropped["rows"] or dropped["frames"]:
            lost = f"; {dropped['rows']} operations and {dropped['frames']} raw frames were dropped"
        self._log("info", f"Database {self.url} available again after {down:.1f} s: writing the "
                          f"buffered rows ({rows + frames} in the first batch, {still} more queued){lost}")
