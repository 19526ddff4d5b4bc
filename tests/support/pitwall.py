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


#: A driver name and a chat text that would run script if a page ever parsed them as HTML.
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_CHAT = "<script>alert(2)</script> & <b onmouseover=alert(3)>hi</b>"


def make_xss_capture(path: Path) -> Path:
    """A small Emperor practice capture whose driver name and chat are HTML (for XSS tests)."""
    from livetiming.service.plugins.carobama.sim.emperor import (
        DriverSpec,
        EmperorSimulator,
        SessionSpec,
        make_guid,
        write_capture,
    )

    sim = EmperorSimulator("v2x", seed=71, track="ks_brands_hatch/indy", interval_ms=500,
                           server_name="<i>Hostile</i> League")
    sim.add_car(0, "ks_mazda_mx5_cup", [DriverSpec(make_guid(71), XSS_NAME)], race_number=13, pace=1.0,
                consistency=0.004)
    sim.add_car(1, "ks_mazda_mx5_cup", [DriverSpec(make_guid(72), "Plain Name")], race_number=14,
                pace=1.01, consistency=0.004)
    practice = SessionSpec("Practice", 1, 10, 0, 0, 19, 24, "4_mid_clear", 0, 1, "ks_brands_hatch/indy")
    sim.new_session(0.0, practice, auto_end=False)
    sim.client_connect(0.5)
    sim.connect(1.0, 0)
    sim.connect(1.5, 1)
    sim.load(3.0, 0, release_s=1.0)
    sim.load(3.5, 1, release_s=1.5)
    sim.chat(8.0, 0, XSS_CHAT)
    sim.stop(150.0)
    write_capture(sim.frames(), path, sim.header())
    return path
