"""A WebSocket client factory that keeps reconnecting to its upstream."""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger


class ReconnectingWebSocketClientFactory(ReconnectingClientFactory, WebSocketClientFactory):
    """An autobahn client factory that reconnects with backoff (1 s up to 30 s).

    Unlike the original framework's, the backoff resets once a connection has
    opened, so a flaky upstream is retried promptly every time; and WebSocket
    pings can be enabled (``ping_interval``/``ping_timeout`` seconds) so a
    silent half-open socket is noticed. Use with ``autobahn.twisted.websocket.connectWS``.
    """

    log = Logger()
    maxDelay = 30
    initialDelay = 1.0
    factor = 2.0

    def __init__(self, url: str, *args, ping_interval: float = 0, ping_timeout: float = 0, **kwargs):
        WebSocketClientFactory.__init__(self, url, *args, **kwargs)
        self.delay = self.initialDelay
        if ping_interval:
            self.setProtocolOptions(autoPingInterval=ping_interval,
                                    autoPingTimeout=ping_timeout or ping_interval)

    def buildProtocol(self, addr):
        protocol = WebSocketClientFactory.buildProtocol(self, addr)
        original_on_open = protocol.onOpen

        def on_open(*args, **kwargs):
            self.resetDelay()
            self.delay = self.initialDelay
            return original_on_open(*args, **kwargs)

        protocol.onOpen = on_open
        return protocol

    def resetDelay(self) -> None:
        """Forget previous failures: the next reconnect waits the initial delay."""
        ReconnectingClientFactory.resetDelay(self)
        self.delay = self.initialDelay

    def clientConnectionFailed(self, connector, reason):
        self.log.warn("Connection to {url} failed: {reason}", url=self.url,
                      reason=reason.getErrorMessage())
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

    def clientConnectionLost(self, connector, reason):
        self.log.warn("Connection to {url} lost: {reason}", url=self.url,
                      reason=reason.getErrorMessage())
        ReconnectingClientFactory.clientConnectionLost(self, connector, reason)
