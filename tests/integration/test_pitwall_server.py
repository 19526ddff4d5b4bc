"""The pit wall's server side against real processes: page and legacy protocol on one port, the
page's JSON socket, the modern Timing71 stream (timing71-wire §9), WAMP mode's ``--web-port`` and the
fallback when the framework has no ``getWebResource()`` hook.
"""

from __future__ import annotations

import sys
import urllib.request

import pytest

from livetiming.service.compression import decompress_state
from tests.support.pitwall import (
    CAPTURES,
    PITWALL_LINE,
    JsonSocket,
    PitWallService,
    Replay,
    expected_table,
    truth_of,
)
from tests.support.processes import BIN, Process, free_port
from tests.support.wsclient import StandaloneClient

FLAG_STATES = {"none", "green", "white", "chequered", "yellow", "fcy", "code_60", "vsc", "sc", "caution",
               "red", "slow_zone", "code_60_zone"}
MANIFEST_KEYS = {"uuid", "name", "serviceClass", "description", "colSpec", "trackDataSpec", "pollInterval",
                 "hasAnalysis", "hidden", "livetimingVersion"}


@pytest.fixture
def started():
    processes = []
    yield processes
    for proc in reversed(processes):
        proc.stop()


def _get(url: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_page_and_legacy_clients_share_the_standalone_port(started, service_env):
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "0")
    started.append(replay)
    service = PitWallService(replay.url, env=service_env)
    started.append(service)
    assert service.page_port == service.port
    assert not any(PITWALL_LINE.search(line) for line in service.stdout), "announced on stderr"

    status, headers, body = _get(service.page_url)
    assert status == 200 and b'<script type="module" src="js/app.js">' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, headers, _body = _get(service.page_url + "js/app.js")
    assert headers["Content-Type"].startswith("text/javascript")

    # Legacy Timing71 clients: any path still speaks [channel, message].
    for path in ("/", "/some/where?x=1", "/pitwall"):
        client = StandaloneClient(f"ws://127.0.0.1:{service.port}{path}")
        channel, message = client.recv()
        assert channel == f"livetiming.service.{service.uuid}"
        assert decompress_state(message["payload"])["session"]
        client.close()

    # The page's own socket: plain JSON.
    page = JsonSocket(f"ws://127.0.0.1:{service.port}/pitwall/socket")
    hello = page.recv()
    assert hello["type"] == "hello" and hello["uuid"] == service.uuid
    seen: dict[str, dict] = {}

    def remember(message):
        seen[message["type"]] = message
        return False

    manifest = page.wait_for(lambda m: remember(m) or m["type"] == "manifest")["manifest"]
    assert manifest["uuid"] == service.uuid
    truth = expected_table(truth_of("race-v2x"))
    numbers = [row["Num"] for row in truth]
    state = page.wait_for(lambda m: remember(m) or (m["type"] == "state" and [
        car[0] for car in m["state"]["cars"]] == numbers))["state"]
    assert set(state) >= {"cars", "session", "messages"}
    page.wait_for(lambda m: remember(m) or {"map", "health"} <= set(seen))
    assert seen["map"]["map"]["params"]["scale"] > 0
    assert set(seen["map"]["outline"]) == {"line", "cloud"}
    page.send({"type": "focus", "car": numbers[0]})
    detail = page.wait_for(lambda m: m["type"] == "car")["detail"]
    assert detail["car"] == numbers[0] and len(detail["laps"]) == truth[0]["Laps"]
    assert [lap["time"] for lap in detail["laps"]][-1] == pytest.approx(truth[0]["Last"])
    page.close()


def test_t71_stream_sends_manifest_then_state_in_the_modern_shape(started, service_env):
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "0")
    started.append(replay)
    service = PitWallService(replay.url, "--t71-port", str(free_port()), env=service_env)
    started.append(service)
    client = JsonSocket(f"ws://127.0.0.1:{service.t71_port}/")
    first = client.recv()
    assert first["type"] == "MANIFEST_UPDATE"
    manifest = first["manifest"]
    assert MANIFEST_KEYS <= set(manifest) and manifest["uuid"] == service.uuid
    assert ["Last", "laptime", "Last lap time"] in manifest["colSpec"]
    assert ["Best", "laptime", "Best lap time"] in manifest["colSpec"]
    assert ["Last", "time", "Last lap time"] not in manifest["colSpec"]
    assert manifest["colSpec"][0] == ["Num", "text", "Car number"]
    second = client.recv()
    assert second["type"] == "STATE_UPDATE"

    truth = expected_table(truth_of("race-v2x"))
    numbers = [row["Num"] for row in truth]
    columns = manifest["colSpec"]

    def final(message):
        nonlocal columns
        if message["type"] == "MANIFEST_UPDATE":
            columns = message["manifest"]["colSpec"]
            return False
        cars = message["state"]["cars"]
        laps = [column[0] for column in columns].index("Laps")
        # The race plays at full speed: the order can match the truth lap(s) before the end.
        return [car[0] for car in cars] == numbers and [car[laps] for car in cars] == final_laps

    final_laps = [row["Laps"] for row in truth]
    message = second if final(second) else client.wait_for(final, timeout=30)
    state = message["state"]
    assert set(state) == {"cars", "session", "messages", "highlight", "lastUpdated"}
    assert isinstance(state["lastUpdated"], int) and state["lastUpdated"] > 1_000_000_000_000
    assert state["session"]["flagState"] in FLAG_STATES
    assert all(len(car) == len(columns) for car in state["cars"])
    assert state["messages"], "the race produced messages"
    for stamp, category, text, *_rest in state["messages"]:
        assert isinstance(stamp, int) and stamp > 1_000_000_000_000, "milliseconds"
        assert isinstance(category, str) and isinstance(text, str)
    laps = [column[0] for column in columns].index("Laps")
    assert [car[laps] for car in state["cars"]] == [row["Laps"] for row in truth]
    client.close()

    # A second client gets the current manifest and state at once.
    again = JsonSocket(f"ws://127.0.0.1:{service.t71_port}/")
    assert [again.recv()["type"], again.recv()["type"]] == ["MANIFEST_UPDATE", "STATE_UPDATE"]
    again.close()


def test_wamp_mode_serves_the_page_on_web_port(crossbar_router, service_env, started):
    replay = Replay(CAPTURES / "practice-v1.jsonl", "--speed", "0")
    started.append(replay)
    port = free_port()
    env = {**service_env, "LIVETIMING_ROUTER": crossbar_router.url,
           "LIVETIMING_SHARED_SECRET": crossbar_router.secret, "LIVETIMING_AUTH_ID": crossbar_router.authid}
    proc = Process([str(BIN / "livetiming-service"), "carobama", "-v", "--uuid", "pitwallwamp", "--url",
                    replay.url, "--web-port", str(port)], env=env)
    started.append(proc)
    found = proc.wait_for_line(PITWALL_LINE, stream="stderr", timeout=30)
    assert int(found.group(3)) == port and found.group(1) == "pitwallwamp"
    status, _headers, body = _get(found.group(2))
    assert status == 200 and b"Pit wall" in body
    page = JsonSocket(f"ws://127.0.0.1:{port}/pitwall/socket")
    assert page.recv()["type"] == "hello"
    page.wait_for(lambda m: m["type"] == "state" and m["state"]["cars"], timeout=30)
    page.close()


def test_without_the_framework_hook_the_page_gets_its_own_port(started, service_env):
    """The original framework has no getWebResource(): the plugin then serves --web-port itself."""
    replay = Replay(CAPTURES / "practice-v1.jsonl", "--speed", "0")
    started.append(replay)
    script = (
        "import sys\n"
        "from livetiming.service import parse_args\n"
        "from livetiming.service.plugins.carobama import Service\n"
        "del Service.getWebResource\n"
        "args, extra = parse_args(['carobama', '--standalone', '--url', sys.argv[1]])\n"
        "Service(args, extra).start()\n"
    )
    proc = Process([sys.executable, "-c", script, replay.url], env=service_env)
    started.append(proc)
    standalone = int(proc.wait_for_line(r"Standalone server for uuid:\S+ listening on port:(\d+)",
                                        stream="stderr").group(1))
    found = proc.wait_for_line(PITWALL_LINE, stream="stderr")
    assert int(found.group(3)) != standalone
    status, _headers, body = _get(found.group(2))
    assert status == 200 and b"Pit wall" in body
