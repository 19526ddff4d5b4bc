"""The plugin's connection to its upstream timing websocket (Emperor/ACSM race control, BMI heat).

:class:`UpstreamConnection` keeps one autobahn websocket client connected for as long as the
service runs and hands every received frame to a callback. It is built around the facts in
``shared/spec/emperor-race-control.md`` §1 and §8 and ``bmi-heat.md``:

* **Origin.** The manager's upgrader applies gorilla's same-origin rule: an ``Origin`` header whose
  host differs from the ``Host`` header is refused with 403, so we send
  ``Origin: https://<host>`` (``http`` for ``ws://``). autobahn always writes ``Host: host:port``,
  which would not equal a browser-style origin (``https://host``) behind a proxy that forwards the
  Host header as received, so the request's ``Host`` line is rewritten to the browser form (port
  only when it is not the scheme's default) and the Origin is built from the very same text.
* **Liveness by data flow.** The manager never answers pings, so we never send any; a connection
  is declared stale when no frame arrived for ``stale_after`` seconds (the same watchdog also
  bounds a hung TCP connect or opening handshake) and is then dropped and reconnected. The server's
  own pings (every 10 s) are answered by autobahn automatically and do *not* count as data.
* **Large frames.** ``200`` snapshots can reach megabytes; frames and messages up to
  ``max_payload`` (64 MiB by default) are accepted. Per-message deflate is never offered.
* **Handshake.** BMI venues may need a text greeting such as ``START -1@venue``; when
  ``handshake`` is given it is sent after every (re)connect.
* **Reconnects** use jittered exponential backoff: 1 s doubling to a 30 s cap, each delay drawn
  uniformly from ``[base * (1 - jitter), base]`` (so the cap is never exceeded), reset to 1 s after
  a *good* connection, i.e. one that opened and delivered at least one frame (an accept-then-close
  loop therefore still backs off).
* **Time** (backoff, staleness, the ``t`` given to ``on_frame``, status timestamps) comes only from
  the injectable ``clock`` (an ``IReactorTime``), and jitter from the injectable ``rng``, so unit
  tests run on :class:`twisted.internet.task.Clock` without sleeping. The default clock schedules
  on the reactor but reads :func:`time.monotonic`, so ``t`` never jumps with the wall clock.

Frames are delivered by calling ``on_frame`` directly from the protocol's ``onMessage``, not via
``callLater(0)``: in Twisted the read loop *is* the reactor thread, so deferring the call would not
take any work off it, it would only add a queue of delayed calls that grows without bound when the
consumer is slow, and risk reordering against status changes. Consumers must therefore be quick
(the feeds are pure state machines, which is cheap) and push anything slow (database writes, file
compression) to a thread or a batch. An exception raised by ``on_frame`` is logged and does not
affect the connection.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from livetiming.service.plugins.carobama.capture import redact_url

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "MonotonicClock",
    "UpstreamConnection",
    "UpstreamTarget",
    "parse_upstream_url",
]

#: Largest accepted frame and message (bytes); the spec asks for at least 16 MiB.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024

_DEFAULT_PORTS = {"ws": 80, "wss": 443}

FrameCallback = Callable[[str, float], object]
StatusCallback = Callable[[dict[str, Any]], object]


class _Random(Protocol):
    def random(self) -> float: ...


@implementer(IReactorTime)
class MonotonicClock:
    """An ``IReactorTime`` that schedules on ``reactor`` but reads :func:`time.monotonic`.

    The Twisted reactor's ``seconds()`` is wall-clock time; timestamps taken from it jump when the
    system clock is stepped. Scheduling is relative (``callLater`` delays), so mixing the two is
    safe, and timestamps handed to consumers stay monotonic. (The returned delayed calls are the
    reactor's: their ``getTime()`` is on the reactor's time base, not on :meth:`seconds`.)
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def seconds(self) -> float:
        """Monotonic seconds (arbitrary origin)."""
        return time.monotonic()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        """Schedule on the wrapped reactor."""
        return self._reactor.callLater(delay, f, *args, **kw)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """Delayed calls of the wrapped reactor."""
        return self._reactor.getDelayedCalls()


class UpstreamTarget:
    """Where and how to connect, derived once from the configured URL.

    Attributes: ``secure`` (wss), ``host`` (lower-case, no brackets), ``port``, ``host_header``
    (browser-style ``Host`` value: port only when not the default), ``origin`` (the same-origin
    ``Origin`` value), ``connect_url`` (the URL without user-info, for autobahn), ``log_url``
    (redacted, for logs) and ``authorization`` (a Basic header built from URL user-info, or None).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"upstream URL must be ws:// or wss://, got {redact_url(url)!r}")
        if not parts.hostname:
            raise ValueError(f"upstream URL has no host: {redact_url(url)!r}")
        if parts.fragment:
            raise ValueError("upstream URL must not have a fragment")
        self.secure = scheme == "wss"
        host = parts.hostname
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        self.host = host
        self.port = parts.port or _DEFAULT_PORTS[scheme]
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is None or parts.port == _DEFAULT_PORTS[scheme]:
            self.host_header = bracketed
        else:
            self.host_header = f"{bracketed}:{parts.port}"
        self.origin = f"{'https' if self.secure else 'http'}://{self.host_header}"
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        self.connect_url = f"{scheme}://{bracketed}:{self.port}{path}{query}"
        self.log_url = redact_url(url)
        self.authorization: str | None = None
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(creds.encode("utf-8")).decode("ascii")


def parse_upstream_url(url: str) -> UpstreamTarget:
    """Validate an upstream ``ws://``/``wss://`` URL and derive Host, Origin and log forms.

    Raises :class:`ValueError` (with a redacted URL in the message) for anything else.
    """
    return UpstreamTarget(url)


class _UpstreamProtocol(WebSocketClientProtocol):
    """autobahn client protocol that forwards everything to its :class:`UpstreamConnection`."""

    factory: _UpstreamFactory

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Send bytes; the opening request gets a browser-style ``Host`` line (see module doc)."""
        if (
            self.state == self.STATE_CONNECTING
            and data is getattr(self, "http_request_data", None)
            and self.factory.host_header is not None
        ):
            data = _rewrite_host_line(data, self.factory.host_header)
            self.http_request_data = data
        super().sendData(data, sync, chopsize)

    def onOpen(self) -> None:
        self.factory.opened = True
        self.factory.owner._opened(self.factory.generation, self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._message(self.factory.generation, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Keep what explains the end best: the server's Close frame, or why the opening handshake
        # failed (e.g. "403 - Forbidden"). A plain TCP drop is described by the transport failure.
        remote_code = getattr(self, "remoteCloseCode", None)
        if remote_code is not None:
            remote_reason = getattr(self, "remoteCloseReason", None) or ""
            self.factory.close_reason = f"server closed (code={remote_code}, reason={remote_reason!r})"
        elif not self.factory.opened and getattr(self, "wasNotCleanReason", None):
            self.factory.close_reason = str(self.wasNotCleanReason)


def _rewrite_host_line(request: bytes, host_header: str) -> bytes:
    """Replace the ``Host:`` line of an HTTP request head."""
    head, sep, rest = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        if line[:5].lower() == b"host:":
            lines[i] = b"Host: " + host_header.encode("ascii")
            break
    return b"\r\n".join(lines) + sep + rest


class _UpstreamFactory(WebSocketClientFactory):
    noisy = False  # the connection logs its own one-line events
    """One factory per connection attempt; ``generation`` lets stale callbacks be ignored."""

    protocol = _UpstreamProtocol

    def __init__(self, owner: UpstreamConnection, generation: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.generation = generation
        self.host_header: str | None = None
        self.close_reason: str | None = None
        self.opened = False

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.owner._ended(self.generation, _describe(reason, self.close_reason, "connect failed"))

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self.owner._ended(self.generation, _describe(reason, self.close_reason, "connection lost"))


def _describe(reason: Failure, close_reason: str | None, what: str) -> str:
    """One-line human reason for an ended attempt."""
    if close_reason:
        return f"{what}: {close_reason}"
    if isinstance(reason.value, ConnectionDone):
        return f"{what}: closed cleanly"
    return f"{what}: {reason.getErrorMessage()}"


class UpstreamConnection:
    """A self-healing websocket client for one upstream timing feed.

    ``on_frame(text, t)`` receives each frame's text (binary frames and invalid UTF-8 decoded with
    replacement characters) and ``t``, the seconds since the *first* connection of this object
    opened, on ``clock``. It is called synchronously from the read loop: keep it fast (see module
    doc). ``on_status(status)`` receives a new dict on every state change::

        {"state": "connecting" | "connected" | "stale" | "reconnecting" | "stopped",
         "since": <clock time of this change>,
         "last_frame_at": <clock time of the last frame, or None>,
         "attempt": <1-based attempt number since the last good connection>,
         "reason": <why: "start", a drop reason, "stop", ...>}

    (Frames do not produce status calls; read :attr:`status` for a fresh snapshot.) Keyword
    options: ``origin`` (None = same-origin value derived from the URL, "" = send no Origin),
    ``handshake`` (text sent after each connect), ``stale_after`` (seconds without a frame before
    the connection is dropped), ``clock`` (``IReactorTime``; default: the reactor with a monotonic
    time source), ``log`` (a :class:`twisted.logger.Logger`), ``reactor`` (``IReactorTCP`` and
    ``IReactorSSL`` used to connect; default: the global reactor), ``rng`` (object with
    ``random()``; default :mod:`random`), ``headers`` (extra request headers such as a session
    ``Cookie``; never logged), ``initial_delay``/``max_delay``/``jitter`` (backoff shape),
    ``max_payload`` (bytes) and ``tls_options`` (a client TLS connection creator for wss;
    default: :func:`twisted.internet.ssl.optionsForClientTLS` for the URL's host).

    Every connect, drop and reconnect is logged as exactly one structured line, with the URL
    redacted (no user-info, no query tokens) and never the headers.
    """

    def __init__(
        self,
        url: str,
        on_frame: FrameCallback,
        on_status: StatusCallback,
        *,
        origin: str | None = None,
        handshake: str | None = None,
        stale_after: float = 30.0,
        clock: IReactorTime | None = None,
        log: Logger | None = None,
        reactor: Any = None,
        rng: _Random | None = None,
        headers: Mapping[str, str] | None = None,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        jitter: float = 0.25,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        tls_options: Any = None,
    ) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be > 0")
        if not 0 < initial_delay <= max_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.target = parse_upstream_url(url)
        self._on_frame = on_frame
        self._on_status = on_status
        self.origin = self.target.origin if origin is None else (origin or None)
        self.handshake = handshake
        self.stale_after = float(stale_after)
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else MonotonicClock(reactor)
        self.log = log if log is not None else Logger(namespace="carobama.upstream")
        self._rng: _Random = rng if rng is not None else random.Random()
        self._headers = dict(headers or {})
        if self.target.authorization and not any(k.lower() == "authorization" for k in self._headers):
            self._headers["Authorization"] = self.target.authorization
        self.initial_delay = float(initial_delay)
        self.max_delay = float(max_delay)
        self.jitter = float(jitter)
        self.max_payload = int(max_payload)
        self._tls_options = tls_options

        self._state = "idle"
        self._status: dict[str, Any] = {}
        self._generation = 0
        self._live: int | None = None  # generation of the attempt in progress, if any
        self._proto: _UpstreamProtocol | None = None
        self._connector: Any = None
        self._watchdog: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0  # attempts ended since the last good connection (drives the backoff)
        self._streak = 0  # attempts started since start() or the last good connection
        self._attempt = 0  # 1-based number of the current/next attempt within the streak
        # attempts being closed by stop(): generation -> (waiters, hang-up timer)
        self._closing: dict[int, tuple[list[defer.Deferred[None]], IDelayedCall | None]] = {}
        #: seconds stop() waits for the peer to answer a Close before dropping the connection
        self.close_timeout = 2.0
        self._good = False  # current attempt opened and delivered a frame
        self._epoch: float | None = None  # clock time the first connection opened
        self._last_frame_at: float | None = None
        self._next_delay: float | None = None
        #: counters for monitoring: frames received, connections opened, attempts made
        self.frames_received = 0
        self.connections_opened = 0
        self.attempts_made = 0

    # -- public -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Current state: idle (never started), connecting, connected, stale, reconnecting, stopped."""
        return self._state

    @property
    def status(self) -> dict[str, Any]:
        """A fresh copy of the last status, with ``last_frame_at`` up to date."""
        snap = dict(self._status)
        snap["last_frame_at"] = self._last_frame_at
        return snap

    @property
    def next_retry_delay(self) -> float | None:
        """Seconds of the reconnect delay last scheduled (None before any drop)."""
        return self._next_delay

    def start(self) -> None:
        """Connect now, and keep reconnecting until :meth:`stop`. No-op if already running."""
        if self._state not in ("idle", "stopped"):
            return
        self._failures = 0
        self._streak = 0
        self.log.info(
            "upstream starting {url} (stale after {stale_after} s)",
            url=self.target.log_url,
            stale_after=self.stale_after,
            upstream_event="start",
        )
        self._connect("start")

    def stop(self) -> defer.Deferred[None]:
        """Stop for good: cancel pending reconnects and timers and close the connection cleanly.

        Sends a websocket Close (autobahn drops the TCP connection if the peer, like the manager,
        never answers it). Returns a Deferred that fires once the connection is gone (at once if
        there is none). ``on_status`` gets a final ``stopped``.
        """
        if self._state in ("idle", "stopped"):
            return self._when_closed()
        self._cancel_timers()
        proto, connector, live = self._proto, self._connector, self._live
        self._proto = None
        self._connector = None
        self._live = None
        closing = live is not None and (proto is not None or connector is not None)
        if closing:
            assert live is not None
            self._closing[live] = ([], None)
        self.log.info("upstream stopped {url}", url=self.target.log_url, upstream_event="stop")
        if proto is not None and proto.state == proto.STATE_OPEN:
            try:
                proto.sendClose(code=1000)
            except Exception:
                self.log.failure("upstream close failed", upstream_event="close_error")
                self._hang_up(proto, None)
            else:
                # The manager never reads its socket, so it will not answer our Close: hang up
                # ourselves if the connection is still there after close_timeout.
                if live in self._closing:
                    timer = self._clock.callLater(self.close_timeout, self._hang_up, proto, None)
                    self._closing[live] = (self._closing[live][0], timer)
        else:
            self._hang_up(proto, connector)
        done = self._when_closed()
        self._set_state("stopped", "stop")
        return done

    def _when_closed(self) -> defer.Deferred[None]:
        """A Deferred that fires when every connection stop() is closing is gone."""
        if not self._closing:
            return defer.succeed(None)
        waiters = [defer.Deferred() for _ in self._closing]
        for (pending, _timer), d in zip(self._closing.values(), waiters, strict=True):
            pending.append(d)
        return defer.gatherResults(waiters).addCallback(lambda _: None)

    # -- attempts ---------------------------------------------------------------------------

    def _connect(self, reason: str) -> None:
        self._retry = None
        self._generation += 1
        gen = self._generation
        self._live = gen
        self._good = False
        self._streak += 1
        self._attempt = self._streak
        self.attempts_made += 1
        self._set_state("connecting", reason)
        if self._live != gen:  # on_status called stop()
            return

        factory = _UpstreamFactory(
            self,
            gen,
            self.target.connect_url,
            origin=self.origin,
            headers=dict(self._headers),
        )
        factory.host_header = self.target.host_header
        factory.setProtocolOptions(
            maxFramePayloadSize=self.max_payload,
            maxMessagePayloadSize=self.max_payload,
            perMessageCompressionOffers=[],
            utf8validateIncoming=False,  # we decode with replacement ourselves
            autoPingInterval=0,  # the manager never answers pings: liveness is data flow
            openHandshakeTimeout=0,  # bounded by our own watchdog, on the injectable clock
            closeHandshakeTimeout=0,  # stop() bounds the close handshake on the injectable clock
        )
        timeout = max(1.0, min(self.stale_after, 30.0))
        self._arm_watchdog(gen)
        try:
            if self.target.secure:
                tls = self._tls_options
                if tls is None:
                    from twisted.internet.ssl import optionsForClientTLS

                    tls = optionsForClientTLS(self.target.host)
                connector = self._reactor.connectSSL(
                    self.target.host, self.target.port, factory, tls, timeout=timeout
                )
            else:
                connector = self._reactor.connectTCP(
                    self.target.host, self.target.port, factory, timeout=timeout
                )
        except Exception as exc:  # never let the reconnect loop die
            self._ended(gen, f"connect failed: {exc.__class__.__name__}: {exc}")
            return
        if self._live == gen:  # a synchronous failure may already have ended this attempt
            self._connector = connector

    def _opened(self, gen: int, proto: _UpstreamProtocol) -> None:
        if gen != self._live:
            self._hang_up(proto, None)
            return
        now = self._clock.seconds()
        if self._epoch is None:
            self._epoch = now
        self._proto = proto
        self.connections_opened += 1
        self._set_state("connected", "open")
        if self._live != gen:  # on_status called stop()
            return
        self._arm_watchdog(gen)
        self.log.info(
            "upstream connected to {url} (attempt {attempt})",
            url=self.target.log_url,
            attempt=self._attempt,
            upstream_event="connected",
        )
        if self.handshake is not None:
            proto.sendMessage(self.handshake.encode("utf-8"), isBinary=False)

    def _message(self, gen: int, payload: bytes, is_binary: bool) -> None:
        if gen != self._live:
            return
        now = self._clock.seconds()
        self._last_frame_at = now
        self.frames_received += 1
        if not self._good:  # a good connection: the backoff starts again from the beginning
            self._good = True
            self._failures = 0
            self._streak = 0
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self.stale_after)
        else:
            self._arm_watchdog(gen)
        text = payload.decode("utf-8", errors="replace")
        epoch = self._epoch if self._epoch is not None else now
        try:
            self._on_frame(text, now - epoch)
        except Exception:
            self.log.failure("upstream on_frame callback failed", upstream_event="callback_error")

    def _arm_watchdog(self, gen: int) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = self._clock.callLater(self.stale_after, self._stale, gen)

    def _stale(self, gen: int) -> None:
        self._watchdog = None
        if gen != self._live:
            return
        what = "no frame" if self._state == "connected" else "no connection"
        reason = f"stale: {what} for {self.stale_after:g} s"
        proto, connector = self._proto, self._connector
        self._abandon()  # a stale connection is aborted, never closed politely
        self._set_state("stale", reason)
        self._hang_up(proto, connector)
        self._schedule_reconnect(reason)

    def _ended(self, gen: int, reason: str) -> None:
        if gen in self._closing:  # a connection stop() was closing is gone
            waiters, timer = self._closing.pop(gen)
            if timer is not None and timer.active():
                timer.cancel()
            for d in waiters:
                d.callback(None)
            return
        if gen != self._live:
            return
        self._abandon()
        self._schedule_reconnect(reason)

    def _abandon(self) -> None:
        """Forget the current attempt so its late callbacks are ignored."""
        self._live = None
        self._proto = None
        self._connector = None
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None

    def _schedule_reconnect(self, reason: str) -> None:
        if self._state == "stopped":
            return
        self._failures += 1
        delay = self.backoff_delay(self._failures)
        self._next_delay = delay
        self._attempt = self._streak + 1
        # schedule before telling anyone, so that an on_status that calls stop() can cancel it
        self._retry = self._clock.callLater(delay, self._connect, reason)
        self._set_state("reconnecting", reason)
        if self._state != "reconnecting":
            return
        self.log.info(
            "upstream dropped from {url}: {reason}; reconnecting in {delay:.2f} s (attempt {attempt})",
            url=self.target.log_url,
            reason=reason,
            delay=delay,
            attempt=self._attempt,
            upstream_event="dropped",
        )

    def backoff_delay(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive unsuccessful attempts.

        ``base = min(max_delay, initial_delay * 2 ** (failures - 1))`` (1, 2, 4, 8, 16, 30, 30, …
        with the defaults), then jittered down by up to ``jitter`` of itself using ``rng``: the
        result lies in ``[base * (1 - jitter), base]``.
        """
        exponent = min(max(failures - 1, 0), 62)
        base = min(self.max_delay, self.initial_delay * (2.0**exponent))
        return base * (1.0 - self.jitter * self._rng.random())

    # -- helpers ----------------------------------------------------------------------------

    def _hang_up(self, proto: _UpstreamProtocol | None, connector: Any) -> None:
        """Abort a connection (or a connect in progress) without letting an error escape."""
        try:
            if proto is not None:
                proto.dropConnection(abort=True)
            elif connector is not None:
                connector.disconnect()
        except Exception:
            self.log.failure("upstream drop failed", upstream_event="drop_error")

    def _cancel_timers(self) -> None:
        for call in (self._watchdog, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._watchdog = None
        self._retry = None

    def _set_state(self, state: str, reason: str) -> None:
        self._state = state
        self._status = {
            "state": state,
            "since": self._clock.seconds(),
            "last_frame_at": self._last_frame_at,
            "attempt": self._attempt,
            "reason": reason,
        }
        try:
            self._on_status(dict(self._status))
        except Exception:
            self.log.failure("upstream on_status callback failed", upstream_event="callback_error")
