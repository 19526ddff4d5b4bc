"""A small synchronous WebSocket client for tests of the legacy standalone protocol."""

from __future__ import annotations

import json
import socket
import time

import websocket  # websocket-client

from livetiming.service.compression import decompress_state


class StandaloneClient:
    """Connects to a standalone service and decodes its ``[channel, message]`` frames."""

    def __init__(self, url: str, timeout: float = 10.0, **options):
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        self.frames: list[tuple[float, str, dict]] = []

    def recv(self, timeout: float = 5.0) -> tuple[str, dict]:
        """The next frame as (channel, message); raises TimeoutError after ``timeout``."""
        self.ws.settimeout(timeout)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException as error:
            raise TimeoutError("no frame within the deadline") from error
        channel, message = json.loads(raw)
        self.frames.append((time.monotonic(), channel, message))
        return channel, message

    def wait_for(self, predicate, timeout: float = 10.0) -> tuple[str, dict]:
        """Receive until a frame satisfies ``predicate(channel, message)``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching frame within the deadline")
            channel, message = self.recv(remaining)
            if predicate(channel, message):
                return channel, message

    def wait_for_state(self, uuid: str, timeout: float = 10.0) -> dict:
        """The next state frame, decompressed."""
        _channel, message = self.wait_for(
            lambda c, m: c == f"livetiming.service.{uuid}", timeout)
        return decompress_state(message["payload"])

    def close(self) -> None:
        """Close the connection."""
        try:
            self.ws.close()
        except Exception:
            pass


def raw_handshake(port: int, extra_headers: bytes = b"", path: str = "/anything",
                  rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """Open a WebSocket on 127.0.0.1 by hand and return (socket, response head).

    Nothing reads the socket afterwards unless the caller does: a client that stops reading.
    ``rcvbuf`` shrinks the receive buffer before connecting, so the server's buffers fill quickly.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\n".encode("ascii") +
                 b"Host: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n" + extra_headers + b"\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response.split(b"\r\n\r\n")[0]


def rows_fit_manifest(state: dict, manifest: dict) -> bool:
    """Whether every car row of ``state`` has one cell per column of ``manifest``.

    The manifest is published a second after the column spec changes (the framework coalesces
    manifest publishes), and a new manifest can arrive before the next state, so for a moment a
    client can hold rows of the old spec with columns of the new one, or the other way round.
    Readers that index rows by column title skip such pairs instead of reading the wrong cells.
    """
    width = len(manifest["colSpec"])
    return all(len(row) == width for row in state.get("cars", []))
