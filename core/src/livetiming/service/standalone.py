"""Standalone mode: the service is its own WebSocket server.

Clients (the Timing71 desktop client, scripts) connect on any path and
receive ``[channel, message]`` JSON text frames; what they send is ignored.
Each client has a bounded send queue: a client that stops reading is dropped
(with a log line) instead of holding up the others or growing memory.

Web pages (optional extension, not in the original framework): a service that
has a ``getWebResource()`` method returning a ``twisted.web`` resource also
serves plain HTTP on the standalone port. The port then runs a ``twisted.web``
``Site`` (:func:`make_standalone_site`) whose root sends every WebSocket
upgrade, on any path, to the legacy protocol above, and every other request
to the service's resource. The service's resource may keep WebSocket paths of
its own by having an ``isWebSocketPath(path: bytes) -> bool`` method; upgrades
on those paths are routed into the service's resource instead.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from zope.interface import implementer

#: A client whose unsent frames exceed this many bytes is dropped.
MAX_CLIENT_BACKLOG = 8 * 1024 * 1024
#: A client that has not taken any data for this many seconds is dropped.
MAX_CLIENT_STALL = 30.0


@implementer(IPushProducer)
class StandaloneServerProtocol(WebSocketServerProtocol):
    """One connected client: announces itself to the service and queues frames it cannot take yet."""

    log = Logger()

    def onConnect(self, request):
        # No subprotocol is ever selected: browsers that offer one would abort.
        self.peer_label = request.peer
        return None

    def onOpen(self):
        self._paused = False
        self._paused_since: float | None = None
        self._backlog: deque[tuple[str, bool, bytes]] = deque()
        self._backlog_bytes = 0
        self.registerProducer(self, True)
        self.factory.register(self)

    def onMessage(self, payload, isBinary):
        """Client frames are ignored, as in the original protocol."""

    def onClose(self, wasClean, code, reason):
        self.factory.unregister(self)

    # IPushProducer: the transport tells us when its buffer is full or drained.
    def pauseProducing(self):
        self._paused = True
        self._paused_since = self.factory.clock.seconds()

    def resumeProducing(self):
        self._paused = False
        self._paused_since = None
        while self._backlog and not self._paused:
            _topic, _coalesce, data = self._backlog.popleft()
            self._backlog_bytes -= len(data)
            self.sendMessage(data, False)

    def stopProducing(self):
        self._backlog.clear()
        self._backlog_bytes = 0

    def send_frame(self, topic: str, data: bytes, coalesce: bool) -> None:
        """Send now, or queue while the client is not reading.

        For ``coalesce`` topics (retained state) only the newest queued frame
        is kept: a slow client skips intermediate states, never the latest.
        """
        if not self._paused and not self._backlog:
            self.sendMessage(data, False)
            return
        if coalesce:
            for index, (queued_topic, queued_coalesce, queued) in enumerate(self._backlog):
                if queued_coalesce and queued_topic == topic:
                    del self._backlog[index]
                    self._backlog_bytes -= len(queued)
                    break
        self._backlog.append((topic, coalesce, data))
        self._backlog_bytes += len(data)
        stalled_for = self.factory.clock.seconds() - (self._paused_since or self.factory.clock.seconds())
        if self._backlog_bytes > self.factory.max_backlog or stalled_for > self.factory.max_stall:
            self.log.warn("Dropping standalone client {peer}: it stopped reading "
                          "({size} bytes waiting, stalled {stalled:.0f} s)", peer=self.peer_label,
                          size=self._backlog_bytes, stalled=stalled_for)
            self._backlog.clear()
            self._backlog_bytes = 0
            self.factory.unregister(self)
            self.dropConnection(abort=True)


class StandaloneServerFactory(WebSocketServerFactory):
    """Keeps the connected clients and broadcasts frames to them."""

    protocol = StandaloneServerProtocol
    log = Logger()

    def __init__(self, on_client_open: Callable[[StandaloneServerProtocol], None],
                 max_backlog: int = MAX_CLIENT_BACKLOG, max_stall: float = MAX_CLIENT_STALL,
                 clock=None):
        super().__init__()
        self.noisy = False
        self.setProtocolOptions(maxMessagePayloadSize=1024 * 1024, maxFramePayloadSize=1024 * 1024)
        self.clients: list[StandaloneServerProtocol] = []
        self.on_client_open = on_client_open
        self.max_backlog = max_backlog
        self.max_stall = max_stall
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock

    def register(self, client: StandaloneServerProtocol) -> None:
        """A client finished its handshake."""
        self.clients.append(client)
        self.log.info("Standalone client connected from {peer} ({n} connected)",
                      peer=client.peer_label, n=len(self.clients))
        self.on_client_open(client)

    def unregister(self, client: StandaloneServerProtocol) -> None:
        """A client went away (or was dropped)."""
        if client in self.clients:
            self.clients.remove(client)
            self.log.info("Standalone client {peer} disconnected ({n} connected)",
                          peer=client.peer_label, n=len(self.clients))

    def broadcast(self, topic: str, message: dict, retain: bool = False) -> None:
        """Send ``[topic, message]`` to every client, serialised once."""
        if not self.clients:
            return
        data = json.dumps([topic, message], separators=(",", ":")).encode("utf-8")
        for client in list(self.clients):
            client.send_frame(topic, data, retain)


class StandalonePublisher:
    """Publisher interface over the standalone server (WAMP options are ignored)."""

    def __init__(self, factory: StandaloneServerFactory):
        self.factory = factory

    def publish(self, topic: str, message: dict, retain: bool = False) -> None:
        """Broadcast one wrapped message."""
        self.factory.broadcast(topic, message, retain)


# ----- optional web pages on the standalone port ------------------------------------------------


def is_websocket_upgrade(request) -> bool:
    """True when an HTTP request asks to become a WebSocket (``Upgrade: websocket``)."""
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.strip().lower() == b"websocket"


class UpgradeResource(WebSocketResource):
    """autobahn's ``WebSocketResource``, first detaching the HTTP channel from the connection.

    twisted.web's HTTP channel registers itself as the connection's producer and runs an idle
    timeout; both are released here so the WebSocket protocol can register its own producer (flow
    control) and is never timed out by the channel it replaced.
    """

    def render(self, request):
        channel = request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            channel.setTimeout(None)
            transport.unregisterProducer()
        return super().render(request)


class StandaloneRoot(Resource):
    """Root of the standalone ``Site``: upgrades to the legacy protocol, the rest to the service."""

    def __init__(self, factory: StandaloneServerFactory, web_resource: IResource):
        super().__init__()
        self.websocket = UpgradeResource(factory)
        self.web = web_resource

    def _claimed(self, request) -> bool:
        claims = getattr(self.web, "isWebSocketPath", None)
        return bool(claims is not None and claims(request.path))

    def getChildWithDefault(self, path, request):
        """Route one request: legacy WebSocket, or the service's resource tree."""
        if is_websocket_upgrade(request) and not self._claimed(request):
            return self.websocket
        # Hand the whole path to the service's resource, as if it were the root.
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self.web


class QuietSite(Site):
    """A ``Site`` that writes no access log line per request (page assets would flood the log)."""

    def log(self, request):
        """Requests are not logged."""


def make_standalone_site(factory: StandaloneServerFactory, web_resource: IResource) -> Site:
    """A ``Site`` serving ``web_resource`` that still speaks the legacy protocol to WebSocket clients."""
    site = QuietSite(StandaloneRoot(factory, web_resource))
    site.noisy = False
    site.displayTracebacks = False
    return site
