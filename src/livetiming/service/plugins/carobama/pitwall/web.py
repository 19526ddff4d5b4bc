"""HTTP resources of the pit wall: the page's files, its socket and the cached track image.

URL layout (the same on the standalone port and on ``--web-port``)::

    /                     index.html
    /<file>, /js/<file>   the page's files from the package's ``web/`` folder (no listing)
    /pitwall/socket       the page's own WebSocket (JSON; see ``pitwall/__init__.py``)
    /pitwall/track.png    the track map image the service fetched from the upstream (404 if none)

Every response forbids framing and inline script (Content-Security-Policy): the page renders all
upstream text with ``textContent``, and the policy is a second line of defence.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from twisted.web.resource import Resource

__all__ = ["CONTENT_SECURITY_POLICY", "PitWallResource", "web_root"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

SOCKET_PATH = b"/pitwall/socket"


def web_root() -> Path:
    """The folder holding the page's files (package data)."""
    return Path(str(resources.files("livetiming.service.plugins.carobama") / "web"))


def _headers(request, content_type: str) -> None:
    request.setHeader(b"Content-Type", content_type.encode("ascii"))
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode("ascii"))


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(404)
        _headers(request, "text/plain; charset=utf-8")
        return b"not found\n"


class _Bytes(Resource):
    """One file's bytes with a content type; GET and HEAD only."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str):
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request):
        _headers(request, self.content_type)
        return self.body

    def render_HEAD(self, request):
        _headers(request, self.content_type)
        return b""


class StaticFolder(Resource):
    """Files of one folder (and its sub-folders) by exact name: no listing, no dot-files, no ``..``."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def getChild(self, path: bytes, request):
        if path == b"":
            path = b"index.html"
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return _NotFound()
        if not name or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name:
            return _NotFound()
        target = self.folder / name
        if target.is_dir():
            return StaticFolder(target)
        content_type = CONTENT_TYPES.get(target.suffix)
        if content_type is None or not target.is_file():
            return _NotFound()
        return _Bytes(target.read_bytes(), content_type)


class TrackImage(Resource):
    """The cached map image of the current track, or 404."""

    isLeaf = True

    def __init__(self, hub: Any):
        super().__init__()
        self.hub = hub

    def render_GET(self, request):
        image = self.hub.track_image()
        if image is None:
            return _NotFound().render(request)
        _headers(request, "image/png")
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return image


class PitWallResource(StaticFolder):
    """Root of the page: static files plus ``/pitwall/socket`` and ``/pitwall/track.png``.

    ``isWebSocketPath`` tells the framework's standalone server (the ``getWebResource()`` hook)
    which upgrade requests are the page's rather than legacy Timing71 clients'.
    """

    def __init__(self, hub: Any, socket_resource: Resource, folder: Path | None = None):
        super().__init__(folder or web_root())
        api = Resource()
        api.putChild(b"socket", socket_resource)
        api.putChild(b"track.png", TrackImage(hub))
        self.putChild(b"pitwall", api)

    def isWebSocketPath(self, path: bytes) -> bool:
        """True for the page's own socket path."""
        return path.rstrip(b"/") == SOCKET_PATH
