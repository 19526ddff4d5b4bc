"""Common Timing Data view (ctd.py) of the timing model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetiming.racing import FlagStatus, Stat
from livetiming.service.plugins.carobama import ctd
from livetiming.service.plugins.carobama.feeds import EmperorFeed
from livetiming.service.plugins.carobama.model import (
    CarState,
    Entry,
    EventKind,
    FeedEvent,
    Lap,
    Session,
    SessionType,
    TimingModel,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "emperor-practice-v1.capture.jsonl"
if not EXAMPLE.exists():
    EXAMPLE = Path("/work/shared/examples/emperor-practice-v1.capture.jsonl")

T0 = 1_717_263_600.0


def make_entry(number: str, lap_times: list[float], start: float = 0.0, **fields) -> Entry:
    """An entry whose laps cross the line at ``start`` + cumulative lap times."""
    laps = []
    clock = start
    for index, seconds in enumerate(lap_times, start=1):
        clock += seconds
        laps.append(Lap(number=index, time=seconds, driver=fields.get("driver"), timestamp=clock))
    valid = [t for t in lap_times]
    entry = Entry(key=f"car{number}", number=number, laps=laps, connected=True, state=CarState.RUN)
    entry.last_lap = lap_times[-1] if lap_times else None
    entry.best_lap = min(valid) if valid else None
    entry.total_time = sum(lap_times) if lap_times else None
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


def model_of(*entries: Entry, kind: SessionType = SessionType.RACE, **session_fields) -> TimingModel:
    session = Session(source="emperor", type=kind, **session_fields)
    model = TimingModel(session=session, entries=list(entries))
    bests = [e.best_lap for e in entries if e.best_lap is not None]
    model.best_lap = min(bests) if bests else None
    for index, entry in enumerate(entries):
        entry.position = index + 1
    return model


def column(spec, stat):
    return spec.index(stat)


# ------------------------------------------------------------------------------------------------
# Column spec
# ------------------------------------------------------------------------------------------------


def test_column_spec_minimal():
    model = model_of(make_entry("1", [90.0], driver="Al"))
    assert ctd.column_spec(model) == [
        Stat.NUM,
        Stat.STATE,
        Stat.DRIVER,
        Stat.CAR,
        Stat.LAPS,
        Stat.GAP,
        Stat.INT,
        Stat.LAST_LAP,
        Stat.BEST_LAP,
        Stat.PITS,
        Stat.BEST_SPEED,
    ]


def test_column_spec_with_class_tyre_and_sectors():
    model = model_of(make_entry("1", [90.0], car_class="GT3", tyre="S"))
    model.sector_count = 3
    assert ctd.column_spec(model) == [
        Stat.NUM,
        Stat.STATE,
        Stat.CLASS,
        Stat.DRIVER,
        Stat.CAR,
        Stat.TYRE,
        Stat.LAPS,
        Stat.GAP,
        Stat.INT,
        Stat.LAST_LAP,
        Stat.BEST_LAP,
        Stat.S1,
        Stat.BS1,
        Stat.S2,
        Stat.BS2,
        Stat.S3,
        Stat.BS3,
        Stat.PITS,
        Stat.BEST_SPEED,
    ]


def test_column_spec_beyond_five_sectors_uses_generated_tuples():
    model = model_of(make_entry("1", [90.0]))
    model.sector_count = 7
    spec = ctd.column_spec(model)
    assert Stat.S5 in spec and Stat.BS5 in spec
    assert ("S6", "time", "Sector 6 time") in spec
    assert ("BS7", "time", "Best sector 7 time") in spec
    assert spec.index(("S7", "time", "Sector 7 time")) == spec.index(Stat.PITS) - 2
    assert spec[0] is Stat.NUM


# ------------------------------------------------------------------------------------------------
# Car rows: gaps, flags, alignment
# ------------------------------------------------------------------------------------------------


def test_race_gaps_by_laps_and_crossing_times():
    leader = make_entry("7", [90.0] * 5, driver="Al", spline=0.30)  # crossed lap 5 at 450.0
    second = make_entry("22", [90.5] * 5, driver="Bo", spline=0.28)  # 452.5
    about_to_cross = make_entry("3", [95.0] * 4, driver="Cy", spline=0.95)  # 380.0, not lapped
    lapped = make_entry("48", [100.0] * 4, driver="Di", spline=0.10)  # 400.0, lapped
    far = make_entry("9", [150.0] * 2, driver="Ed", spline=0.50)
    none = make_entry("11", [], driver="Fi")
    retired = make_entry("12", [90.0] * 4, driver="Gu", spline=0.99, connected=False)
    model = model_of(leader, second, retired, about_to_cross, lapped, far, none)
    spec = ctd.column_spec(model)
    rows = ctd.cars(model, spec)
    gap, interval = column(spec, Stat.GAP), column(spec, Stat.INT)
    assert [(row[gap], row[interval]) for row in rows] == [
        ("", ""),
        (2.5, 2.5),
        ("1 lap", "1 lap"),  # a car that left is not corrected by its stale spline
        (20.0, 20.0),  # not lapped (spline ahead of the leader's): lap 4 at 380.0 vs 360.0
        ("1 lap", 20.0),  # lapped by the leader; 400.0 vs #3's 380.0 at lap 4
        ("2 laps", "1 lap"),  # 2.8 and 1.6 laps behind on the road
        ("", ""),
    ]


def test_race_gap_falls_back_to_total_time():
    a = make_entry("1", [90.0, 91.0])
    b = make_entry("2", [90.0, 92.0])
    for lap in a.laps + b.laps:
        lap.timestamp = None
    model = model_of(a, b)
    spec = ctd.column_spec(model)
    row = ctd.cars(model, spec)[1]
    assert (row[column(spec, Stat.GAP)], row[column(spec, Stat.INT)]) == (1.0, 1.0)


def test_practice_gaps_by_best_lap():
    a = make_entry("1", [95.0, 90.0])
    b = make_entry("2", [92.5])
    c = make_entry("3", [93.0, 99.0])
    d = make_entry("4", [])
    model = model_of(a, b, c, d, kind=SessionType.PRACTICE)
    spec = ctd.column_spec(model)
    rows = ctd.cars(model, spec)
    assert [(r[column(spec, Stat.GAP)], r[column(spec, Stat.INT)]) for r in rows] == [
        ("", ""),
        (2.5, 2.5),
        (3.0, 0.5),
        ("", ""),
    ]


def test_lap_time_flags():
    leader = make_entry("1", [91.0, 90.0], last_lap_is_new=True)  # session best just set
    older = make_entry("2", [90.0])  # equal best set earlier
    older.last_lap_is_new = False
    personal = make_entry("3", [95.0, 93.0])  # last is own best
    slow = make_entry("4", [92.0, 94.0])
    empty = make_entry("5", [])
    model = model_of(leader, older, personal, slow, empty, kind=SessionType.PRACTICE)
    spec = ctd.column_spec(model)
    rows = ctd.cars(model, spec)
    last, best = column(spec, Stat.LAST_LAP), column(spec, Stat.BEST_LAP)
    assert [r[last] for r in rows] == [[90.0, "sb-new"], [90.0, "sb"], [93.0, "pb"], [94.0, ""], ["", ""]]
    assert [r[best] for r in rows] == [[90.0, "sb"], [90.0, "sb"], [93.0, ""], [92.0, ""], ["", ""]]


def test_sector_flags_and_previous_lap_sectors():
    car = make_entry("1", [90.0, 89.0])
    car.laps[-1].sectors = [29.0, 30.0, 30.0]
    car.sectors = [28.5, None, None]  # in the current lap: S1 done
    car.best_sectors = [28.5, 30.0, 29.5]
    other = make_entry("2", [91.0])
    other.sectors = [28.9, 30.5]
    other.best_sectors = [28.9, 29.8, 30.1]
    model = model_of(car, other, kind=SessionType.QUALIFYING)
    model.sector_count = 3
    model.best_sectors = [28.5, 29.8, 29.5]
    spec = ctd.column_spec(model)
    rows = ctd.cars(model, spec)
    s1, s2, s3 = (column(spec, s) for s in (Stat.S1, Stat.S2, Stat.S3))
    bs1, bs2, bs3 = (column(spec, s) for s in (Stat.BS1, Stat.BS2, Stat.BS3))
    assert [rows[0][i] for i in (s1, s2, s3)] == [[28.5, "sb"], [30.0, "old"], [30.0, "old"]]
    assert [rows[0][i] for i in (bs1, bs2, bs3)] == [[28.5, "sb"], [30.0, ""], [29.5, "sb"]]
    assert [rows[1][i] for i in (s1, s2, s3)] == [[28.9, "pb"], [30.5, ""], ["", ""]]
    assert [rows[1][i] for i in (bs1, bs2, bs3)] == [[28.9, ""], [29.8, "sb"], [30.1, ""]]


def test_rows_follow_any_column_spec():
    car = make_entry(
        "48",
        [90.0],
        driver="Dana",
        car="Audi R8 LMS 2016",
        car_class="GT3",
        team="York FS",
        tyre="M",
        pit_count=2,
        top_speed=251.26,
        state=CarState.PIT,
    )
    model = model_of(car)
    spec = [
        ["Num", "text", "Car number"],
        ("Team", "text"),
        Stat.TYRE,
        ("Mystery", "text"),
        ["B.Spd", "numeric", "Best lap speed"],
        Stat.STATE,
        Stat.CLASS,
        Stat.PITS,
        Stat.LAPS,
        Stat.CAR,
    ]
    assert ctd.cars(model, spec) == [
        ["48", "York FS", "M", "", 251.3, "PIT", "GT3", 2, 1, "Audi R8 LMS 2016"]
    ]
    assert ctd.cars(model_of(), spec) == []


# ------------------------------------------------------------------------------------------------
# Session, track data, names
# ------------------------------------------------------------------------------------------------


def timed_session(**fields) -> TimingModel:
    values = dict(
        name="Qualify",
        track="Brands Hatch",
        layout="Indy",
        air_temp=17,
        road_temp=22.5,
        weather="Heavy clouds",
        flag=FlagStatus.GREEN,
        time_elapsed=100.0,
        time_remaining=500.0,
        clock_at=T0,
        clock_running=True,
        duration=600.0,
        server_name="Example League | Sunday Cup",
        last_frame_at=T0 + 10,
    )
    values.update(fields)
    return model_of(kind=SessionType.QUALIFYING, **values)


def test_session_block_timed():
    model = timed_session()
    assert ctd.session(model) == {
        "flagState": "green",
        "timeElapsed": 110.0,
        "timeRemain": 490.0,
        "trackData": ["Brands Hatch", "Indy", "17°C", "22.5°C", "Heavy clouds", "Qualifying"],
    }
    later = ctd.session(model, now=T0 + 1000)
    assert (later["timeElapsed"], later["timeRemain"]) == (1100.0, 0.0)
    stopped = ctd.session(timed_session(clock_running=False, flag=FlagStatus.CHEQUERED), now=T0 + 50)
    assert (stopped["flagState"], stopped["timeElapsed"], stopped["timeRemain"]) == (
        "chequered",
        100.0,
        500.0,
    )


def test_session_block_lap_race_and_before_start():
    model = timed_session(
        duration=None,
        time_remaining=None,
        time_elapsed=-30.0,
        laps_total=12,
        laps_remaining=12,
        flag=FlagStatus.NONE,
    )
    model.session.type = SessionType.RACE
    block = ctd.session(model, now=T0 + 10)
    assert block["flagState"] == "none"
    assert (block["timeElapsed"], block["timeRemain"], block["lapsRemain"]) == (0.0, None, 12)
    assert block["trackData"][-1] == "Race"
    empty = ctd.session(TimingModel())
    assert empty == {
        "flagState": "none",
        "timeElapsed": 0,
        "timeRemain": None,
        "trackData": ["", "", "", "", "", ""],
    }


def test_track_data_spec_names_and_description():
    model = timed_session()
    assert ctd.track_data_spec(model) == ["Track", "Layout", "Air temp", "Track temp", "Weather", "Session"]
    assert len(ctd.track_data(model)) == len(ctd.track_data_spec(model))
    assert ctd.name(model) == "Example League | Sunday Cup"
    assert ctd.description(model) == "Qualify - Brands Hatch (Indy)"
    assert ctd.description(timed_session(track="Brands Hatch Indy")) == "Qualify - Brands Hatch Indy"
    assert ctd.description(timed_session(layout=None)) == "Qualify - Brands Hatch"
    assert ctd.name(TimingModel()) == "carobama"


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------


def test_messages_for_each_event_kind():
    t = T0 + 0.75
    events = [
        FeedEvent(EventKind.CHAT, t, "1", "Bob O'Neil: hi all", {"server": False, "team": False}),
        FeedEvent(EventKind.CHAT, t, "2", "Ann Lee-YORK: box", {"server": False, "team": True}),
        FeedEvent(
            EventKind.CHAT,
            t,
            None,
            "Server: Chen Wei disconnected",
            {"server": True, "message": "Chen Wei disconnected"},
        ),
        FeedEvent(EventKind.CHAT, t, None, "Race Director: go go go", {"server": False, "team": False}),
        FeedEvent(
            EventKind.COLLISION,
            t,
            "7",
            "#7 (Alice Martin) contact with #22 (Bob O'Neil), 38 km/h",
            {"team": False},
        ),
        FeedEvent(
            EventKind.COLLISION, t, "3", "#3 (Ann Lee-YORK) contact with the wall, 64 km/h", {"team": True}
        ),
        FeedEvent(EventKind.JOIN, t, "1", "#1 (Bob O'Neil) joined the server"),
        FeedEvent(EventKind.LEAVE, t, "0", "#0 (Alice Martin) left the server"),
        FeedEvent(
            EventKind.SESSION_CHANGE, t, None, "Practice at Laguna Seca", {"initial": True, "looped": False}
        ),
        FeedEvent(
            EventKind.SESSION_CHANGE, t, None, "Race at Brands Hatch", {"initial": False, "looped": False}
        ),
        FeedEvent(
            EventKind.SESSION_CHANGE, t, None, "Practice restarted (looped, laps kept)", {"looped": True}
        ),
        FeedEvent(EventKind.SERVER_RESTART, t, None, "Server restarted"),
        FeedEvent(EventKind.PIT_IN, t, "1", "#1 in the pits"),
        FeedEvent(EventKind.PIT_OUT, t, "1", "#1 left the pits"),
        FeedEvent(EventKind.DRIVER_CHANGE, t, "48", "driver change"),
        FeedEvent(EventKind.LAP, t, "7", "lap"),
        FeedEvent(EventKind.FLAG, t, None, "flag green"),
        FeedEvent(EventKind.BAD_FRAME, t, None, "not JSON"),
        FeedEvent(EventKind.UNKNOWN_EVENT, t, None, "ignored EventType 73"),
        FeedEvent(EventKind.TYRE_CHANGE, t, "7", "tyres S → M"),
        FeedEvent(EventKind.LOADED, t, "1", "loaded"),
    ]
    when = int(T0)
    assert ctd.messages(events) == [
        [when, "Server", "Server restarted", "raceControl"],
        [when, "Session", "Practice restarted (looped, laps kept)", "raceControl"],
        [when, "Session", "New session: Race at Brands Hatch", "raceControl"],
        [when, "Server", "#0 (Alice Martin) left the server", None, "0"],
        [when, "Server", "#1 (Bob O'Neil) joined the server", None, "1"],
        [when, "Team", "#3 (Ann Lee-YORK) contact with the wall, 64 km/h", "yellow", "3"],
        [when, "Incident", "#7 (Alice Martin) contact with #22 (Bob O'Neil), 38 km/h", "yellow", "7"],
        [when, "Chat", "Race Director: go go go", None],
        [when, "Race Control", "Chen Wei disconnected", "raceControl"],
        [when, "Team", "Ann Lee-YORK: box", None, "2"],
        [when, "Chat", "Bob O'Neil: hi all", None, "1"],
    ]
    assert all(type(message[0]) is int for message in ctd.messages(events))
    assert ctd.messages([]) == []


# ------------------------------------------------------------------------------------------------
# Feed → CTD on the shared example capture
# ------------------------------------------------------------------------------------------------


def replay(until: float) -> tuple[EmperorFeed, list[FeedEvent]]:
    feed = EmperorFeed()
    events: list[FeedEvent] = []
    with EXAMPLE.open(encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            if "data" not in item:
                continue
            if item["t"] > until:
                break
            events += feed.receive(item["data"], T0 + item["t"])
    return feed, events


def test_example_capture_rows_at_the_end():
    feed, events = replay(until=10_000)
    model = feed.model
    spec = ctd.column_spec(model)
    assert spec == [
        Stat.NUM,
        Stat.STATE,
        Stat.DRIVER,
        Stat.CAR,
        Stat.LAPS,
        Stat.GAP,
        Stat.INT,
        Stat.LAST_LAP,
        Stat.BEST_LAP,
        Stat.PITS,
        Stat.BEST_SPEED,
    ]
    assert ctd.cars(model, spec) == [
        ["0", "RET", "Alice Martin", "Mazda MX5 CUP", 10, "", "", [107.998, ""], [106.214, "sb"], 0, 179.0],
        ["2", "RET", "Carlos Ruiz", "Mazda MX5 CUP", 4, 2.657, 2.657, [109.295, ""], [108.871, ""], 0, 177.7],
        [
            "1",
            "PIT",
            "Bob O'Neil",
            "Mazda MX5 CUP",
            1,
            15.662,
            13.005,
            [121.876, "pb"],
            [121.876, ""],
            0,
            133.3,
        ],
    ]
    assert ctd.name(model) == "Example League | Open Practice"
    assert ctd.description(model) == "Practice - Laguna Seca"
    block = ctd.session(model, now=T0 + 274.6)
    assert block["flagState"] == "green"
    assert block["timeElapsed"] == pytest.approx(10.0)
    assert block["timeRemain"] == pytest.approx(1490.0)
    assert "lapsRemain" not in block
    assert block["trackData"] == ["Laguna Seca", "", "22°C", "31°C", "Clear", "Practice"]
    assert ctd.messages(events) == [
        [int(T0 + 264.6), "Session", "Practice restarted (looped, laps kept)", "raceControl"],
        [int(T0 + 240.2), "Server", "#0 (Alice Martin) left the server", None, "0"],
        [int(T0 + 120.5), "Incident", "#1 (Bob O'Neil) contact with the wall, 64 km/h", "yellow", "1"],
        [int(T0 + 80.4), "Chat", "Bob O'Neil: hi all", None, "1"],
        [int(T0 + 12.0), "Server", "#1 (Bob O'Neil) joined the server", None, "1"],
        [int(T0), "Chat", "Carlos Ruiz: gg, off for dinner", None, "2"],
    ]


def test_sb_new_only_on_the_update_that_completed_the_lap():
    spec = [Stat.NUM, Stat.LAST_LAP]
    feed, _ = replay(until=26.311)  # the snapshot with Alice's lap 9, a new session best
    assert ctd.cars(feed.model, spec)[0] == ["0", [106.214, "sb-new"]]
    feed, _ = replay(until=30.0)  # 53 frames only: still the same update's data
    assert ctd.cars(feed.model, spec)[0] == ["0", [106.214, "sb-new"]]
    feed, _ = replay(until=39.5)  # the next snapshot
    assert ctd.cars(feed.model, spec)[0] == ["0", [106.214, "sb"]]
    feed, _ = replay(until=167.876)  # Bob's first lap: a personal best, not the session's
    assert ctd.cars(feed.model, spec)[2] == ["1", [121.876, "pb"]]
