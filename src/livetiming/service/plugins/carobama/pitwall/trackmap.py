"""The track map image, fetched from the upstream manager once and kept by the service.

The manager serves ``/content/tracks/<track>[/<layout>]/map.png`` on the same host as its
race-control websocket (emperor-race-control §5.4). The browser never talks to the upstream: the
service fetches the image over HTTP(S), checks that it really is a PNG of sane size, keeps it in
memory and serves it to the page itself. A failed fetch is retried after ``retry_after`` seconds
at the earliest (the page meanwhile draws the outline learned from the cars' positions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger

__all__ = ["PNG_MAGIC", "TrackImageCache", "http_base"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Largest image accepted (bytes).
MAX_IMAGE = 16 * 1024 * 1024

log = Logger(namespace="carobama.pitwall")

#: ``fetch(url) -> Deferred[(status, body)]``.
Fetch = Callable[[str], Deferred]


def http_base(upstream_url: str) -> str | None:
    """``http(s)://host[:port]`` of a ``ws(s)://`` upstream URL (None when it has no host)."""
    parts = urlsplit(upstream_url)
    if not parts.hostname:
        return None
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never send the upstream's credentials along
    return f"{scheme}://{netloc}"


def agent_fetch(reactor: Any, user_agent: str, timeout: float = 15.0) -> Fetch:
    """A :data:`Fetch` with twisted's HTTP client (redirects followed, body size capped)."""
    from twisted.web.client import Agent, BrowserLikeRedirectAgent, readBody
    from twisted.web.http_headers import Headers

    agent = BrowserLikeRedirectAgent(Agent(reactor, connectTimeout=timeout))

    def fetch(url: str) -> Deferred:
        headers = Headers({b"User-Agent": [user_agent.encode("ascii", "replace")], b"Accept": [b"image/png"]})
        request = agent.request(b"GET", url.encode("ascii"), headers)

        def got(response):
            length = response.length
            if isinstance(length, int) and length > MAX_IMAGE:
                response.deliverBody(_Discard())
                return (response.code, b"")
            return readBody(response).addCallback(lambda body: (response.code, body))

        request.addCallback(got)
        request.addTimeout(timeout, reactor)
        return request

    return fetch


class _Discard:
    """A body protocol that drops what it is given (oversized responses)."""

    def makeConnection(self, transport):
        transport.stopProducing()

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        pass


class TrackImageCache:
    """In-memory cache of map images by upstream path, filled in the background.

    ``want(path)`` starts a fetch unless the image is cached, being fetched, or failed less than
    ``retry_after`` seconds ago; ``on_ready(path)`` is called when an image arrives.
    """

    def __init__(self, base_url: str | None, fetch: Fetch | None, clock: Any,
                 on_ready: Callable[[str], None] | None = None, retry_after: float = 300.0):
        self.base_url = base_url
        self.fetch = fetch
        self.clock = clock
        self.on_ready = on_ready
        self.retry_after = retry_after
        self.images: dict[str, bytes] = {}
        self._pending: set[str] = set()
        self._failed_at: dict[str, float] = {}

    def get(self, path: str | None) -> bytes | None:
        """The cached image for ``path``, or None."""
        return self.images.get(path) if path else None

    def url_of(self, path: str) -> str | None:
        """Absolute upstream URL of ``path`` (each segment percent-encoded)."""
        if self.base_url is None:
            return None
        return self.base_url + quote(path, safe="/")

    def want(self, path: str | None) -> None:
        """Make sure ``path`` is cached or on its way."""
        if not path or path in self.images or path in self._pending or self.fetch is None:
            return
        url = self.url_of(path)
        if url is None:
            return
        failed = self._failed_at.get(path)
        if failed is not None and self.clock.seconds() - failed < self.retry_after:
            return
        self._pending.add(path)
        try:
            request = self.fetch(url)
        except Exception as error:  # a malformed URL, for instance
            self._failed(path, url, str(error))
            return
        request.addCallbacks(lambda result: self._done(path, url, result),
                             lambda failure: self._failed(path, url, failure.getErrorMessage()))

    def _done(self, path: str, url: str, result: tuple[int, bytes]) -> None:
        status, body = result
        if status != 200:
            self._failed(path, url, f"HTTP {status}")
        elif not body.startswith(PNG_MAGIC) or len(body) > MAX_IMAGE:
            self._failed(path, url, "not a PNG image of acceptable size")
        else:
            self._pending.discard(path)
            self._failed_at.pop(path, None)
            self.images[path] = body
            log.info("Track map image {url} cached ({size} bytes)", url=url, size=len(body))
            if self.on_ready is not None:
                self.on_ready(path)

    def _failed(self, path: str, url: str, reason: str) -> None:
        self._pending.discard(path)
        self._failed_at[path] = self.clock.seconds()
        log.info("No track map image from {url} ({reason}); the page draws the cars' outline",
                 url=url, reason=reason)
