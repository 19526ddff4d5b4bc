"""Running the replay and the service for pit-wall tests, and reading the page's socket.

Every wait has a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import websocket  # websocket-client

from tests.support.processes import BIN, Process, ServiceProcess

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
REPLAY_LINE = re.compile(r"carobama-replay listening on (ws://127\.0\.0\.1:(\d+)/)")
PITWALL_LINE = re.compile(r"Pit wall page for uuid:(\S+) at (http://[\d.]+:(\d+)/)")
T71_LINE = re.compile(r"Timing71 stream \(t71\) for uuid:(\S+) listening on port:(\d+)")


class Replay(Process):
    """``carobama-replay`` as a subprocess; ``url`` is its race-control websocket URL."""

    def __init__(self, capture: Path | str, *args: str, port: int = 0, path: str = "api/race-control"):
        super().__init__([str(BIN / "carobama-replay"), str(capture), "--port", str(port), *args])
        found = self.wait_for_line(REPLAY_LINE, stream="stdout", timeout=30)
        self.url = found.group(1) + path
        self.port = int(found.group(2))


class PitWallService(ServiceProcess):
    """The carobama service in standalone mode; knows its page URL (and t71 port when asked)."""

    def __init__(self, upstream_url: str, *args: str, env: dict | None = None):
        super().__init__("carobama", "--url", upstream_url, "--publish-interval", "0.2", *args, env=env)
        found = self.wait_for_line(PITWALL_LINE, stream="stderr", timeout=30)
        self.page_url = found.group(2)
        self.page_port = int(found.group(3))
        self.t71_port = None
        if "--t71-port" in args:
            self.t71_port = int(self.wait_for_line(T71_LINE, stream="stderr", timeout=30).group(2))


class JsonSocket:
    """A websocket whose text frames are JSON objects (the page's socket, the t71 stream)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.ws = websocket.create_connection(url, timeout=timeout)

    def recv(self, timeout: float = 5.0) -> dict:
        """The next message; TimeoutError after ``timeout`` seconds."""
        self.ws.settimeout(timeout)
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException as error:
            raise TimeoutError("no frame within the deadline") from error

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        """Receive until ``predicate(message)``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message within the deadline")
            message = self.recv(remaining)
            if predicate(message):
                return message

    def send(self, message: dict) -> None:
        """Send one JSON object."""
        self.ws.send(json.dumps(message))

    def close(self) -> None:
        """Close the connection."""
        try:
            self.ws.close()
        except Exception:
            pass


def truth_of(name: str) -> dict:
    """The simulator's truth for a fixture capture."""
    return json.loads((CAPTURES / f"{name}.truth.json").read_text())


def expected_table(truth: dict) -> list[dict]:
    """Per car in classification order: number, laps, last and best lap, current driver."""
    by_id = {car["car_id"]: car for car in truth["cars"]}
    rows = []
    for car_id in truth["order"]:
        car = by_id[car_id]
        current = next((d for d in car["drivers"] if d["guid"] == car["current_driver"]), None)
        rows.append({"Num": car["number"], "Laps": car["laps"], "Last": car["last_lap"],
                     "Best": car["best_lap"], "Driver": current["name"] if current else None})
    return rows
