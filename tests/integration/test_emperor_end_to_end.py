"""Emperor captures → carobama-replay → real loopback websocket → service (standalone) → CTD.

Each capture in tests/fixtures/captures has a ``.truth.json`` written by the simulator that made
it; the published Common Timing Data must end up showing exactly that truth.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from livetiming.service.compression import decompress_state
from tests.support.processes import BIN, Process, ServiceProcess
from tests.support.wsclient import StandaloneClient, rows_fit_manifest

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
REPLAY_LINE = re.compile(r"carobama-replay listening on (ws://127\.0\.0\.1:(\d+)/)")


class Replay(Process):
    """``carobama-replay`` as a subprocess."""

    def __init__(self, capture: Path, *args: str, port: int = 0):
        super().__init__([str(BIN / "carobama-replay"), str(capture), "--port", str(port), *args])
        found = self.wait_for_line(REPLAY_LINE, stream="stdout", timeout=30)
        self.url = found.group(1) + "api/race-control"
        self.port = int(found.group(2))


def truth_of(name: str) -> dict:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text())


def column_index(manifest: dict) -> dict[str, int]:
    return {column[0]: index for index, column in enumerate(manifest["colSpec"])}


def value(cell):
    return cell[0] if isinstance(cell, list) else cell


def expected_rows(truth: dict) -> list[dict]:
    by_id = {car["car_id"]: car for car in truth["cars"]}
    rows = []
    for car_id in truth["order"]:
        car = by_id[car_id]
        current = next((d for d in car["drivers"] if d["guid"] == car["current_driver"]), None)
        rows.append({
            "Num": car["number"],
            "Laps": car["laps"],
            "Last": car["last_lap"],
            "Best": car["best_lap"],
            "Pits": car["pits"],
            "Driver": current["name"] if current else None,
        })
    return rows


def shown_rows(state: dict, index: dict[str, int]) -> list[dict]:
    rows = []
    for car in state["cars"]:
        rows.append({
            "Num": car[index["Num"]],
            "Laps": value(car[index["Laps"]]) or 0,
            "Last": value(car[index["Last"]]) or None,
            "Best": value(car[index["Best"]]) or None,
            "Pits": value(car[index["Pits"]]) if "Pits" in index else None,
            "Driver": value(car[index["Driver"]]),
        })
    return rows


def comparable(rows: list[dict], with_pits: bool) -> list[tuple]:
    return [(r["Num"], r["Laps"], r["Last"], r["Best"], r["Driver"]) + ((r["Pits"],) if with_pits else ())
            for r in rows]


def wait_for_truth(client: StandaloneClient, uuid: str, truth: dict, timeout: float = 40.0):
    """Receive states until the table equals the truth; returns (state, manifest)."""
    manifest = None
    expected = expected_rows(truth)
    with_pits = all(row["Pits"] is not None for row in expected)
    if with_pits:
        for row in expected:
            row["Pits"] = row["Pits"] or 0
    deadline = time.monotonic() + timeout
    last_seen = None
    state = None
    while time.monotonic() < deadline:
        try:
            channel, message = client.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if channel == "livetiming.control":
            manifest = message["payload"]
        elif channel.startswith("livetiming.service."):
            state = decompress_state(message["payload"])
        if manifest is None or state is None or not rows_fit_manifest(state, manifest):
            continue
        last_seen = comparable(shown_rows(state, column_index(manifest)), with_pits)
        if last_seen == comparable(expected, with_pits):
            return state, manifest
    raise AssertionError(f"table never matched the truth.\nexpected {comparable(expected, with_pits)}"
                         f"\nlast seen {last_seen}")


@pytest.fixture
def run_capture(service_env):
    started = []

    def run(name: str, *service_args: str, replay_args=("--speed", "0")):
        replay = Replay(CAPTURES / f"{name}.jsonl", *replay_args)
        started.append(replay)
        service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                                 *service_args, env=service_env)
        started.append(service)
        client = StandaloneClient(service.url)
        return replay, service, client

    yield run
    for proc in reversed(started):
        proc.stop()


def test_practice_v1_matches_the_truth(run_capture):
    truth = truth_of("practice-v1")
    _replay, service, client = run_capture("practice-v1")
    state, manifest = wait_for_truth(client, service.uuid, truth)
    assert manifest["name"]
    assert "Practice" in manifest["description"]
    assert state["session"]["flagState"] == truth["session"]["flag"]
    texts = [m[2] for m in state["messages"]]
    assert any("gg, off for dinner" in t for t in texts)
    assert sum("gg, off for dinner" in t for t in texts) == 1, "stored chat is deduplicated"
    client.close()


def test_race_v2x_matches_the_truth_with_pits_driver_swap_and_contact(run_capture):
    truth = truth_of("race-v2x")
    # Played at 30x so that the pit stop lasts longer than the publish interval.
    _replay, service, client = run_capture("race-v2x", "--team", "YORK",
                                           replay_args=("--speed", "30"))
    state, manifest = wait_for_truth(client, service.uuid, truth)
    index = column_index(manifest)
    assert state["session"]["flagState"] == "chequered"
    assert state["session"].get("lapsRemain") == 0
    leader, second = state["cars"][0], state["cars"][1]
    assert value(leader[index["Gap"]]) in ("", None, 0)
    assert isinstance(value(second[index["Gap"]]), (int, float, str))
    texts = [m[2] for m in state["messages"]]
    assert any("contact with" in t and "km/h" in t for t in texts), texts
    assert any("has entered the pits" in t for t in texts), texts
    assert any("Driver change" in t for t in texts), texts
    assert any(m[1] == "Team" for m in state["messages"]), "team entries are marked"
    client.close()


def test_session_change_and_server_restart_match_the_truth(run_capture):
    truth = truth_of("session-change-v1")
    _replay, service, client = run_capture("session-change-v1")
    state, manifest = wait_for_truth(client, service.uuid, truth)
    assert "vallelunga" in (manifest["description"] + json.dumps(state["session"])).lower()
    client.close()


def test_hostile_frames_never_stop_the_service_and_are_logged_once_each(run_capture):
    truth = truth_of("edge-cases")
    _replay, service, client = run_capture("edge-cases")
    wait_for_truth(client, service.uuid, truth)
    service.wait_for_line(r"Ignored an upstream frame: ", timeout=10)
    assert service.proc.poll() is None
    client.close()


def test_replay_server_killed_and_restarted_the_service_reconnects_and_ends_at_the_truth(
        run_capture):
    truth = truth_of("race-v2x")
    replay, service, client = run_capture("race-v2x", replay_args=("--speed", "20"))
    port = replay.port
    for _round in range(3):
        service.wait_for_line(r"upstream connected", timeout=10)
        replay.kill()
        service.wait_for_line(r"upstream dropped", timeout=10)
        connected_before = sum("upstream connected" in line for line in service.stdout)
        replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "20", port=port)
        up = time.monotonic()
        deadline = up + 5
        while sum("upstream connected" in line for line in service.stdout) == connected_before:
            assert time.monotonic() < deadline, "service did not reconnect"
            time.sleep(0.05)
        assert time.monotonic() - up <= 2.0, "reconnect took longer than 2 s"
    replay.stop()
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "0", port=port)
    wait_for_truth(client, service.uuid, truth)
    replay.stop()
    client.close()


def test_plugin_runs_through_the_framework_python_api(service_env):
    import sys

    replay = Replay(CAPTURES / "practice-v1.jsonl", "--speed", "0")
    script = (
        "import sys\n"
        "from livetiming.service import parse_args\n"
        "from livetiming.service.plugins.carobama import Service\n"
        "args, extra = parse_args(['carobama', '--standalone', '--url', sys.argv[1]])\n"
        "Service(args, extra).start()\n"
    )
    proc = Process([sys.executable, "-c", script, replay.url], env=service_env)
    try:
        found = proc.wait_for_line(r"Standalone server for uuid:(\S+) listening on port:(\d+)",
                                   stream="stderr")
        client = StandaloneClient(f"ws://127.0.0.1:{found.group(2)}/")
        wait_for_truth(client, found.group(1), truth_of("practice-v1"))
        client.close()
    finally:
        proc.stop()
        replay.stop()


@pytest.mark.parametrize("argv,needle", [
    ([], "--url"),
    (["--url", "http://example.invalid/"], "ws:// or wss://"),
    (["--url", "ws://127.0.0.1:9/", "--source", "nope"], "--source"),
    (["--url", "ws://127.0.0.1:9/", "--stale-after", "-1"], "positive"),
])
def test_bad_plugin_options_exit_2_with_one_line(service_env, argv, needle):
    import os
    import subprocess

    env = {**os.environ, **service_env}
    env.pop("LIVETIMING_ROUTER", None)
    env.pop("CAROBAMA_URL", None)
    result = subprocess.run([str(BIN / "livetiming-service"), "carobama", "--standalone", *argv],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_capture_option_journals_every_raw_frame_exactly(run_capture, tmp_path):
    from livetiming.service.plugins.carobama.capture import read_capture

    journal = tmp_path / "journal.jsonl"
    _replay, service, client = run_capture("edge-cases", "--capture", str(journal))
    wait_for_truth(client, service.uuid, truth_of("edge-cases"))
    client.close()
    service.stop()
    _header, original = read_capture(CAPTURES / "edge-cases.jsonl")
    header, journaled = read_capture(journal)
    assert header["source"] == "emperor"
    assert [data for _t, data in journaled] == [data for _t, data in original]
