"""A small synchronous WebSocket client for tests of the legacy standalone protocol."""

from __future__ import annotations

import json
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
