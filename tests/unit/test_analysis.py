"""Live analysis (timing71-wire §4, §8 item 12): shapes, stints, flags, publishing, persistence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet import task

from livetiming.analysis import Analyser, FieldExtractor, map_stint_with, per_car
from livetiming.network import Message
from livetiming.racing import Stat
from livetiming.recording import generate_analysis
from tests.support.analysis_checks import check_analysis
from tests.support.scripted import EPOCH, car, make_scripted

E = EPOCH


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", str(tmp_path / "analysis"))


def scripted_race(*argv: str):
    """Three cars: pit stop with a driver change, a yellow period, a retirement, the chequered
    flag (car 1 takes it), a car that finishes by state (FIN)."""
    service, sink = make_scripted(*argv)
    one = car("1", driver="A")
    two = car("2", driver="C")
    three = car("3", state="PIT", driver="D")
    service.cars = [one, two, three]
    for t in range(0, 18):
        if 1 <= t <= 5 or 9 <= t <= 12 or t == 14:
            lap = one[6] + 1
            one[6] = lap
            one[8] = [100.0 + lap if lap <= 5 else 90.0 + lap if lap < 10 else 95.0, ""]
        if 1 <= t <= 12:
            two[6] = t
            two[8] = [109.0 + t, ""]
        if t == 2:
            service.rc.extend(["Car #2 warned for track limits", "Track limits at turn 3"])
        service.session["flagState"] = {3: "yellow", 4: "green", 13: "chequered"}.get(
            t, service.session["flagState"])
        one[1] = {6: "PIT", 7: "PIT", 16: "PIT"}.get(t, "RUN")
        if t == 7:
            one[4] = "B"
        if t == 5:
            three[1] = "RUN"
        if t == 10:
            three[1] = "RET"
        if t == 15:
            two[1] = "FIN"
        service.at(t)
    service.at(18)
    return service, sink


def test_stints_close_at_pit_entry_retirement_chequered_flag_and_fin():
    service, _sink = scripted_race()
    service.analyser.commit()
    data = service.analyser.get_current_state()
    check_analysis(data)
    laps_first = [[101.0, 1], [102.0, 1], [103.0, 4], [104.0, 4], [105.0, 1]]
    laps_second = [[96.0, 1], [97.0, 1], [98.0, 1], [99.0, 1], [95.0, 3]]  # flag seen on the lap
    assert data["stint"]["1"] == [
        [0, E, 5, E + 6, False, 0, 101.0, 2, 103.0, laps_first],
        # The final stint closes when the car takes the chequered flag (lap 10), in progress no more.
        [5, E + 8, 10, E + 14, False, 1, 95.0, 0, 97.25, laps_second],
    ]
    assert data["lap"]["1"] == [None, E + 14]  # finished: no new stint when it leaves the pits
    laps_two = [[109.0 + n, 4 if n in (3, 4) else 1] for n in range(1, 13)]
    # Car 2 stops lapping at lap 12 and its state becomes FIN at t=15: the stint closes then.
    assert data["stint"]["2"] == [[0, E, 12, E + 15, False, 0, 110.0, 2, 116.0, laps_two]]
    assert data["stint"]["3"] == [[0, E + 5, 0, E + 10, False, 0, None, 0, None, []]]
    assert data["driver"] == {"1": ["A", "B"], "2": ["C"], "3": ["D"]}
    assert data["static"] == {num: ["GT3", "Team", "Car"] for num in ("1", "2", "3")}
    assert data["session"] == {
        "currentTimestamp": E + 18,
        "flagStats": [[1, 0, E, 2, E + 3], [4, 2, E + 3, 3, E + 4], [1, 3, E + 4, 12, E + 13],
                      [3, 12, E + 13, None, None]],
        "leaderLap": 12,
    }
    texts = [message[2] for message in data["messages"]["messages"]]
    assert "Track limits at turn 3" in texts
    assert not any("Car #2" in text or "Driver change (" in text for text in texts)
    assert [m[2] for m in data["car_messages"]["2"]] == ["Car #2 warned for track limits"]
    assert all(m[3] not in ("pit", "out") for msgs in data["car_messages"].values() for m in msgs)
    assert any("Driver change" in m[2] for m in data["car_messages"]["1"])


def test_an_in_progress_stint_ends_at_the_current_lap_and_latest_time():
    service, _sink = make_scripted()
    service.cars = [car("9", laps=3, last=80.0, driver="Z")]
    service.at(0)
    for t in (1, 2, 3):
        service.cars[0][6] += 1
        service.cars[0][8] = [80.0 + t, ""]
        service.at(t)
    service.at(10)
    service.clock.advance(1)  # the second of t=10 is taken in when it is over
    lap = service.analyser.get_current_state()["lap"]["9"]
    assert lap == [[3, E, 6, E + 10, True, 0, 81.0, 0, 82.5, [[81.0, 1], [82.0, 1], [83.0, 1]]],
                   E + 3]


def test_laps_need_laps_or_last_to_change_and_late_times_are_corrected():
    # Without a Laps column a new Last time is a lap.
    analyser = Analyser("u", None)
    colspec = [Stat.NUM, Stat.STATE, Stat.LAST_LAP]
    for second, last in enumerate([None, 90.5, 90.5, 91.25, "1:30.000"]):
        state = {"cars": [["5", "RUN", [last, ""] if last else ""]], "session": {"flagState": "green"}}
        analyser.receiveStateUpdate(state, colspec, E + second, [])
        analyser.commit()
    lap = analyser.get_current_state()["lap"]["5"]
    assert lap[0][9] == [[90.5, 1], [91.25, 1], [90.0, 1]] and lap[0][2] == 3
    # With Laps, a Last that changes a second later corrects the lap's time; the same time twice
    # in a row is kept.
    analyser = Analyser("u", None)
    colspec = [Stat.NUM, Stat.STATE, Stat.LAPS, Stat.LAST_LAP]
    rows = [(0, None), (1, 70.0), (2, 70.0), (2, 71.5), (3, 71.5), (3, 71.5), (4, 69.0)]
    for second, (laps, last) in enumerate(rows):
        state = {"cars": [["5", "RUN", laps, [last, ""] if last else ""]],
                 "session": {"flagState": "green"}}
        analyser.receiveStateUpdate(state, colspec, E + second, [])
        analyser.commit()
    stint = analyser.get_current_state()["lap"]["5"][0]
    assert stint[9] == [[70.0, 1], [71.5, 1], [71.5, 1], [69.0, 1]]
    assert stint[6] == 69.0 and stint[2] == 4


def test_only_the_newest_state_of_each_second_is_analysed():
    service, _sink = make_scripted()
    service.cars = [car("1", laps=0)]
    service.at(0)
    service.cars[0][1] = "PIT"
    service.at(0.4)  # in the pits for less than a second: the recording never shows it either
    service.cars[0][1] = "RUN"
    service.at(0.8)
    assert service.analyser.get_current_state()["static"] == {}  # not taken in before 1 s
    service.clock.advance(0.3)
    data = service.analyser.get_current_state()
    assert data["stint"]["1"] == [] and data["lap"]["1"][0][0:2] == [0, E]


def test_field_extractor_matches_by_tuple_and_by_title():
    extractor = FieldExtractor([["Num", "text", "Car number"], ["Lap", "numeric"], Stat.DRIVER,
                                ("Foo", "text")])
    row = ["7", 12, "Ann", "x"]
    assert extractor.get(row, Stat.NUM) == "7"
    assert extractor.get(row, Stat.LAPS) == 12
    assert extractor.get(row, Stat.DRIVER) == "Ann"
    assert extractor.get(row, ("Foo", "text")) == "x"
    assert extractor.get(row, Stat.LAST_LAP, "none") == "none"
    assert extractor.get(None, Stat.NUM, "d") == "d"


def test_per_car_and_map_stint_with_helpers():
    seen = []

    def data(dc):
        return {"calls": len(seen)}

    @per_car("mine", data)
    def module(dc, race_num, position, old_car, new_car, f, flag, timestamp, new_messages):
        seen.append((race_num, position, old_car is not None, int(flag)))
        return race_num == "2"

    colspec = [Stat.NUM, Stat.STATE]
    old = {"cars": [["1", "RUN"]], "session": {"flagState": "green"}}
    new = {"cars": [["2", "RUN"], ["1", "PIT"]], "session": {"flagState": "sc"}}
    assert module(None, old, new, colspec, E, []) == [("mine", {"calls": 2})]
    assert seen == [("2", 1, False, 8), ("1", 2, True, 8)]
    service, _sink = scripted_race()
    analyser_car = service.analyser.model.cars["1"]
    mapped = map_stint_with(analyser_car, E + 99)(analyser_car.stints[0])
    assert mapped == service.analyser.get_current_state()["stint"]["1"][0]
    assert map_stint_with(analyser_car, E)(None) is None


# ----- publishing ----------------------------------------------------------------------------


class Publications:
    def __init__(self, clock):
        self.clock = clock
        self.items = []
        self.times = []

    def __call__(self, topic, message, options=None):
        assert isinstance(message, Message)
        self.items.append((topic, message.serialise(), options))
        self.times.append(self.clock.seconds())

    def keys(self):
        return [topic.split("/", 2)[2] for topic, _m, _o in self.items]


def _state(second, laps, flag="green"):
    return {"cars": [["1", "RUN", laps, [60.0 + second, ""]], ["2", "RUN", laps, [61.0, ""]]],
            "session": {"flagState": flag}, "messages": [], "highlight": []}


def test_deltas_are_per_key_rate_limited_and_per_car():
    clock = task.Clock()
    clock.advance(E)
    published = Publications(clock)
    analyser = Analyser("uu", published, interval=10, clock=clock, persist=False)
    colspec = [Stat.NUM, Stat.STATE, Stat.LAPS, Stat.LAST_LAP]
    for second in range(0, 25):
        analyser.receiveStateUpdate(_state(second, second), colspec, clock.seconds(), [])
        clock.advance(1)
    sent = {}
    for (topic, message, options), when in zip(published.items, published.times, strict=True):
        key = topic.split("/", 2)[2]
        assert topic.startswith("livetiming.analysis/uu/")
        assert message["msgClass"] == 7 and isinstance(message["date"], int)
        retained = key not in ("lap", "stint")
        assert bool(message.get("retain")) is retained
        assert bool(getattr(options, "retain", False)) is retained
        sent.setdefault(key, []).append(when)
    assert {"static", "session", "lap/1", "lap/2", "stint/1", "car_messages/2"} <= set(sent)
    assert "lap" not in sent and "stint" not in sent  # full dumps only on request
    for key, times in sent.items():
        assert all(b - a >= 9 for a, b in zip(times, times[1:], strict=False)), (key, times)
    assert len(sent["lap/1"]) >= 2


def test_publish_all_sends_the_seven_keys_now_and_deltas_merge_into_the_full_dump():
    clock = task.Clock()
    clock.advance(E)
    published = Publications(clock)
    analyser = Analyser("uu", published, interval=10, clock=clock, persist=False)
    colspec = [Stat.NUM, Stat.STATE, Stat.LAPS, Stat.LAST_LAP]
    merged: dict[str, dict] = {}
    for second in range(0, 40):
        analyser.receiveStateUpdate(_state(second, second // 2, "yellow" if second > 20 else
                                           "green"), colspec, clock.seconds(), [])
        clock.advance(1)
    clock.advance(20)  # everything queued is out
    for topic, message, _options in published.items:
        module = topic.split("/")[2]
        merged.setdefault(module, {}).update(message["payload"])
    full = analyser.get_current_state()
    for key in ("lap", "stint", "static", "session", "driver", "car_messages"):
        assert merged[key] == full[key], key
    published.items.clear()
    analyser.publish_all()
    assert sorted(published.keys()) == sorted(
        ["static", "driver", "messages", "session", "lap", "stint", "car_messages"])
    published.items.clear()
    analyser.publish_all()
    analyser.publish_all()
    assert published.items == []  # within a second: coalesced into one more dump
    clock.advance(1)
    assert len(published.items) == 7


def test_service_publishes_analysis_and_answers_the_rpc(tmp_path):
    service, sink = scripted_race()
    service.clock.advance(30)
    topics = {topic for _t, topic, _m, _r in sink.analysis()}
    assert "livetiming.analysis/scripted/static" in topics
    assert any(topic.startswith("livetiming.analysis/scripted/lap/") for topic in topics)
    rpc = service.rpc_handlers()["livetiming.service.requestAnalysisData.scripted"]()
    check_analysis(rpc)
    service.onClientConnected()
    keys = [topic.rsplit("/", 1)[1] for _t, topic, _m, _r in sink.analysis()[-7:]]
    assert sorted(keys) == sorted(rpc)


# ----- persistence ---------------------------------------------------------------------------


def test_analysis_state_is_saved_as_json_and_resumed_by_the_same_uuid(tmp_path):
    service, _sink = scripted_race()
    service.shutdown()
    saved = tmp_path / "analysis" / "scripted.json"
    content = json.loads(saved.read_text())
    assert content["format"] == "livetiming-analysis-state" and content["version"] == 1
    assert not list((tmp_path / "analysis").glob("*.p"))
    before = service.analyser.get_current_state()
    resumed, _sink = make_scripted()
    assert resumed.analyser.get_current_state() == before
    # It carries on where it stopped: car 1 goes out again after the flag, no new stint.
    resumed.cars = [car("1", laps=10, driver="B")]
    resumed.at(30)
    resumed.at(31)
    assert resumed.analyser.get_current_state()["stint"]["1"] == before["stint"]["1"]


def _counted_writes(monkeypatch) -> list:
    writes = []
    from livetiming.recording import tools

    real = tools.write_json_atomically
    monkeypatch.setattr(tools, "write_json_atomically",
                        lambda path, data: writes.append(path) or real(path, data))
    return writes


def test_quiet_saves_are_atomic_and_throttled_to_one_a_minute(tmp_path, monkeypatch):
    service, _sink = make_scripted()
    writes = _counted_writes(monkeypatch)
    service.cars = [car("1", laps=3)]
    service.at(0)
    writes.clear()
    for t in range(1, 200):  # only the clock moves
        service.at(t)
    assert 2 <= len(writes) <= 4
    assert not [p for p in os.listdir(tmp_path / "analysis") if p.endswith(".tmp")]


def test_a_lap_is_saved_within_seconds_and_saves_are_coalesced(tmp_path, monkeypatch):
    from livetiming.analysis import SOON_SAVE_INTERVAL

    service, _sink = make_scripted()
    writes = _counted_writes(monkeypatch)
    service.cars = [car("1")]
    for t in range(0, 200):  # a lap every second
        service.cars[0][6] = t
        service.at(t)
    assert len(writes) <= 200 / SOON_SAVE_INTERVAL + 1
    service.clock.advance(SOON_SAVE_INTERVAL + 1)  # no update: the save runs on its own timer
    resumed, _sink = make_scripted()  # as after a SIGKILL: only what is on disk
    assert resumed.analyser.get_current_state()["session"]["leaderLap"] == 199


def test_no_write_state_keeps_analysis_in_memory_only(tmp_path):
    service, _sink = scripted_race("--no-write-state")
    service.shutdown()
    assert not (tmp_path / "analysis" / "scripted.json").exists()


def test_a_damaged_saved_state_is_ignored(tmp_path):
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "scripted.json").write_text("{not json")
    service, _sink = make_scripted()
    assert service.analyser.get_current_state()["static"] == {}
    (folder / "scripted.json").write_text(json.dumps({"format": "other"}))
    service, _sink = make_scripted()
    assert service.analyser.get_current_state()["static"] == {}


def test_reset_forgets_everything_and_publishes_the_empty_keys():
    service, sink = scripted_race()
    service.clock.advance(60)
    before = len(sink.analysis())
    service.analyser.reset()
    data = service.analyser.get_current_state()
    assert data["static"] == {} and data["session"]["flagStats"] == []
    service.clock.advance(60)
    assert len(sink.analysis()) > before


# ----- offline equals live ---------------------------------------------------------------------


def test_offline_analysis_of_the_recording_equals_the_live_analysis(tmp_path):
    path = tmp_path / "race.zip"
    service, sink = scripted_race("-r", str(path))
    service.shutdown()
    live = service.analyser.get_current_state()
    offline = generate_analysis(path, tmp_path / "race.json")
    check_analysis(offline, with_service=True)
    assert {key: offline[key] for key in live} == live
    assert offline["state"] == sink.by_second()[max(sink.by_second())]
    assert offline["service"]["colSpec"][0] == ["Num", "text", "Car number"]
    assert json.loads(Path(tmp_path / "race.json").read_text()) == json.loads(json.dumps(offline))


def test_after_a_new_session_the_new_file_analyses_to_the_live_analysis(tmp_path):
    path = tmp_path / "meeting.zip"
    service, _sink = scripted_race("-r", str(path))
    service.start_new_session()
    service.cars = [car("8", laps=0, driver="Q"), car("9", laps=0, driver="R")]
    service.session["flagState"] = "green"
    for t in range(20, 40):
        for row in service.cars:
            row[6] += 1
            row[8] = [80.0 + t % 3, ""]
        if t == 25:
            service.rc.append("Car #8 warned")
        service.at(t)
    service.shutdown()
    live = service.analyser.get_current_state()
    assert set(live["static"]) == {"8", "9"}
    offline = generate_analysis(tmp_path / "meeting-2.zip", tmp_path / "out.json")
    check_analysis(offline, with_service=True)
    assert {key: offline[key] for key in live} == live
    first = generate_analysis(path, tmp_path / "first.json")
    assert set(first["static"]) == {"1", "2", "3"}
