"""The carobama store: every session, entry, lap, pit stop, message and raw frame in a database.

SQLite by default (``carobama.sqlite`` in ``$LIVETIMING_DATA_DIR``, WAL mode), PostgreSQL with a
``postgresql+psycopg://`` URL. The service hands each frame and the events the feed made of it to
:class:`Store`; the :class:`~.recorder.Recorder` (reactor thread, pure) turns them into write
operations, the :class:`~.writer.StoreWriter` (its own thread) commits them in batches. Modules:

* :mod:`.schema` — the tables; :mod:`.migrations` — the Alembic migrations that create them;
  :mod:`.db` — URLs, engines, running the migrations;
* :mod:`.records` — the write operations; :mod:`.recorder` — frames/events/model → operations;
* :mod:`.apply` — operations → SQL; :mod:`.writer` — the writer thread, batching, outages;
* :mod:`.export` — ``carobama-export`` (sessions, laps, stints, pit stops, captures).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from livetiming.service.plugins.carobama.capture import redact_url
from livetiming.service.plugins.carobama.model import FeedEvent, TimingModel
from livetiming.service.plugins.carobama.store.db import StoreURLError, display_url, make_engine
from livetiming.service.plugins.carobama.store.recorder import Recorder
from livetiming.service.plugins.carobama.store.writer import StoreWriter

__all__ = ["Store", "StoreURLError"]

#: Recorder failures logged per run before the rest are only counted.
_FAILURE_LOG_LIMIT = 5


class Store:
    """The store as the service sees it: :meth:`record` each frame, :meth:`close` at shutdown.

    Creating it checks the URL (raising :class:`StoreURLError`, a ``ValueError``) and starts the
    writer thread, which connects and migrates on its own: a database that is down at start-up
    only delays the writes. :meth:`record` never raises and never waits on the database.

    Args:
        url: SQLAlchemy URL of the database.
        source: the feed ("emperor" or "bmi").
        upstream_url: the upstream websocket URL (its host is part of a session's identity; it
            is stored without secrets).
        service_uuid, version: written with the run.
        log: the service's logger (writer messages are logged on the reactor thread).
        reactor: the reactor (default: the global one).
        wall_clock: Unix time (for the run's start and stop).
        writer_options: passed to :class:`StoreWriter` (``flush_interval``, ``max_rows`` …).
    """

    def __init__(self, url: str, *, source: str, upstream_url: str, service_uuid: str | None = None,
                 version: str | None = None, log: Logger | None = None, reactor: Any = None,
                 wall_clock: Callable[[], float] = time.time, **writer_options: Any):
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self.log = log or Logger(namespace="carobama.store")
        self._wall_clock = wall_clock
        self.url = display_url(url)
        engine = make_engine(url, writer=True)
        self._closing = False
        self._waiters: list[Deferred] = []
        self._thread_done = False
        self.writer = StoreWriter(engine, log=self._log_from_any_thread, on_closed=self._writer_done,
                                  **writer_options)
        self.run = uuid.uuid4().hex
        self.recorder = Recorder(self.writer.submit, self.writer.submit_frame, run=self.run, source=source,
                                 host=_host(upstream_url))
        self.recorder.start(wall_clock(), upstream=redact_url(upstream_url), service_uuid=service_uuid,
                            version=version)
        self.failures = 0
        self.writer.start()
        self.log.info("Storing sessions, laps and raw frames in {url}", url=self.url)

    def record(self, text: str, t: float, received_at: float, events: Iterable[FeedEvent],
               model: TimingModel) -> None:
        """Record one upstream frame and the feed's events (reactor thread; never raises)."""
        try:
            self.recorder.record(text, t, received_at, events, model)
        except Exception as error:  # a recorder bug must never stop the timing
            self.failures += 1
            if self.failures <= _FAILURE_LOG_LIMIT:
                self.log.failure("Store: a frame could not be recorded ({n})", n=self.failures)
            del error

    def close(self, model: TimingModel | None = None) -> Deferred:
        """End the run and flush: the Deferred fires once everything is written or given up on.

        ``model`` (the feed's model) brings the current session's row up to date first.
        """
        if not self._closing:
            self._closing = True
            try:
                self.recorder.stop(self._wall_clock(), model)
            except Exception:
                self.log.failure("Store: could not record the end of the run")
            self.writer.close()
        waiter: Deferred = Deferred()
        if self._thread_done:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter

    # ----- writer thread → reactor --------------------------------------------------------------

    def _writer_done(self) -> None:
        self._call_in_reactor(self._fire_closed)

    def _fire_closed(self) -> None:
        self._thread_done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _log_from_any_thread(self, level: str, text: str) -> None:
        emit = getattr(self.log, level, self.log.info)
        self._call_in_reactor(lambda: emit("{text}", text=text))

    def _call_in_reactor(self, function: Callable[[], None]) -> None:
        if getattr(self._reactor, "running", False):
            self._reactor.callFromThread(function)
        else:
            function()


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
