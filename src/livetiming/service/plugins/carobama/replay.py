"""``carobama-replay``: play a capture file back as a websocket server.

The replay server stands in for an upstream timing websocket (Emperor/ACSM race control or a BMI
heat feed) in demos, integration tests and bug reproductions::

    carobama-replay CAPTURE [--port N] [--host 127.0.0.1] [--speed X] [--loop] [--start-at SECONDS]
                    [--content DIR]

Behaviour, chosen to look like the real manager to a client:

* It binds to loopback by default, accepts any path and offers no subprotocol or compression.
* Every new connection is played from the start of the capture (or from ``--start-at``): each frame
  is sent ``(t - start_at) / speed`` seconds after the connection opened; ``--speed 0`` or ``inf``
  sends as fast as the client reads. Frames before ``--start-at`` are skipped, not fast-forwarded.
  A frame whose ``t`` is earlier than its predecessor's is sent right after it.
* ``--loop`` starts over (from ``--start-at``) one capture-second after the last frame; without it
  the connection stays open and silent after the last frame, like a quiet server.
* What clients send is ignored (the manager never reads its socket); pings are answered.
* Like gorilla's default upgrader used by the manager, a request whose ``Origin`` host differs from
  its ``Host`` header is refused with 403 (``--any-origin`` turns that off); no Origin is fine.
* The server pings every ``--ping-interval`` seconds (10 s like the manager; 0 disables).
* ``--content DIR`` also serves the files under ``DIR`` as ``/content/...`` over plain HTTP on the
  same port, as the manager serves its content folder (``DIR/tracks/<track>/<layout>/map.png`` is
  then ``/content/tracks/<track>/<layout>/map.png``). WebSocket upgrades still play the capture on
  any path; other paths are 404, directories are not listed. Each HTTP request is logged to stderr.

After binding it prints exactly one line to stdout, ``carobama-replay listening on
ws://127.0.0.1:<port>/``, and flushes it (``--port 0`` picks a free port; tests parse that line).
Diagnostics go to stderr.

Memory: the parsed capture is one shared list of ``(t, utf-8 bytes)``; each connection holds only
an index and a timer. Sending is flow-controlled: the player is registered as a push producer on
the connection's transport, so a slow client pauses it instead of growing the write buffer beyond
about one batch (at most 256 frames or 1 MiB, plus a single frame however large).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from zope.interface import implementer

from livetiming.service.plugins.carobama.capture import read_capture

__all__ = [
    "MAX_PAYLOAD",
    "ContentRoot",
    "ReplayServerFactory",
    "ReplayServerProtocol",
    "content_site",
    "load_replay_frames",
    "main",
    "parse_speed",
]

#: Largest frame/message the server accepts or sends (bytes).
MAX_PAYLOAD = 64 * 1024 * 1024
#: Capture-seconds of silence between the end of the capture and the next loop.
LOOP_GAP = 1.0
#: A player yields to the reactor after this many frames or bytes sent in one go.
BATCH_FRAMES = 256
BATCH_BYTES = 1 << 20

Frame = tuple[float, bytes]

log = Logger(namespace="carobama.replay")


def load_replay_frames(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any] | None, list[Frame], dict[str, int]]:
    """Read a capture into the shared frame list a :class:`ReplayServerFactory` plays.

    Returns ``(header, frames, skipped)``: the capture header (or None), a list of
    ``(t, utf-8 bytes)`` in file order (encoded once, shared by every connection), and the
    reader's counts of skipped lines by reason.
    """
    header, reader = read_capture(path)
    with reader:
        frames = [(t, data.encode("utf-8", "surrogatepass")) for t, data in reader]
    return header, frames, dict(reader.skipped)


def parse_speed(text: str) -> float:
    """Parse ``--speed``: a positive factor, or ``0``/``inf`` for as fast as possible (returns inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError("speed must be >= 0 (0 or inf = as fast as possible)")
    return math.inf if value == 0 else value


@implementer(IPushProducer)
class _Player:
    """Plays the shared frame list to one connection, on the factory's clock, flow-controlled."""

    def __init__(self, proto: ReplayServerProtocol, factory: ReplayServerFactory) -> None:
        self.proto = proto
        self.factory = factory
        self.clock = factory.clock
        self.frames = factory.frames
        self.first = factory.first_index
        self.index = self.first
        self.scale = 0.0 if math.isinf(factory.speed) else 1.0 / factory.speed
        self.origin = 0.0
        self.cycles = 0
        self.sent = 0
        self.paused_at: float | None = None
        self.stopped = False
        self.call: IDelayedCall | None = None

    def start(self) -> None:
        self.origin = self.clock.seconds()
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = self.clock.callLater(max(0.0, delay), self._pump)

    def _pump(self) -> None:
        self.call = None
        if self.stopped or self.paused_at is not None:
            return
        frames, n = self.frames, len(self.frames)
        if self.first >= n:
            return  # nothing to play
        base = self.factory.start_at
        now = self.clock.seconds()
        batch_frames = batch_bytes = 0
        while True:
            if self.index >= n:
                if not self.factory.loop:
                    return  # stay connected and silent, like a quiet server
                last_t = max(frames[n - 1][0], base)
                self.origin += (last_t - base + LOOP_GAP) * self.scale
                self.index = self.first
                self.cycles += 1
                self._schedule(0.0)  # always yield to the reactor between cycles
                return
            t, payload = frames[self.index]
            due = self.origin + (t - base) * self.scale
            if due > now:
                self._schedule(due - now)
                return
            self.proto.sendMessage(payload, isBinary=False)
            self.index += 1
            self.sent += 1
            self.factory.frames_sent += 1
            batch_frames += 1
            batch_bytes += len(payload)
            if self.stopped or self.paused_at is not None:
                return  # the write filled the transport buffer: resumeProducing continues
            if batch_frames >= BATCH_FRAMES or batch_bytes >= BATCH_BYTES:
                self._schedule(0.0)
                return

    # IPushProducer
    def pauseProducing(self) -> None:
        """The client reads slower than we send: stop until the transport drains."""
        if self.paused_at is None:
            self.paused_at = self.clock.seconds()
            if self.call is not None and self.call.active():
                self.call.cancel()
            self.call = None

    def resumeProducing(self) -> None:
        """The transport drained: continue, shifting the schedule by the time spent paused."""
        if self.paused_at is None or self.stopped:
            return
        self.origin += self.clock.seconds() - self.paused_at
        self.paused_at = None
        self._schedule(0.0)

    def stopProducing(self) -> None:
        """The connection is going away."""
        self.stopped = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


def _same_origin(request: ConnectionRequest) -> bool:
    """gorilla/websocket's default rule: no Origin, or an Origin whose host equals the Host header."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        origin_host = urlsplit(origin).netloc
    except ValueError:
        return False
    return origin_host.lower() == request.headers.get("host", "").strip().lower()


class ReplayServerProtocol(WebSocketServerProtocol):
    """One client of the replay server: gets its own playback of the shared frames."""

    factory: ReplayServerFactory
    player: _Player | None = None

    def onConnect(self, request: ConnectionRequest) -> None:
        """Record the request, apply the same-origin rule, and accept without a subprotocol."""
        self.factory.requests.append(request)
        if self.factory.on_client_connect is not None:
            self.factory.on_client_connect(request)
        if self.factory.same_origin and not _same_origin(request):
            log.info(
                "replay refused {peer}: origin {origin!r} does not match host {host!r}",
                peer=request.peer,
                origin=request.headers.get("origin"),
                host=request.headers.get("host"),
            )
            raise ConnectionDeny(403, "Forbidden")
        return None

    def onOpen(self) -> None:
        """Start playing from the beginning (or ``start_at``) of the capture."""
        self.factory.connections.add(self)
        self.player = _Player(self, self.factory)
        self.registerProducer(self.player, True)
        log.info("replay client connected {peer}", peer=self.peer)
        self.player.start()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Ignore what clients send (the manager never reads); tests may observe it."""
        if self.factory.on_client_message is not None:
            self.factory.on_client_message(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Stop this client's player."""
        self.factory.connections.discard(self)
        if self.player is not None:
            self.player.stopProducing()
            log.info("replay client gone {peer} after {sent} frames", peer=self.peer, sent=self.player.sent)


class ReplayServerFactory(WebSocketServerFactory):
    """Websocket server factory that plays ``frames`` to every client; usable in-process.

    ``frames`` is a sequence of ``(t, data)`` (``data`` as ``bytes`` in UTF-8 or ``str``), shared
    read-only by all connections. ``speed`` scales time (``inf`` or 0 = as fast as possible),
    ``loop`` restarts at the end, ``start_at`` skips frames with ``t`` below it, ``clock`` is the
    ``IReactorTime`` used for scheduling (default: the global reactor; tests pass a
    :class:`twisted.internet.task.Clock`). ``same_origin`` refuses cross-origin requests with 403
    like the manager. ``ping_interval`` makes the server ping like the manager (None/0 = off).

    Hooks for tests: ``on_client_connect(request)`` and ``on_client_message(proto, payload,
    is_binary)``; ``requests`` keeps the last 100 connection requests, ``connections`` the open
    protocols, ``frames_sent`` a running total. :meth:`drop_connections` aborts every client (with
    ``stopListening`` on the port, that is a server crash).
    """

    noisy = False

    protocol = ReplayServerProtocol

    def __init__(
        self,
        frames: Sequence[tuple[float, bytes | str]],
        speed: float = 1.0,
        loop: bool = False,
        clock: IReactorTime | None = None,
        *,
        start_at: float = 0.0,
        same_origin: bool = True,
        ping_interval: float | None = None,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        super().__init__(server="carobama-replay")
        if speed == 0:
            speed = math.inf
        if not speed > 0:
            raise ValueError("speed must be > 0, 0 or inf")
        if start_at < 0 or not math.isfinite(start_at):
            raise ValueError("start_at must be a finite number >= 0")
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        if _is_frame_list(frames):
            self.frames: list[Frame] = frames  # type: ignore[assignment]  # shared, not copied
        else:
            self.frames = [
                (float(t), d if isinstance(d, bytes) else d.encode("utf-8", "surrogatepass"))
                for t, d in frames
            ]
        self.speed = float(speed)
        self.loop = bool(loop)
        self.start_at = float(start_at)
        self.first_index = next(
            (i for i, (t, _) in enumerate(self.frames) if t >= self.start_at), len(self.frames)
        )
        self.same_origin = same_origin
        self.on_client_connect: Callable[[ConnectionRequest], object] | None = None
        self.on_client_message: Callable[[ReplayServerProtocol, bytes, bool], object] | None = None
        self.requests: deque[ConnectionRequest] = deque(maxlen=100)
        self.connections: set[ReplayServerProtocol] = set()
        self.frames_sent = 0
        self.setProtocolOptions(
            maxFramePayloadSize=max_payload,
            maxMessagePayloadSize=max_payload,
            autoPingInterval=ping_interval or 0,
            autoPingTimeout=0,
            # no autobahn handshake timers: they run on the global reactor, not on ``clock``
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
        )

    def drop_connections(self) -> None:
        """Abort every open client connection (no close handshake), as a crashing server would."""
        for proto in list(self.connections):
            proto.dropConnection(abort=True)


def _is_frame_list(frames: Sequence[tuple[float, bytes | str]]) -> bool:
    """True when ``frames`` is already a list of ``(float, bytes)`` that can be shared as is."""
    return isinstance(frames, list) and all(
        isinstance(f, tuple) and isinstance(f[1], bytes) and isinstance(f[0], float) for f in frames
    )


class _Upgrade(WebSocketResource):
    """autobahn's hand-over of an HTTP upgrade request to the replay factory, made safe for it.

    Before the hand-over the HTTP channel stops being the connection's producer (so the player can
    register itself for flow control) and its idle timeout is switched off (a quiet replay must not
    be cut by the web server).
    """

    def render(self, request: Request) -> Any:
        """Detach the HTTP channel, then let autobahn run the handshake on the raw connection."""
        channel = request.channel
        if getattr(channel, "transport", None) is not None:
            channel.setTimeout(None)
            channel.transport.unregisterProducer()
        return super().render(request)


class _Files(File):
    """Static files whose directories are 404 instead of an HTML listing."""

    def directoryListing(self) -> IResource:
        """No listings: the manager does not give them either."""
        return notFound()


class ContentRoot(Resource):
    """Root of the replay's web site: WebSocket upgrades play the capture, ``/content/`` is files.

    Built only with ``--content``; without it the factory listens directly, as before.
    """

    def __init__(self, factory: ReplayServerFactory, content_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.websocket = _Upgrade(factory)
        self.content = _Files(os.fspath(content_dir))
        self.content.indexNames = []

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        """Route a request: an upgrade on any path, ``content/...`` to the files, else 404."""
        upgrade = request.getHeader(b"upgrade")
        if upgrade is not None and upgrade.strip().lower() == b"websocket":
            return self.websocket
        log.info("replay HTTP {method} {uri}", method=request.method.decode("ascii", "replace"),
                 uri=request.uri.decode("ascii", "replace"))
        return self.content if path == b"content" else notFound()


def content_site(factory: ReplayServerFactory, content: str | os.PathLike[str]) -> Site:
    """A web ``Site`` that plays ``factory`` to WebSocket clients and serves ``content`` as ``/content/``."""
    site = Site(ContentRoot(factory, content))
    site.noisy = False
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # logged by ContentRoot
    return site


def listen(factory: ReplayServerFactory, port: int, host: str, content: str | None = None) -> Any:
    """Listen with ``factory`` on ``host:port``; with ``content``, through :func:`content_site`."""
    from twisted.internet import reactor

    served = factory if content is None else content_site(factory, content)
    return reactor.listenTCP(port, served, interface=host)  # type: ignore[attr-defined]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carobama-replay",
        description="Play a carobama capture (raw upstream journal) back as a websocket server.",
    )
    parser.add_argument("capture", help="capture file (.jsonl or .jsonl.gz)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--speed",
        type=parse_speed,
        default=1.0,
        help="time factor: 2 = twice as fast; 0 or inf = as fast as possible (default 1)",
    )
    parser.add_argument("--loop", action="store_true", help="start over after the last frame")
    parser.add_argument(
        "--start-at", type=float, default=0.0, metavar="SECONDS", help="skip frames with t below SECONDS"
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="send a ping this often, like the manager (default 10; 0 = never)",
    )
    parser.add_argument(
        "--any-origin", action="store_true", help="accept cross-origin requests (the manager refuses them)"
    )
    parser.add_argument(
        "--content",
        metavar="DIR",
        default=None,
        help="also serve DIR's files as /content/... over HTTP on the same port, like the manager",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carobama-replay`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.start_at < 0 or not math.isfinite(args.start_at):
        print("carobama-replay: --start-at must be >= 0", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("carobama-replay: --port must be 0..65535", file=sys.stderr)
        return 2
    if args.content is not None and not os.path.isdir(args.content):
        print(f"carobama-replay: --content {args.content}: not a directory", file=sys.stderr)
        return 2
    try:
        header, frames, skipped = load_replay_frames(args.capture)
    except OSError as exc:
        print(f"carobama-replay: cannot read {args.capture}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    predicate.setLogLevelForNamespace("carobama.replay", LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )

    source = (header or {}).get("source", "unknown source")
    skipped_text = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"
    print(
        f"carobama-replay: {len(frames)} frames from {args.capture} ({source});"
        f" skipped lines: {skipped_text}",
        file=sys.stderr,
    )
    factory = ReplayServerFactory(
        frames,
        speed=args.speed,
        loop=args.loop,
        clock=reactor,  # type: ignore[arg-type]
        start_at=args.start_at,
        same_origin=not args.any_origin,
        ping_interval=args.ping_interval or None,
    )
    try:
        port = listen(factory, args.port, args.host, args.content)
    except CannotListenError as exc:
        print(
            f"carobama-replay: cannot listen on {args.host}:{args.port}: {exc.socketError}", file=sys.stderr
        )
        return 1
    address = port.getHost()
    host = f"[{address.host}]" if ":" in address.host else address.host
    sys.stdout.write(f"carobama-replay listening on ws://{host}:{address.port}/\n")
    sys.stdout.flush()
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
