"""The carobama service: upstream websocket → feed → Common Timing Data → the framework.

It uses only the framework's public names (``BaseService``, ``DuePublisher``,
``TimingMessage``), so it runs on this project's core and on the original
livetiming-core alike. Data flow for each upstream frame:

1. the raw text is appended to the capture journal (``--capture``);
2. the feed (a pure state machine) updates its timing model and returns events;
3. events worth a message are queued for the next update;
4. ``set_due_publish()`` asks the framework for an update soon (coalesced, at most one
   per ``--publish-interval``; laps, pit stops, flags and session changes urgently, within
   about 50 ms, where the framework supports it); the update calls ``getRaceState()``, which
   renders the model as CTD.

Resumed with ``-s``, the service shows the saved state (cars, session, columns) until the feed
has a session of its own, instead of the feed's still empty model; this needs the column spec the
framework keeps in the state file (``resumed_column_spec``, this project's core only; on the
original framework the service starts from the empty model, as that framework's plugins do).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from twisted.logger import Logger

from livetiming.messages import TimingMessage
from livetiming.racing import Stat
from livetiming.service import BaseService, DuePublisher
from livetiming.service.plugins.carobama import ctd
from livetiming.service.plugins.carobama.capture import CaptureWriter, redact_url
from livetiming.service.plugins.carobama.model import EventKind
from livetiming.service.plugins.carobama.options import (  # noqa: F401
    Options,
    create_argument_parser,
    parse_options,
)
from livetiming.service.plugins.carobama.pitwall import PitWall
from livetiming.service.plugins.carobama.upstream import UpstreamConnection

VERSION = "0.1.0"

ATTRIBUTION = {
    "emperor": ["Emperor Servers / Assetto Corsa Server Manager", None],
    "bmi": ["BMI Leisure", None],
}

#: Hostile frames logged per minute before the rest are only counted.
BAD_FRAME_LOG_LIMIT = 10

#: Events people watch for: published within the framework's urgent interval (about 50 ms on
#: this project's core) instead of waiting for the next ``--publish-interval`` slot.
URGENT_EVENTS = frozenset({
    EventKind.LAP, EventKind.PIT_IN, EventKind.PIT_OUT, EventKind.FLAG, EventKind.DRIVER_CHANGE,
    EventKind.SESSION_CHANGE, EventKind.SESSION_STATE, EventKind.SESSION_END,
})


class ResumedDisplay:
    """The state a service restarted with ``-s`` saved: shown until the feed has a session.

    ``columns`` and ``track_data_spec`` are the specs the saved state was rendered with,
    ``cars`` and ``session`` its table and session block.
    """

    def __init__(self, columns: list, track_data_spec: list[str], cars: list, session: dict):
        self.columns = columns
        self.track_data_spec = track_data_spec
        self.cars = cars
        self.session = session

    @classmethod
    def of(cls, service: Any) -> ResumedDisplay | None:
        """What ``service`` resumed, or None: no ``-s``, a framework that keeps no specs in the
        state file, no cars, or rows that do not fit the saved columns."""
        # Both are extensions of this project's core; the original framework has neither.
        columns = getattr(service, "resumed_column_spec", None)
        track_data_spec = getattr(service, "resumed_track_data_spec", None)
        state = getattr(service, "state", None)
        if not columns or track_data_spec is None or not isinstance(state, dict):
            return None
        cars = state.get("cars")
        if not cars or not isinstance(cars, list) or any(
                not isinstance(car, list) or len(car) != len(columns) for car in cars):
            return None
        session = state.get("session")
        return cls([_exact_column(column) for column in columns], list(track_data_spec), cars,
                   dict(session) if isinstance(session, dict) else {})

    def race_state(self, feed_text: str, connection: dict[str, Any]) -> dict:
        """The saved cars and session, with the feed's health in ``connection`` and in the
        ``Feed`` track data value."""
        session = dict(self.session)
        track_data = list(session.get("trackData") or [])
        if self.track_data_spec[-1:] == ["Feed"] \
                and len(track_data) == len(self.track_data_spec):
            track_data[-1] = feed_text
            session["trackData"] = track_data
        session["connection"] = connection
        return {"cars": [list(car) for car in self.cars], "session": session}


def _exact_column(column: list) -> Stat | tuple:
    """A saved column as the ``Stat`` with exactly that tuple, else the raw tuple."""
    try:
        return Stat(tuple(column))
    except ValueError:
        return tuple(column)


def set_log_context(**fields: Any) -> None:
    """Add fields (upstream source, session) to every log line, where the framework supports it.

    The original framework has no such hook; there this does nothing.
    """
    try:
        from livetiming.service.logs import LOG_CONTEXT
    except ImportError:
        return
    LOG_CONTEXT.update(fields)


def make_feed(options: Options) -> Any:
    """The feed state machine for ``options.source``."""
    if options.source == "emperor":
        from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed

        return EmperorFeed(team_tag=options.team)
    if options.source == "bmi":
        from livetiming.service.plugins.carobama.feeds.bmi import BMIFeed, venue_from_url

        return BMIFeed(pit_threshold=options.pit_threshold,
                       venue=options.venue or venue_from_url(options.url))
    raise ValueError(f"the {options.source!r} source is not available in this version of carobama")


class QueuedMessages(TimingMessage):
    """Hands the messages the feed produced since the last update to the framework."""

    def __init__(self, queue: list[list]):
        self.queue = queue

    def process(self, oldState: dict, newState: dict) -> list[list]:
        """All queued messages, oldest last; the queue is emptied."""
        drained = list(self.queue)
        self.queue.clear()
        return drained


class FrameProblemLog:
    """Logs bad upstream frames one line each, at most ``limit`` per minute."""

    def __init__(self, log: Logger, limit: int = BAD_FRAME_LOG_LIMIT):
        self.log = log
        self.limit = limit
        self.window_start: float | None = None
        self.logged = 0
        self.suppressed = 0

    def report(self, now: float, reason: str) -> None:
        """Log (or count, when over the limit) one bad frame."""
        if self.window_start is None or now - self.window_start >= 60:
            if self.suppressed:
                self.log.warn("{n} more bad upstream frames in the last minute (not logged)",
                              n=self.suppressed)
            self.window_start, self.logged, self.suppressed = now, 0, 0
        if self.logged < self.limit:
            self.logged += 1
            self.log.warn("Ignored an upstream frame: {reason}", reason=reason)
        else:
            self.suppressed += 1


class Service(DuePublisher, BaseService):
    """Live timing from an Emperor Servers (ACSM) race-control or BMI karting websocket."""

    auto_poll = False
    log = Logger(namespace="carobama")

    def __init__(self, args: Any, extra_args: list[str] | None = None):
        self.options: Options = parse_options(extra_args or [])
        super().__init__(args, extra_args)
        self.attribution = ATTRIBUTION.get(self.options.source)
        set_log_context(source=self.options.source)
        self.min_publish_interval = self.options.publish_interval
        # The original framework's set_due_publish() takes no argument; ours accepts urgent=True.
        self._urgent_supported = "urgent" in inspect.signature(self.set_due_publish).parameters
        self.feed = make_feed(self.options)
        #: The ``-s`` state, shown until the feed has a session (None: show the feed's model).
        self._resumed = ResumedDisplay.of(self)
        self._queued_messages: list[list] = []
        self._message_generator = QueuedMessages(self._queued_messages)
        self._published_laps: dict[str, int] = {}
        self._manifest_key: tuple | None = None
        self._bad_frames = FrameProblemLog(self.log)
        self.capture = None
        if self.options.capture:
            self.capture = CaptureWriter(self.options.capture, self.options.source, self.options.url)
        self.store = None  # the database (store/): every frame, session, lap, pit stop and message
        if self.options.database:
            from livetiming.service.plugins.carobama.store import Store

            self.store = Store(self.options.database, source=self.options.source,
                               upstream_url=self.options.url, service_uuid=getattr(self, "uuid", None),
                               version=VERSION, log=self.log)
        self.upstream_status: dict[str, Any] = {"state": "connecting", "last_frame_at": None}
        self.upstream = UpstreamConnection(
            self.options.url, self._on_frame, self._on_status,
            origin=self.options.origin, handshake=self.options.handshake,
            stale_after=self.options.stale_after,
        )
        #: Called with ``(events, now)`` after every upstream frame (the pit wall listens here).
        self.feed_listeners: list[Any] = []
        self.pitwall = PitWall(self)

    @classmethod
    def create_argument_parser(cls):
        """The plugin's options, shown by ``livetiming-service carobama --help``."""
        return create_argument_parser()

    # ----- running ---------------------------------------------------------------

    def start(self) -> None:
        """Connect upstream once the reactor runs, then run the framework."""
        from twisted.internet import reactor

        self.log.info("carobama {version}: {source} feed from {url}", version=VERSION,
                      source=self.options.source, url=redact_url(self.options.url))
        reactor.callWhenRunning(self.upstream.start)
        reactor.callWhenRunning(self.pitwall.start)
        reactor.addSystemEventTrigger("before", "shutdown", self._stop_upstream)
        if self.store is not None:
            reactor.addSystemEventTrigger("before", "shutdown", self.store.close, self.feed.model)
        reactor.addSystemEventTrigger("before", "shutdown", self.pitwall.stop)
        super().start()

    def _stop_upstream(self):
        if self.capture is not None:
            self.capture.close()
        return self.upstream.stop()

    def _now(self) -> float:
        clock = getattr(self, "clock", None)
        return clock.seconds() if clock is not None else time.time()

    # ----- upstream --------------------------------------------------------------

    def _on_frame(self, text: str, t: float) -> None:
        if self.capture is not None:
            try:
                self.capture.write(text, t)
            except OSError as error:
                self.log.error("Capture file write failed, journal stopped: {error}", error=error)
                self.capture = None
        now = self._now()
        self.upstream_status["last_frame_wall"] = now
        events = self.feed.receive(text, now)
        for event in events:
            if event.kind in (EventKind.BAD_FRAME, EventKind.UNKNOWN_EVENT):
                if event.kind == EventKind.BAD_FRAME:
                    self._bad_frames.report(now, event.text)
                else:
                    self.log.debug("Ignored upstream event: {text}", text=event.text)
        changes = [event for event in events if event.kind == EventKind.SESSION_CHANGE]
        if changes:
            set_log_context(session=self.feed.model.session.name)
            if any(not event.data.get("initial") for event in changes):
                self._begin_new_session()
        self._queued_messages.extend(ctd.messages(events))
        if self.store is not None:
            self.store.record(text, t, now, events, self.feed.model)
        for listener in self.feed_listeners:
            try:
                listener(events, now)
            except Exception:
                self.log.failure("A feed listener failed")
        self._ask_publish(any(event.kind in URGENT_EVENTS for event in events))

    def _ask_publish(self, urgent: bool) -> None:
        """Ask the framework for a publication; urgently where it supports that (ours does)."""
        if urgent and self._urgent_supported:
            self.set_due_publish(urgent=True)
        else:
            self.set_due_publish()

    def _begin_new_session(self) -> None:
        """A new session or heat upstream: analysis and recording start again (where the framework can)."""
        start_new_session = getattr(self, "start_new_session", None)
        if start_new_session is not None:
            start_new_session()

    def _on_status(self, status: dict) -> None:
        previous = self.upstream_status.get("state")
        self.upstream_status.update(status)
        if status.get("state") != previous:
            self.set_due_publish()

    def connection_summary(self, now: float | None = None) -> dict[str, Any]:
        """How fresh the upstream data is, for the ``connection`` entry of the session."""
        now = self._now() if now is None else now
        last = self.upstream_status.get("last_frame_wall")
        return {
            "state": self.upstream_status.get("state", "connecting"),
            "lastFrameAgo": round(now - last, 1) if last is not None else None,
            "attempt": self.upstream_status.get("attempt"),
        }

    def _connection_text(self, summary: dict[str, Any]) -> str:
        state = summary["state"]
        ago = summary["lastFrameAgo"]
        if state == "connected":
            return "live" if ago is None or ago < 5 else f"quiet ({ago:.0f} s)"
        if state == "stale":
            return f"stale ({ago:.0f} s)" if ago is not None else "stale"
        if state in ("reconnecting", "connecting") and summary.get("attempt"):
            return f"{state} (attempt {summary['attempt']})"
        return state

    # ----- what the framework asks for -------------------------------------------

    def getName(self) -> str:
        if self.options.source == "bmi" and self.options.venue:
            return self.options.venue
        return ctd.name(self.feed.model)

    def getDefaultDescription(self) -> str:
        return ctd.description(self.feed.model) or "Waiting for the upstream feed"

    def getColumnSpec(self) -> list:
        resumed = self._showing_resumed()
        return resumed.columns if resumed is not None else ctd.column_spec(self.feed.model)

    def getTrackDataSpec(self) -> list[str]:
        resumed = self._showing_resumed()
        if resumed is not None:
            return list(resumed.track_data_spec)
        return list(ctd.track_data_spec(self.feed.model)) + ["Feed"]

    def _showing_resumed(self) -> ResumedDisplay | None:
        """The resumed state while the feed has no session yet; dropped for good once it has."""
        if self._resumed is not None and self.feed.model.session.generation:
            self._resumed = None
        return self._resumed

    def getPollInterval(self) -> float:
        return self.min_publish_interval

    def getVersion(self) -> str:
        return VERSION

    def getWebResource(self) -> Any:
        """The pit-wall page, for this framework's optional standalone-port hook (``pitwall/``)."""
        return self.pitwall.framework_resource()

    def getExtraMessageGenerators(self) -> list:
        return [self._message_generator]

    def getRaceState(self) -> dict:
        model = self.feed.model
        self._check_manifest()
        for entry in model.entries:
            laps = entry.lap_count
            entry.last_lap_is_new = laps != self._published_laps.get(entry.key, laps)
            self._published_laps[entry.key] = laps
        now = self._now()
        summary = self.connection_summary(now)
        resumed = self._showing_resumed()
        if resumed is not None:
            return resumed.race_state(self._connection_text(summary), summary)
        session = ctd.session(model, now)
        session["trackData"] = list(session.get("trackData", [])) + [self._connection_text(summary)]
        session["connection"] = summary
        return {"cars": ctd.cars(model, self.getColumnSpec()), "session": session}

    def _check_manifest(self) -> None:
        """Republish the manifest (and re-align message generators) when it changes."""
        key = (self.getName(), self.getDescription(), tuple(map(_column_key, self.getColumnSpec())),
               tuple(self.getTrackDataSpec()))
        if key == self._manifest_key:
            return
        columns_changed = self._manifest_key is None or key[2] != self._manifest_key[2]
        self._manifest_key = key
        if columns_changed:
            reset = getattr(self, "_reset_message_generators", None)
            if reset is not None:
                reset()
        self.publishManifest()


def _column_key(column: Any) -> tuple:
    value = getattr(column, "value", column)
    return tuple(value)
