"""The legacy standalone protocol, checked against a real service process (timing71-wire §1, §8 1-5)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from livetiming.service.compression import decompress_state
from tests.support.processes import REPO, STANDALONE_LINE, ServiceProcess, free_port
from tests.support.wsclient import StandaloneClient, raw_handshake

PLUGIN = "legacy_example"


@pytest.fixture
def service(service_env):
    proc = ServiceProcess(PLUGIN, "--poll", "1", env=service_env)
    yield proc
    proc.stop()


def test_announces_port_once_on_stderr_and_accepts_any_path(service):
    lines = [line for line in service.stderr if STANDALONE_LINE.search(line)]
    assert len(lines) == 1
    assert len(service.uuid) == 32 and int(service.uuid, 16) >= 0
    for path in ("/", "/some/where?x=1", "/ws"):
        client = StandaloneClient(f"ws://127.0.0.1:{service.port}{path}")
        channel, _message = client.recv()
        assert channel == f"livetiming.service.{service.uuid}"
        client.close()
    assert not any(STANDALONE_LINE.search(line) for line in service.stdout)


def test_no_subprotocol_is_selected_even_when_offered(service):
    sock, headers = raw_handshake(service.port, b"Sec-WebSocket-Protocol: wamp.2.json\r\n")
    sock.close()
    assert headers.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-protocol" not in headers.lower()


def test_standalone_port_from_environment(service_env):
    port = free_port()
    proc = ServiceProcess(PLUGIN, env={**service_env, "LIVETIMING_STANDALONE_PORT": str(port)})
    try:
        assert proc.port == port
    finally:
        proc.stop()


def test_first_frame_is_state_then_manifest_within_two_seconds_and_no_analysis(service_env):
    proc = ServiceProcess(PLUGIN, "--poll", "1", "--disable-analysis", env=service_env)
    try:
        _check_state_manifest_and_no_analysis(proc)
    finally:
        proc.stop()


def _check_state_manifest_and_no_analysis(service):
    client = StandaloneClient(service.url)
    channel, first = client.recv(timeout=2)
    assert channel == f"livetiming.service.{service.uuid}"
    assert first["msgClass"] == 8 and first["retain"] is True and isinstance(first["date"], int)
    channel, manifest = client.wait_for(lambda c, m: c == "livetiming.control", timeout=2.5)
    assert manifest["msgClass"] == 2 and "retain" not in manifest
    payload = manifest["payload"]
    assert payload["uuid"] == service.uuid
    assert payload["serviceClass"] == PLUGIN
    assert payload["name"] == "Legacy Example"
    assert payload["colSpec"][0] == ["Num", "text", "Car number"]
    assert ["State", "text"] in payload["colSpec"]
    assert payload["hasAnalysis"] is False
    assert payload["pollInterval"] == 1
    assert payload["source"] == ["Example &copy;", "https://example.invalid/"]
    assert payload["livetimingVersion"]["plugin"] == "0.3.0"
    # Over a few more frames: only state and control channels, never analysis.
    for _ in range(3):
        channel, _message = client.recv(timeout=3)
        assert not channel.startswith("livetiming.analysis")
    client.close()


ANALYSIS_KEYS = {"static", "driver", "messages", "session", "lap", "stint", "car_messages"}


def test_with_analysis_the_seven_keys_arrive_after_connect_and_again_for_a_new_client(service):
    client = StandaloneClient(service.url)
    _channel, manifest = client.wait_for(lambda c, m: c == "livetiming.control", timeout=3)
    assert manifest["payload"]["hasAnalysis"] is True
    prefix = f"livetiming.analysis/{service.uuid}/"
    # Let the service analyse a few updates, then connect a fresh client: it gets every key.
    client.wait_for_state(service.uuid, timeout=5)
    client.wait_for_state(service.uuid, timeout=5)
    second = StandaloneClient(service.url)
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 15
    while set(seen) < ANALYSIS_KEYS and time.monotonic() < deadline:
        channel, message = second.recv(timeout=max(0.1, deadline - time.monotonic()))
        if channel.startswith(prefix):
            assert message["msgClass"] == 7
            seen.setdefault(channel[len(prefix):], message)
    assert ANALYSIS_KEYS <= set(seen), sorted(seen)
    assert seen["static"].get("retain") is True and "retain" not in seen["lap"]
    assert seen["messages"]["payload"].keys() == {"messages"}
    session = seen["session"]["payload"]
    assert {"currentTimestamp", "flagStats", "leaderLap"} <= set(session)
    cars = seen["static"]["payload"]
    for key in ("driver", "stint", "lap", "car_messages"):
        assert set(cars) <= set(seen[key]["payload"]), key
    second.close()
    client.close()


def test_every_frame_is_channel_and_wrapped_message(service):
    client = StandaloneClient(service.url)
    for _ in range(4):
        raw = client.ws.recv()
        frame = json.loads(raw)
        assert isinstance(frame, list) and len(frame) == 2
        channel, message = frame
        assert set(message) <= {"msgClass", "date", "payload", "retain"}
        if channel.startswith(f"livetiming.analysis/{service.uuid}/"):
            assert message["msgClass"] == 7
            continue
        assert channel in ("livetiming.control", f"livetiming.service.{service.uuid}")
        assert message["msgClass"] in (2, 8)
    client.close()


def test_new_client_rebroadcasts_to_existing_clients_and_inbound_frames_are_ignored(service):
    first = StandaloneClient(service.url)
    first.wait_for(lambda c, m: c == "livetiming.control", timeout=3)
    first.ws.send("hello, this is ignored")
    first.ws.send_binary(b"\x00\x01")
    second = StandaloneClient(service.url)
    second.recv()
    # The first client sees the manifest again because the second connected.
    first.wait_for(lambda c, m: c == "livetiming.control", timeout=3)
    first.close()
    second.close()


def test_state_is_republished_every_poll_interval_even_when_unchanged(service):
    client = StandaloneClient(service.url)
    states = 0
    while states < 4:
        channel, _message = client.recv(timeout=3)
        if channel.startswith("livetiming.service."):
            states += 1
    client.close()


def test_state_decompresses_in_python_with_non_ascii_and_non_bmp_names(service):
    client = StandaloneClient(service.url)
    state = client.wait_for_state(service.uuid)
    while not state["cars"]:
        state = client.wait_for_state(service.uuid)
    names = {car[2] for car in state["cars"]}
    assert "Zo\u00eb \U0001F3CE\ufe0f Racer" in names and "\u674e\u96f7" in names
    assert state["session"]["flagState"] == "green"
    assert set(state) == {"cars", "session", "messages", "highlight"}
    client.close()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_state_decompresses_with_javascript_lz_string(service):
    js_dir = REPO / "tests" / "js"
    if not (js_dir / "node_modules" / "lz-string").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "-q"], cwd=js_dir, check=True)
    client = StandaloneClient(service.url)
    payloads = []
    while len(payloads) < 2:
        channel, message = client.recv()
        if channel.startswith("livetiming.service."):
            payloads.append(message["payload"])
    client.close()
    result = subprocess.run(["node", str(js_dir / "decompress.mjs")], input="\n".join(
        json.dumps(p) for p in payloads) + "\n", capture_output=True, text=True, check=True,
        cwd=js_dir)
    decoded = [json.loads(json.loads(line)) for line in result.stdout.split("\n") if line]
    assert decoded == [decompress_state(p) for p in payloads]
    assert any("\U0001F3CE" in car[2] for state in decoded for car in state["cars"])


def test_slow_client_is_dropped_and_others_keep_receiving(service_env):
    proc = ServiceProcess(PLUGIN, "--poll", "0.02", "--cars", "400",
                          env={**service_env, "LIVETIMING_STANDALONE_MAX_STALL": "2"})
    try:
        stalled, headers = raw_handshake(proc.port)
        assert headers.startswith(b"HTTP/1.1 101")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        healthy = StandaloneClient(proc.url)
        proc.wait_for_line(r"Dropping standalone client .* stopped reading", timeout=60)
        # The healthy client is still served after the laggard was dropped.
        healthy.wait_for_state(proc.uuid, timeout=5)
        healthy.wait_for_state(proc.uuid, timeout=5)
        healthy.close()
        stalled.close()
    finally:
        proc.stop()


def test_state_file_is_written_and_resumed_with_initial_state(service_env, tmp_path):
    proc = ServiceProcess(PLUGIN, "--poll", "0.2", env=service_env)
    client = StandaloneClient(proc.url)
    state = client.wait_for_state(proc.uuid)
    while not state["cars"]:
        state = client.wait_for_state(proc.uuid)
    client.close()
    proc.stop()
    state_file = Path(service_env["LIVETIMING_STATE_DIR"]) / f"{proc.uuid}.json"
    saved = json.loads(state_file.read_text())
    assert saved["cars"] and saved["session"]["flagState"] == "green"
    resumed = ServiceProcess(PLUGIN, "-s", str(state_file), "--poll", "30", env=service_env)
    try:
        assert resumed.uuid == proc.uuid
        client = StandaloneClient(resumed.url)
        first = client.wait_for_state(resumed.uuid)
        assert saved["messages"], "the first run produced messages to resume"
        assert all(message in first["messages"] for message in saved["messages"][:20])
        client.close()
    finally:
        resumed.stop()
