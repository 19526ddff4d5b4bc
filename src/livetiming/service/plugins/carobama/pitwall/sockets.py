"""WebSocket plumbing of the pit wall: the page's socket and the modern Timing71 stream.

Both send JSON text frames to browsers that may stop reading (a laptop lid closes, a tab is put
to sleep). Every client has a bounded queue: while its connection is congested, frames of a
*coalescing* kind (state, positions, manifest …) replace the queued frame of the same kind, so a
slow client skips intermediate updates but never the latest one; a client whose queue still grows
past ``max_backlog`` bytes is dropped. Fast clients are never held up by slow ones.

The framework's own standalone server has the same policy; this module does not import it so that
the plugin keeps running on the original framework.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Site
from zope.interface import implementer

__all__ = [
    "JsonClient",
    "JsonServerFactory",
    "QuietSite",
    "UpgradeResource",
    "encode",
]

#: A client whose queued frames exceed this many bytes is dropped.
MAX_BACKLOG = 4 * 1024 * 1024
#: Largest frame a page may send (it only sends small commands).
MAX_INBOUND = 64 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (``NaN`` is refused rather than sent: browsers cannot parse it)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@implementer(IPushProducer)
class JsonClient(WebSocketServerProtocol):
    """One browser: a bounded, coalescing send queue; inbound JSON handed to the factory."""

    log = Logger(namespace="carobama.pitwall")

    def onConnect(self, request):
        """Accept any path; select no subprotocol (browsers that offer one would still connect)."""
        self.peer_label = request.peer
        return None

    def onOpen(self):
        self._paused = False
        self._backlog: deque[tuple[str | None, bytes]] = deque()
        self._backlog_bytes = 0
        self.registerProducer(self, True)
        self.factory.opened(self)

    def onClose(self, wasClean, code, reason):
        self.factory.closed(self)

    def onMessage(self, payload, isBinary):
        """A command from the page (JSON object); anything else is ignored."""
        if isBinary:
            return
        try:
            message = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(message, dict):
            self.factory.received(self, message)

    # IPushProducer: the transport says when its buffer is full or drained.
    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        while self._backlog and not self._paused:
            _kind, data = self._backlog.popleft()
            self._backlog_bytes -= len(data)
            self.sendMessage(data, False)

    def stopProducing(self):
        self._backlog.clear()
        self._backlog_bytes = 0

    def send_frame(self, data: bytes, kind: str | None = None) -> None:
        """Send now, or queue while the connection is congested.

        ``kind`` names a coalescing kind: a queued frame of the same kind is replaced. None queues
        every frame (events such as collisions).
        """
        if not getattr(self, "_backlog", None) and not getattr(self, "_paused", False):
            self.sendMessage(data, False)
            return
        if kind is not None:
            for index, (queued_kind, queued) in enumerate(self._backlog):
                if queued_kind == kind:
                    del self._backlog[index]
                    self._backlog_bytes -= len(queued)
                    break
        self._backlog.append((kind, data))
        self._backlog_bytes += len(data)
        if self._backlog_bytes > self.factory.max_backlog:
            self.log.warn("Dropping pit-wall client {peer}: it stopped reading ({size} bytes waiting)",
                          peer=self.peer_label, size=self._backlog_bytes)
            self._backlog.clear()
            self._backlog_bytes = 0
            self.factory.closed(self)
            self.dropConnection(abort=True)

    def send_json(self, message: dict[str, Any], kind: str | None = None) -> None:
        """Encode and send one message to this client only."""
        self.send_frame(encode(message), kind)


class JsonServerFactory(WebSocketServerFactory):
    """Keeps its clients and broadcasts JSON to them, each message encoded once.

    ``on_open(client)`` runs when a client's handshake completes (send it a snapshot);
    ``on_message(client, message)`` for each JSON object a client sends.
    """

    protocol = JsonClient
    log = Logger(namespace="carobama.pitwall")

    def __init__(self, name: str, on_open: Callable[[JsonClient], None],
                 on_message: Callable[[JsonClient, dict], None] | None = None,
                 max_backlog: int = MAX_BACKLOG):
        super().__init__()
        self.noisy = False
        self.name = name
        self.setProtocolOptions(maxMessagePayloadSize=MAX_INBOUND, maxFramePayloadSize=MAX_INBOUND,
                                autoPingInterval=10, autoPingTimeout=30)
        self.clients: list[JsonClient] = []
        self.on_open = on_open
        self.on_message = on_message
        self.max_backlog = max_backlog

    def opened(self, client: JsonClient) -> None:
        """A client completed its handshake."""
        self.clients.append(client)
        self.log.info("{name} client connected from {peer} ({n} connected)", name=self.name,
                      peer=client.peer_label, n=len(self.clients))
        try:
            self.on_open(client)
        except Exception:
            self.log.failure("Could not greet a {name} client", name=self.name)

    def closed(self, client: JsonClient) -> None:
        """A client went away or was dropped."""
        if client in self.clients:
            self.clients.remove(client)
            self.log.info("{name} client {peer} disconnected ({n} connected)", name=self.name,
                          peer=client.peer_label, n=len(self.clients))

    def received(self, client: JsonClient, message: dict) -> None:
        """A JSON object from a client."""
        if self.on_message is not None:
            try:
                self.on_message(client, message)
            except Exception:
                self.log.failure("A {name} client's message failed", name=self.name)

    def broadcast(self, message: dict[str, Any], kind: str | None = None,
                  exclude: JsonClient | None = None) -> None:
        """Send ``message`` to every client but ``exclude`` (encoded once)."""
        if not self.clients:
            return
        data = encode(message)
        for client in list(self.clients):
            if client is not exclude:
                client.send_frame(data, kind)


class UpgradeResource(WebSocketResource):
    """autobahn's ``WebSocketResource``, first detaching twisted.web's HTTP channel.

    The HTTP channel is registered as the connection's producer and runs an idle timeout; both are
    released so that the WebSocket protocol can register its own producer (flow control above).
    """

    def render(self, request):
        channel = request.channel
        transport = getattr(channel, "transport", None)
        if transport is not None:
            channel.setTimeout(None)
            transport.unregisterProducer()
        return super().render(request)


class QuietSite(Site):
    """A ``Site`` without an access-log line per request."""

    def log(self, request):
        """Requests are not logged."""
