"""BMI heat captures → carobama-replay → real loopback websocket → service (standalone) → CTD.

The captures in tests/fixtures/captures/bmi-*.jsonl come with a ``.truth.json`` written by the
simulator (``tests/fixtures/make_bmi_captures.py``): named checkpoints, each a number of frames with
what a correct consumer shows after them. A test plays the capture cut at a checkpoint (so the
checkpoint is the end state) and waits, with a deadline, until the published Common Timing Data
shows that truth; then it checks the session block, the manifest and the messages.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from livetiming.service.compression import decompress_state
from tests.support.processes import BIN, Process, ServiceProcess
from tests.support.wsclient import StandaloneClient, rows_fit_manifest

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
REPLAY_LINE = re.compile(r"carobama-replay listening on (ws://127\.0\.0\.1:(\d+)/)")
AVG = ["Avg", "time", "Average lap time"]


class Replay(Process):
    """``carobama-replay`` as a subprocess (BMI upstreams live at ``/``)."""

    def __init__(self, capture: Path, *args: str):
        super().__init__([str(BIN / "carobama-replay"), str(capture), "--port", "0", *args])
        found = self.wait_for_line(REPLAY_LINE, stream="stdout", timeout=30)
        self.url = found.group(1)


def truth_of(name: str) -> dict:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text(encoding="utf-8"))


def checkpoint(name: str, ending: str) -> dict:
    """The checkpoint of capture ``name`` whose name ends with ``ending``."""
    found = [c for c in truth_of(name)["checkpoints"] if c["name"].endswith(ending)]
    assert found, f"{name} has no checkpoint ending {ending!r}"
    return found[-1]


def cut(name: str, frames: int, folder: Path) -> Path:
    """The capture's header and first ``frames`` frames, as a new capture file."""
    lines = (CAPTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    header = [line for line in lines[:1] if '"capture"' in line]
    body = lines[len(header):len(header) + frames]
    path = folder / f"{name}-{frames}.jsonl"
    path.write_text("".join(header + body), encoding="utf-8")
    return path


def value(cell: Any) -> Any:
    return cell[0] if isinstance(cell, list) else cell


def differences(state: dict, manifest: dict, truth: dict) -> list:
    """What the published table shows differently from a checkpoint (empty when it matches)."""
    columns = [column[0] for column in manifest["colSpec"]]
    index = {title: n for n, title in enumerate(columns)}
    problems: list = []
    if state["session"]["flagState"] != truth["flag"]:
        problems.append(("flag", state["session"]["flagState"], truth["flag"]))
    cars = state["cars"]
    if len(cars) != len(truth["cars"]):
        return problems + [("cars", len(cars), len(truth["cars"]))]
    for row, car in zip(cars, truth["cars"], strict=True):
        shown = {
            "kart": row[index["Num"]], "driver": row[index["Driver"]], "laps": row[index["Laps"]],
            "last": value(row[index["Last"]]) or None, "best": value(row[index["Best"]]) or None,
            "average": row[index["Avg"]] or None, "gap": row[index["Gap"]], "interval": row[index["Int"]],
            "state": row[index["State"]], "pits": row[index["Pits"]] if "Pits" in index else 0,
        }
        for key, got in shown.items():
            want = car[key]
            if isinstance(want, dict):
                continue  # {"observed": true}: timed by the service's own clock
            if isinstance(want, float) and isinstance(got, (int, float)):
                if abs(want - got) > 0.0015:
                    problems.append((car["kart"], key, got, want))
            elif got != want:
                problems.append((car["kart"], key, got, want))
    return problems


class Run:
    """A replay of a (cut) capture and the service reading it, with the client watching."""

    def __init__(self, capture: Path, service_env: dict, *service_args: str, speed: str = "0"):
        self.replay = Replay(capture, "--speed", speed)
        self.service = ServiceProcess("carobama", "--source", "bmi", "--url", self.replay.url,
                                      "--publish-interval", "0.2", *service_args, env=service_env)
        self.client = StandaloneClient(self.service.url)
        self.manifest: dict | None = None
        self.state: dict | None = None

    def wait_for(self, truth: dict, timeout: float = 40.0) -> tuple[dict, dict]:
        """Receive until the table equals the truth; returns (state, manifest)."""
        deadline = time.monotonic() + timeout
        last: list | None = None
        while time.monotonic() < deadline:
            try:
                channel, message = self.client.recv(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if channel == "livetiming.control":
                self.manifest = message["payload"]
            elif channel == f"livetiming.service.{self.service.uuid}":
                self.state = decompress_state(message["payload"])
            if self.manifest is None or self.state is None:
                continue
            if not rows_fit_manifest(self.state, self.manifest):
                continue  # a manifest and a state of different column specs: wait for the next
            last = differences(self.state, self.manifest, truth)
            if not last:
                return self.state, self.manifest
        raise AssertionError(f"{truth['name']}: the table never matched the truth; last differences: "
                             f"{last}")

    def stop(self) -> None:
        self.client.close()
        self.service.stop()
        self.replay.stop()


@pytest.fixture
def play(service_env, tmp_path):
    runs: list[Run] = []

    def start(name: str, ending: str, *service_args: str, edit=None) -> tuple[Run, dict, dict, dict]:
        truth = checkpoint(name, ending)
        if edit is not None:
            truth = edit(truth)
        run = Run(cut(name, truth["frames"], tmp_path), service_env, *service_args)
        runs.append(run)
        state, manifest = run.wait_for(truth)
        return run, truth, state, manifest

    yield start
    for run in runs:
        run.stop()


def texts(state: dict) -> list[str]:
    return [message[2] for message in state["messages"]]


# ------------------------------------------------------------------------------------------------


def test_sprint_not_started_shows_the_grid_and_the_full_countdown(play):
    _run, truth, state, manifest = play("bmi-sprint", ":not-started", "--venue", "Kartbahn Test")
    assert manifest["name"] == "Kartbahn Test"
    assert manifest["description"] == truth["description"] == "31 - Sprint 10 min (most laps wins)"
    assert manifest["colSpec"][:3] == [["Num", "text", "Car number"], ["State", "text"], ["Driver", "text"]]
    assert AVG in manifest["colSpec"] and not any(c[0] == "Pits" for c in manifest["colSpec"])
    session = state["session"]
    assert session["flagState"] == "none"
    assert session["timeRemain"] == truth["clock"]["remaining"] == 600.0
    assert session["timeElapsed"] == 0
    assert session["trackData"][:4] == ["31 - Sprint 10 min", "Not started", "Most laps wins", "After time"]
    assert {value(car[1]) for car in state["cars"]} == {"N/S"}
    assert "leiño" in [car[2] for car in state["cars"]]
    assert any("No heat loaded" in t for t in texts(state))
    assert any(t == "Heat: 31 - Sprint 10 min (most laps wins)" for t in texts(state))


def test_sprint_after_a_feed_gap_counts_the_jumped_laps(play):
    _run, truth, state, _manifest = play("bmi-sprint", ":after-gap")
    # the capture itself: a silence of over 90 s, after which lap counters jump by two or more,
    # and frames sent twice in a row
    lines = (CAPTURES / "bmi-sprint.jsonl").read_text(encoding="utf-8").splitlines()[1:truth["frames"] + 1]
    frames = [json.loads(line) for line in lines]
    pause = max(range(1, len(frames)), key=lambda n: frames[n]["t"] - frames[n - 1]["t"])
    assert frames[pause]["t"] - frames[pause - 1]["t"] > 90
    before = {d["D"]: d["L"] for d in json.loads(frames[pause - 1]["data"])["D"]}
    after = {d["D"]: d["L"] for d in json.loads(frames[pause]["data"])["D"]}
    assert max(after[key] - before[key] for key in after) >= 2
    assert any(a["data"] == b["data"] for a, b in zip(frames, frames[1:], strict=False))
    assert truth["clock"]["counts_down"]
    session = state["session"]
    assert session["flagState"] == "green"
    # the clock runs between the last frame and this publication: at most a few seconds
    assert truth["clock"]["remaining"] - 5 <= session["timeRemain"] <= truth["clock"]["remaining"] + 0.01
    assert truth["clock"]["elapsed"] - 0.01 <= session["timeElapsed"] <= truth["clock"]["elapsed"] + 5


def test_sprint_running_then_finished_with_laps_after_the_flag(play):
    _run, truth, state, _manifest = play("bmi-sprint", ":finished")
    session = state["session"]
    assert session["flagState"] == "chequered"
    assert session["timeElapsed"] == 600.0 and session["timeRemain"] == 0.0
    assert all(value(car[1]) == "FIN" for car in state["cars"])
    assert len(state["cars"]) == 12
    lap_counts = [car[3] for car in state["cars"]]
    assert lap_counts == sorted(lap_counts, reverse=True), "order by P: most laps first"
    assert any(t == "Heat finished: 31 - Sprint 10 min" for t in texts(state))
    assert sum(t.startswith("Heat finished") for t in texts(state)) == 1
    assert truth["cars"][1]["interval"] == state["cars"][1][5]


def test_lap_race_paused_stops_the_clock_and_shows_laps_remaining(play):
    _run, truth, state, _manifest = play("bmi-laps", ":paused")
    session = state["session"]
    assert session["flagState"] == "red"
    assert session["lapsRemain"] == truth["clock"]["laps_remaining"]
    assert session["timeElapsed"] == truth["clock"]["elapsed"]
    assert session["trackData"][1] == "Paused"
    assert any(t.startswith("Heat paused") for t in texts(state))
    assert session["timeRemain"] is None, "a lap race has no time limit"


def test_lap_race_finished_after_the_pause(play):
    _run, truth, state, _manifest = play("bmi-laps", ":finished")
    session = state["session"]
    assert session["flagState"] == "chequered" and session["lapsRemain"] == 0
    assert session["timeElapsed"] == truth["clock"]["elapsed"]
    assert session["timeRemain"] is None
    assert any(t.startswith("Heat resumed") for t in texts(state))
    assert not any("pit stop" in t for t in texts(state)), "the paused lap is not a pit stop"


def test_endurance_inferred_pits_and_kart_swap(play):
    _run, truth, state, manifest = play("bmi-endurance", ":finished", "--pit-threshold", "1.5")
    assert ["Pits", "numeric"] in manifest["colSpec"]
    index = [c[0] for c in manifest["colSpec"]].index("Pits")
    assert [car[index] for car in state["cars"]] == [car["pits"] for car in truth["cars"]]
    assert all(car["pits"] == 2 for car in truth["cars"])
    assert state["session"]["timeElapsed"] == 3600.0


def test_endurance_pit_message_says_it_was_inferred(play):
    _run, truth, state, _manifest = play("bmi-endurance", ":pit")
    pit_messages = [m for m in state["messages"] if "pit stop" in m[2]]
    assert pit_messages and all("inferred" in m[2] for m in pit_messages)
    assert all(m[1] == "Pits" and m[3] == "pit" and m[4] for m in pit_messages)


def test_endurance_pits_follow_the_threshold_option(play):
    # a threshold above every stop (each is 2.2-2.9 times the driver's median) infers none
    def no_pits(truth: dict) -> dict:
        assert any(car["pits"] for car in truth["cars"])
        return dict(truth, cars=[dict(car, pits=0) for car in truth["cars"]])

    _run, _truth, state, manifest = play("bmi-endurance", ":pit", "--pit-threshold", "4", edit=no_pits)
    assert not any(column[0] == "Pits" for column in manifest["colSpec"])
    assert not any("pit stop" in t for t in texts(state))


@pytest.mark.parametrize("ending,flag,heat", [
    (":no-heat", "none", None),
    (":next-heat", "none", "41 - Final 5 laps"),
    ("42 - Consistency challenge:finished", "chequered", "42 - Consistency challenge"),
])
def test_heat_sequence_empty_next_and_new_heats(play, ending, flag, heat):
    _run, truth, state, manifest = play("bmi-sequence", ending)
    assert state["session"]["flagState"] == flag
    if heat is None:
        assert state["cars"] == []
        assert manifest["description"] == "No heat loaded"
        assert any(t == "No heat loaded" for t in texts(state))
        return
    assert manifest["description"] == truth["description"]
    if ending == ":next-heat":
        assert {value(car[1]) for car in state["cars"]} == {"N/S"}
        assert state["session"]["trackData"][1] == "Next heat"
        assert any(t == "New heat: 41 - Final 5 laps (most laps wins)" for t in texts(state))
    else:
        # the end of the final and the start of this heat were lost in a feed gap
        assert any(t == "New heat: 42 - Consistency challenge (best average wins)" for t in texts(state))
        assert state["session"]["lapsRemain"] == truth["clock"]["laps_remaining"]
        assert state["session"]["timeRemain"] == 0.0
        assert truth["heat"]["counter"] == "elapsed"
        assert state["session"]["timeElapsed"] == truth["clock"]["elapsed"] == 180.0


def test_elapsed_counter_in_a_timed_heat(play):
    _run, truth, state, _manifest = play("bmi-sequence", "40 - Qualifying:finished")
    assert truth["heat"]["counter"] == "elapsed" and truth["heat"]["mode"] == 1
    session = state["session"]
    assert session["timeElapsed"] == 180.0 and session["timeRemain"] == 0.0
    assert state["session"]["trackData"][2] == "Best lap wins"


def test_stopped_heat_is_red_with_the_clock_standing(play):
    _run, truth, state, _manifest = play("bmi-sequence", "40 - Qualifying:stopped")
    session = state["session"]
    assert session["flagState"] == "red" and session["trackData"][1] == "Stopped"
    assert session["timeElapsed"] == truth["clock"]["elapsed"] == 70.0
    assert session["timeRemain"] is None, "elapsed reading: the heat's length is not in the frames"
    assert any(t == "Heat stopped: 40 - Qualifying" for t in texts(state))


def test_venue_defaults_to_the_upstream_host(play):
    _run, _truth, _state, manifest = play("bmi-sequence", "40 - Qualifying:not-started")
    assert manifest["name"] == "127.0.0.1"


def test_hostile_capture_never_stops_the_service(play):
    run, truth, state, _manifest = play("bmi-hostile", ":finished")
    run.service.wait_for_line(r"Ignored an upstream frame: ", timeout=10)
    assert run.service.proc.poll() is None
    assert state["session"]["flagState"] == "chequered"
    assert sum(t.startswith("Heat finished") for t in texts(state)) == 1
