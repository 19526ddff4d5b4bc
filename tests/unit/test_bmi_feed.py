"""BMI karting heat feed (feeds/bmi.py), its Common Timing Data view and the BMI simulator.

Pure and in-process: frames in, model/events/CTD out; no sockets, no sleeps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livetiming.racing import FlagStatus, Stat
from livetiming.service.plugins.carobama import ctd
from livetiming.service.plugins.carobama.feeds.bmi import (
    MAX_DRIVERS,
    BMIFeed,
    clean_heat_name,
    parse_gap,
    venue_from_url,
)
from livetiming.service.plugins.carobama.model import CarState, EventKind, SessionType
from livetiming.service.plugins.carobama.sim.bmi import SCENARIOS, build_bmi, format_gap

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"

#: The frame of shared/spec/bmi-heat.md, byte for byte (line breaks included).
SPEC_FRAME = """{"T":1708452000,"CE":1,"CS":1,
 "D":[{"LP":0,"A":41825,"B":36580,"K":"8","G":"","D":3591187,"L":11,"T":36580,"R":5,"N":"Maty","P":1,"M":0},
      {"LP":0,"A":40565,"B":37578,"K":"14","G":"00.998","D":3591175,"L":11,"T":40548,"R":5,"N":"leiño","P":2,"M":0}],
 "EM":0,"C":410909,"N":"[HEAT] 33 - Carrera XL ","E":1,"R":1,"L":0,"S":1}"""

T0 = 1_708_452_000
NOW = T0 + 500.0


def drv(did: Any, laps: int = 0, last: int = 0, best: int = 0, avg: int = 0, gap: Any = "",
        pos: int = 1, name: str | None = None, kart: str | None = None, **extra: Any) -> dict:
    """One driver object as BMI sends it (times in ms)."""
    row = {"LP": 0, "A": avg, "B": best, "K": kart if kart is not None else str(did),
           "G": gap, "D": did, "L": laps, "T": last, "R": 0,
           "N": name if name is not None else f"Driver {did}", "P": pos, "M": 0}
    row.update(extra)
    return row


def heat(drivers: list, S: int = 1, C: int = 0, E: int = 1, R: int = 0, L: int = 0, T: Any = T0,
         N: str = "[HEAT] 7 - Test heat ", CS: int = 1, **extra: Any) -> str:
    """A heat frame's text."""
    frame = {"T": T, "CE": 1, "CS": CS, "D": drivers, "EM": 0, "C": C, "N": N, "E": E, "R": R, "L": L, "S": S}
    frame.update(extra)
    return json.dumps(frame, ensure_ascii=False)


def kinds(events) -> list[str]:
    return [str(event.kind) for event in events]


def of_kind(events, kind) -> list:
    return [event for event in events if event.kind == kind]


def laps_frame(times: dict[int, list[int]], S: int = 1, **heat_args: Any) -> str:
    """A frame where each driver id has completed the given lap times (ms), ordered by laps."""
    rows = []
    order = sorted(times, key=lambda d: (-len(times[d]), sum(times[d])))
    for pos, did in enumerate(order, start=1):
        lap_times = times[did]
        rows.append(drv(did, laps=len(lap_times), last=lap_times[-1] if lap_times else 0,
                        best=min(lap_times) if lap_times else 0,
                        avg=round(sum(lap_times) / len(lap_times)) if lap_times else 0, pos=pos))
    return heat(rows, S=S, **heat_args)


# ------------------------------------------------------------------------------------------------
# The spec's frame
# ------------------------------------------------------------------------------------------------


def test_the_spec_frame_parses_as_is_with_utf8_names():
    feed = BMIFeed(venue="Karting Test")
    events = feed.receive(SPEC_FRAME, NOW)
    assert not of_kind(events, EventKind.BAD_FRAME)
    model = feed.model
    first, second = model.entries
    assert (first.number, first.driver, first.lap_count) == ("8", "Maty", 11)
    assert (second.number, second.driver, second.lap_count) == ("14", "leiño", 11)
    assert first.key == "d3591187" and second.key == "d3591175"
    assert (first.last_lap, first.best_lap, first.average_lap) == (36.58, 36.58, 41.825)
    assert (second.last_lap, second.best_lap, second.average_lap) == (40.548, 37.578, 40.565)
    assert first.reported_gap is None and second.reported_gap == 0.998
    assert model.best_lap == 36.58
    session = model.session
    assert session.name == "33 - Carrera XL" and session.mode == "best lap wins"
    assert session.flag is FlagStatus.GREEN and session.started_at == T0
    assert session.extra["CE"] == 1 and session.extra["EM"] == 0 and session.extra["C"] == 410909
    assert ctd.name(model) == "Karting Test"
    assert ctd.description(model) == "33 - Carrera XL (best lap wins)"
    change = of_kind(events, EventKind.SESSION_CHANGE)[0]
    assert change.text == "33 - Carrera XL" and change.data["initial"] and change.data["heat_start"] == T0
    assert ctd.messages([change]) == [[int(NOW), "Session", "Heat: 33 - Carrera XL (best lap wins)",
                                       "raceControl"]]


def test_the_spec_frame_as_utf8_bytes():
    feed = BMIFeed()
    feed.receive(SPEC_FRAME.encode("utf-8"), NOW)
    assert [entry.driver for entry in feed.model.entries] == ["Maty", "leiño"]


def test_bmi_columns_rows_and_track_data():
    feed = BMIFeed()
    feed.receive(SPEC_FRAME, NOW)
    model = feed.model
    columns = ctd.column_spec(model)
    assert columns == [Stat.NUM, Stat.STATE, Stat.DRIVER, Stat.LAPS, Stat.GAP, Stat.INT, Stat.LAST_LAP,
                       Stat.BEST_LAP, ("Avg", "time", "Average lap time")]
    rows = ctd.cars(model, columns)
    assert rows[0] == ["8", "RUN", "Maty", 11, "", "", [36.58, "sb"], [36.58, "sb"], 41.825]
    # best lap wins: Int is the difference of best laps; Gap is the source's text as seconds
    assert rows[1] == ["14", "RUN", "leiño", 11, 0.998, 0.998, [40.548, ""], [37.578, ""], 40.565]
    assert ctd.track_data_spec(model) == ["Heat", "Status", "Race mode", "Heat ends"]
    assert ctd.track_data(model) == ["33 - Carrera XL", "Running", "Best lap wins", "After time"]


def test_last_lap_flags_pb_sb_and_sb_new():
    feed = BMIFeed()
    feed.receive(laps_frame({1: [42000, 41000], 2: [42500, 41800]}), NOW)
    feed.receive(laps_frame({1: [42000, 41000], 2: [42500, 41800, 40900]}), NOW + 40)
    model = feed.model
    columns = [Stat.NUM, Stat.LAST_LAP, Stat.BEST_LAP]
    model.entry("2").last_lap_is_new = True  # the service sets it for laps new since it published
    rows = {row[0]: row for row in ctd.cars(model, columns)}
    assert rows["2"][1:] == [[40.9, "sb-new"], [40.9, "sb"]]
    assert rows["1"][1:] == [[41.0, "pb"], [41.0, ""]]
    model.entry("2").last_lap_is_new = False
    rows = {row[0]: row for row in ctd.cars(model, columns)}
    assert rows["2"][1] == [40.9, "sb"]


# ------------------------------------------------------------------------------------------------
# Heat states
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state,flag,car_state", [
    (0, FlagStatus.NONE, CarState.NOT_STARTED),
    (1, FlagStatus.GREEN, CarState.RUN),
    (2, FlagStatus.RED, CarState.RUN),
    (3, FlagStatus.RED, CarState.RUN),
    (4, FlagStatus.CHEQUERED, CarState.FIN),
    (5, FlagStatus.NONE, CarState.NOT_STARTED),
])
def test_every_heat_state_sets_flag_and_car_state(state, flag, car_state):
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=40000, best=40000)], S=state), NOW)
    assert feed.model.session.flag is flag
    assert ctd.session(feed.model)["flagState"] == flag.name.lower()
    assert feed.model.entries[0].state is car_state
    assert ctd.track_data(feed.model)[1] == {0: "Not started", 1: "Running", 2: "Paused", 3: "Stopped",
                                             4: "Finished", 5: "Next heat"}[state]


def test_state_transitions_give_each_message_once():
    feed = BMIFeed()
    said: list[tuple[str, str]] = []
    ends = []
    for index, state in enumerate([0, 0, 1, 1, 2, 2, 1, 3, 3, 1, 1, 4, 4, 4]):
        events = feed.receive(heat([drv(1)], S=state, C=600_000 - index * 1000), NOW + index)
        said += [(e.data["state"], e.text) for e in of_kind(events, EventKind.SESSION_STATE)]
        ends += of_kind(events, EventKind.SESSION_END)
    assert [state for state, _text in said] == ["started", "paused", "resumed", "stopped", "resumed",
                                                "finished"]
    assert said[0][1] == "Heat started: 7 - Test heat"
    assert len(ends) == 1 and ends[0].data["reason"] == "finished"


def test_session_state_messages_have_styles():
    feed = BMIFeed()
    events = []
    for index, state in enumerate([0, 1, 2, 1, 4]):
        events += feed.receive(heat([drv(1)], S=state), NOW + index)
    messages = ctd.messages(events)
    texts = [(m[1], m[2], m[3]) for m in messages]
    assert ("Race Control", "Heat paused: 7 - Test heat", "red") in texts
    assert ("Race Control", "Heat resumed: 7 - Test heat", "green") in texts
    assert ("Race Control", "Heat finished: 7 - Test heat", "track") in texts
    assert messages[0][2] == "Heat finished: 7 - Test heat", "newest first"


def test_finished_is_said_once_even_if_the_state_flips_back():
    feed = BMIFeed()
    finished = 0
    for index, state in enumerate([1, 4, 1, 4, 4]):
        events = feed.receive(heat([drv(1)], S=state), NOW + index)
        finished += sum(e.data.get("state") == "finished" for e in of_kind(events, EventKind.SESSION_STATE))
    assert finished == 1


def test_joining_a_paused_heat_says_so_but_not_started():
    feed = BMIFeed()
    events = feed.receive(heat([drv(1)], S=2), NOW)
    assert [e.data["state"] for e in of_kind(events, EventKind.SESSION_STATE)] == ["paused"]
    feed = BMIFeed()
    events = feed.receive(heat([drv(1)], S=1), NOW)
    assert not of_kind(events, EventKind.SESSION_STATE)


# ------------------------------------------------------------------------------------------------
# Laps
# ------------------------------------------------------------------------------------------------


def test_repeated_frames_change_nothing():
    feed = BMIFeed()
    text = laps_frame({1: [42000, 41000], 2: [43000]})
    feed.receive(text, NOW)
    before = [(e.key, e.lap_count, e.last_lap, e.best_lap) for e in feed.model.entries]
    for repeat in range(3):
        events = feed.receive(text, NOW + repeat)
        assert events == []
    assert [(e.key, e.lap_count, e.last_lap, e.best_lap) for e in feed.model.entries] == before


def test_one_new_lap_is_timed_and_stamped():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=2, last=41000, best=41000), drv(2, laps=2, last=41500, gap="01.200",
                                                                     pos=2)]), NOW)
    events = feed.receive(heat([drv(1, laps=3, last=40500, best=40500),
                                drv(2, laps=2, last=41500, gap="01.200", pos=2)]), NOW + 40.5)
    laps = of_kind(events, EventKind.LAP)
    assert len(laps) == 1 and laps[0].car_number == "1"
    assert laps[0].data["lap"] == 3 and laps[0].data["time"] == 40.5 and not laps[0].data["inferred"]
    assert laps[0].data["personal_best"] and laps[0].data["session_best"]
    lap = feed.model.entry("1").laps[-1]
    assert lap.timestamp == NOW + 40.5 and lap.gap == 0.0


def test_first_sight_records_initial_laps_without_crossing_times():
    feed = BMIFeed()
    events = feed.receive(heat([drv(1, laps=11, last=41000, best=40000)]), NOW)
    laps = of_kind(events, EventKind.LAP)
    assert len(laps) == 11 and all(e.data["initial"] for e in laps)
    entry = feed.model.entries[0]
    assert entry.lap_count == 11 and entry.laps[-1].time == 41.0
    assert all(lap.time is None and lap.inferred for lap in entry.laps[:-1])
    assert all(lap.timestamp is None for lap in entry.laps)


def test_feed_gap_then_jump_of_several_laps():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=5, last=42000, best=41000)]), NOW)
    events = feed.receive(heat([drv(1, laps=8, last=41800, best=41000)]), NOW + 130)
    laps = of_kind(events, EventKind.LAP)
    assert [e.data["lap"] for e in laps] == [6, 7, 8]
    assert [e.data["inferred"] for e in laps] == [True, True, False]
    entry = feed.model.entries[0]
    assert [lap.time for lap in entry.laps[5:]] == [None, None, 41.8]
    assert entry.laps[-1].timestamp is None, "after a gap the crossing time is unknown"
    assert entry.lap_count == 8 and entry.last_lap == 41.8


def test_jump_of_two_whose_missing_lap_was_the_new_best():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=5, last=42000, best=41000)]), NOW)
    feed.receive(heat([drv(1, laps=7, last=41800, best=40700)]), NOW + 90)
    entry = feed.model.entries[0]
    assert [lap.time for lap in entry.laps[5:]] == [40.7, 41.8]
    assert entry.best_lap == 40.7


def test_corrections_remove_laps_and_fix_times():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=5, last=42000, best=41000)]), NOW)
    feed.receive(heat([drv(1, laps=6, last=2871, best=2871)]), NOW + 1)  # a double read
    assert feed.model.entries[0].lap_count == 6 and feed.model.best_lap == 2.871
    events = feed.receive(heat([drv(1, laps=5, last=42000, best=41000)]), NOW + 1.5)
    entry = feed.model.entries[0]
    assert entry.lap_count == 5 and entry.best_lap == 41.0 and feed.model.best_lap == 41.0
    assert not of_kind(events, EventKind.LAP)
    feed.receive(heat([drv(1, laps=5, last=42100, best=41000)]), NOW + 2)  # last time corrected
    assert entry.laps[-1].time == 42.1 and entry.last_lap == 42.1
    feed.receive(heat([drv(1, laps=6, last=41500, best=41000)]), NOW + 40)
    assert entry.lap_count == 6 and entry.laps[-1].number == 6


def test_laps_after_the_chequered_flag_are_accepted_and_finish_the_kart():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=10, last=41000, best=40000),
                       drv(2, laps=9, last=42000, best=41000, pos=2)]), NOW)
    feed.receive(heat([drv(1, laps=11, last=41000, best=40000),
                       drv(2, laps=9, last=42000, best=41000, pos=2)], S=4), NOW + 41)
    one, two = feed.model.entries
    assert one.state is CarState.FIN and two.state is CarState.RUN
    feed.receive(heat([drv(1, laps=11, last=41000, best=40000),
                       drv(2, laps=10, last=42000, best=41000, pos=2)], S=4, C=0), NOW + 50)
    assert two.lap_count == 10 and two.state is CarState.FIN


def test_entries_are_keyed_by_driver_id_then_name_and_kart():
    feed = BMIFeed()
    feed.receive(heat([drv(77, laps=3, last=41000, kart="5")]), NOW)
    entry = feed.model.entries[0]
    feed.receive(heat([drv(77, laps=4, last=41000, kart="12")]), NOW + 41)  # kart swap mid-heat
    assert feed.model.entries[0] is entry and entry.number == "12" and entry.lap_count == 4
    feed = BMIFeed()
    feed.receive(heat([drv(None, laps=2, last=41000, name="Ana", kart="3"),
                       drv(0, laps=1, last=41000, name="Bo", kart="4", pos=2)]), NOW)
    assert [e.key for e in feed.model.entries] == ["nAna|k3", "nBo|k4"]


def test_duplicate_kart_numbers_are_made_unique():
    feed = BMIFeed()
    feed.receive(heat([drv(1, kart="7"), drv(2, kart="7", pos=2), drv(3, kart="", pos=3)]), NOW)
    assert [e.number for e in feed.model.entries] == ["7", "7b", "?"]


def test_order_is_the_sources_p():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=5, last=41000, pos=3), drv(2, laps=6, last=41000, pos=1),
                       drv(3, laps=4, last=41000, pos=2), drv(4, laps=9, last=41000, pos="x")]), NOW)
    assert [e.key for e in feed.model.entries] == ["d2", "d3", "d1", "d4"]
    assert [e.position for e in feed.model.entries] == [1, 2, 3, 4]


def test_intervals_from_gaps_recorded_at_the_same_lap():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=4, last=41000, pos=1), drv(2, laps=4, last=41200, gap="00.800", pos=2),
                       drv(3, laps=3, last=43000, gap="1 Lap", pos=3)]), NOW)
    # lap 5: the leader crosses; then kart 2 crosses 1.1 s behind; kart 3 is lapped
    feed.receive(heat([drv(1, laps=5, last=41000, pos=1), drv(2, laps=4, last=41200, gap="00.800", pos=2),
                       drv(3, laps=3, last=43000, gap="1 Lap", pos=3)]), NOW + 41)
    columns = [Stat.NUM, Stat.GAP, Stat.INT]
    rows = ctd.cars(feed.model, columns)
    assert rows[1] == ["2", 0.8, 0.8], "the interval at the last line both crossed, not '1 lap'"
    feed.receive(heat([drv(1, laps=5, last=41000, pos=1), drv(2, laps=5, last=41500, gap="01.100", pos=2),
                       drv(3, laps=4, last=43000, gap="1 Lap", pos=3)]), NOW + 42.1)
    rows = ctd.cars(feed.model, columns)
    assert rows == [["1", "", ""], ["2", 1.1, 1.1], ["3", "1 lap", "1 lap"]]


def test_intervals_in_best_average_heats():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=4, last=41000, best=40000, avg=41000, pos=1),
                       drv(2, laps=5, last=41000, best=39000, avg=41500, gap="00.500", pos=2)], R=2), NOW)
    assert ctd.cars(feed.model, [Stat.INT, ("Avg", "time", "Average lap time")]) == [["", 41.0], [0.5, 41.5]]
    assert ctd.description(feed.model).endswith("(best average wins)")


# ------------------------------------------------------------------------------------------------
# The clock: both readings of C
# ------------------------------------------------------------------------------------------------


def run_counter(values: list[int], E: int = 1, start: int | None = None, **feed_args: Any) -> BMIFeed:
    feed = BMIFeed(**feed_args)
    if start is not None:
        feed.receive(heat([drv(1)], S=0, CS=0, C=start, E=E, T=0), NOW - 10)
    for index, counter in enumerate(values):
        feed.receive(heat([drv(1)], S=1, C=counter, E=E), NOW + index)
    return feed


def test_c_counting_up_is_the_elapsed_reading():
    feed = run_counter([100_000, 101_000, 102_000])
    current = feed.model.session
    assert (current.time_elapsed, current.time_remaining) == (102.0, None)
    assert ctd.session(feed.model, NOW + 2)["timeElapsed"] == 102.0
    assert ctd.session(feed.model, NOW + 5)["timeElapsed"] == 105.0, "the clock runs between frames"
    assert ctd.session(feed.model, NOW + 5)["timeRemain"] is None


def test_c_counting_down_is_the_remaining_reading():
    feed = run_counter([300_000, 299_000, 298_000], E=0)  # manual end: the prior says elapsed
    current = feed.model.session
    assert current.time_remaining == 298.0
    assert ctd.session(feed.model, NOW + 5)["timeRemain"] == 295.0


def test_before_the_direction_is_seen_the_end_condition_decides():
    timed = run_counter([410_909], E=1)
    assert timed.model.session.time_remaining == 410.909
    assert timed.model.session.time_elapsed == 500.0, "receive time minus the heat's start T"
    laps = run_counter([410_909], E=2)
    assert laps.model.session.time_elapsed == 410.909 and laps.model.session.time_remaining is None


def test_countdown_shown_before_the_start_gives_the_length_and_elapsed_time():
    feed = run_counter([599_000, 598_000, 420_000], start=600_000)
    current = feed.model.session
    assert (current.time_remaining, current.time_elapsed, current.duration) == (420.0, 180.0, 600.0)
    assert ctd.session(feed.model, NOW + 2)["timeElapsed"] == 180.0


def test_zero_before_the_start_of_a_timed_heat_means_counting_up():
    feed = BMIFeed()
    feed.receive(heat([drv(1)], S=0, CS=0, C=0, E=1, T=0), NOW)
    assert feed.model.session.time_elapsed == 0.0 and feed.model.session.time_remaining is None


def test_a_forced_reading_wins():
    feed = run_counter([100_000, 101_000], counter="remaining")
    assert feed.model.session.time_remaining == 101.0


def test_a_pause_stops_the_clock_and_resuming_restarts_it():
    feed = run_counter([300_000, 299_000], start=600_000)
    feed.receive(heat([drv(1)], S=2, C=298_500), NOW + 10)
    current = feed.model.session
    assert not current.clock_running
    assert ctd.session(feed.model, NOW + 100)["timeRemain"] == 298.5
    assert ctd.session(feed.model, NOW + 100)["timeElapsed"] == 301.5
    feed.receive(heat([drv(1)], S=1, C=298_500), NOW + 100)
    assert current.clock_running
    assert ctd.session(feed.model, NOW + 102)["timeRemain"] == 296.5


@pytest.mark.parametrize("direction", ["up", "down"])
def test_finished_heat_resent_with_c_zero_keeps_its_clock(direction):
    values = [598_000, 599_000, 600_000] if direction == "up" else [2000, 1000, 0]
    feed = run_counter(values, start=0 if direction == "up" else 600_000)
    feed.receive(heat([drv(1)], S=4, C=0), NOW + 5)
    feed.receive(heat([drv(1)], S=4, C=0), NOW + 10)
    block = ctd.session(feed.model, NOW + 60)
    assert block["timeElapsed"] == 600.0 and block["timeRemain"] == 0.0
    assert block["flagState"] == "chequered"


def test_lap_race_has_laps_remaining():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=41000)], E=2, L=9, C=130_000), NOW)
    block = ctd.session(feed.model, NOW)
    assert block["lapsRemain"] == 9 and feed.model.session.laps_total == 12
    assert feed.model.session.type is SessionType.RACE
    feed.receive(heat([drv(1, laps=12, last=41000)], E=2, L=0, S=4, C=0), NOW + 400)
    assert ctd.session(feed.model, NOW + 400)["lapsRemain"] == 0


def test_joining_a_countdown_mid_heat_estimates_elapsed_from_the_start_time():
    feed = BMIFeed()
    feed.receive(heat([drv(1)], S=1, C=400_000, T=T0), T0 + 200.0)
    assert feed.model.session.time_elapsed == 200.0
    feed = BMIFeed()
    feed.receive(heat([drv(1)], S=1, C=400_000, T=T0), T0 + 10 * 86_400.0)
    assert feed.model.session.time_elapsed is None, "start time too far from the caller's clock"


# ------------------------------------------------------------------------------------------------
# Inferred pit stops
# ------------------------------------------------------------------------------------------------


def drive(feed: BMIFeed, lap_times: list[int], start: float = NOW, states: dict[int, int] | None = None):
    """Feed one kart lap by lap; returns all events. ``states``: lap number → heat state before it."""
    events = []
    clock = start
    for count in range(1, len(lap_times) + 1):
        if states and count in states:
            events += feed.receive(laps_frame({1: lap_times[:count - 1]}, S=states[count]), clock)
        clock += lap_times[count - 1] / 1000
        events += feed.receive(laps_frame({1: lap_times[:count]}), clock)
    return events


def test_a_very_long_lap_is_an_inferred_pit_stop():
    feed = BMIFeed()
    events = drive(feed, [45000, 41000, 41200, 40900, 41100, 110000, 41000])
    pits = of_kind(events, EventKind.PIT_IN)
    assert len(pits) == 1 and pits[0].data["inferred"] and pits[0].data["lap"] == 6
    assert "inferred" in pits[0].text and "pit stop" in pits[0].text
    entry = feed.model.entries[0]
    assert entry.pit_count == 1
    assert Stat.PITS in ctd.column_spec(feed.model)
    message = ctd.messages(pits)[0]
    assert message[1:4] == ["Pits", pits[0].text, "pit"] and message[4] == "1"


def test_no_pits_column_without_an_inferred_stop():
    feed = BMIFeed()
    drive(feed, [45000, 41000, 41200, 40900, 41100])
    assert Stat.PITS not in ctd.column_spec(feed.model)


def test_pit_threshold_is_configurable():
    feed = BMIFeed(pit_threshold=3.0)
    assert not of_kind(drive(feed, [45000, 41000, 41200, 40900, 41100, 110000]), EventKind.PIT_IN)


def test_no_pit_without_three_clean_laps_nor_on_lap_one():
    feed = BMIFeed()
    assert not of_kind(drive(feed, [150000, 41000, 41200, 110000]), EventKind.PIT_IN)


def test_a_lap_during_a_pause_is_not_a_pit_stop():
    feed = BMIFeed()
    events = drive(feed, [45000, 41000, 41200, 40900, 41100, 160000, 41000, 120000],
                   states={6: 2})
    pits = of_kind(events, EventKind.PIT_IN)
    assert [e.data["lap"] for e in pits] == [8], "the paused lap is skipped, a later long lap counts"


def test_a_corrected_pit_lap_removes_the_pit_stop():
    feed = BMIFeed()
    times = [45000, 41000, 41200, 40900, 41100, 110000]
    drive(feed, times)
    assert feed.model.entries[0].pit_count == 1
    feed.receive(laps_frame({1: times[:5]}), NOW + 500)
    assert feed.model.entries[0].pit_count == 0


# ------------------------------------------------------------------------------------------------
# Heats, "{}" and identity
# ------------------------------------------------------------------------------------------------


def test_empty_object_means_no_heat_loaded_said_once():
    feed = BMIFeed()
    events = feed.receive("{}", NOW)
    assert [e.text for e in of_kind(events, EventKind.SESSION_STATE)] == ["No heat loaded"]
    assert feed.receive("{}", NOW + 1) == []
    model = feed.model
    assert model.entries == [] and model.session.flag is FlagStatus.NONE
    assert ctd.description(model) == "No heat loaded"
    assert ctd.messages(events)[0][1:] == ["Race Control", "No heat loaded", "raceControl"]


def test_empty_object_after_a_heat_finalises_it_and_clears_the_table():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=41000)]), NOW)
    events = feed.receive("{}", NOW + 1)
    assert [e.data["reason"] for e in of_kind(events, EventKind.SESSION_END)] == ["unloaded"]
    assert of_kind(events, EventKind.FLAG)[0].data["flag"] == "none"
    assert feed.model.entries == [] and feed.model.session.time_elapsed is None
    generation = feed.model.session.generation
    events = feed.receive(heat([drv(1, laps=3, last=41000)]), NOW + 2)
    assert of_kind(events, EventKind.SESSION_CHANGE) and feed.model.session.generation == generation + 1
    assert of_kind(events, EventKind.SESSION_CHANGE)[0].data["message"].startswith("New heat: ")


def test_a_new_start_time_is_a_new_heat_and_a_new_session():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=41000)], T=T0, N="[HEAT] 1 - A"), NOW)
    events = feed.receive(heat([drv(1, laps=0)], T=T0 + 900, N="[HEAT] 2 - B"), NOW + 900)
    assert kinds(events)[:2] == ["session_end", "session_change"]
    assert of_kind(events, EventKind.SESSION_END)[0].data["reason"] == "replaced"
    change = of_kind(events, EventKind.SESSION_CHANGE)[0]
    assert change.text == "2 - B" and change.data["generation"] == 2 and not change.data["initial"]
    assert ctd.messages([change])[0][2] == "New heat: 2 - B (most laps wins)"
    assert feed.model.entries[0].lap_count == 0


def test_a_renamed_heat_with_the_same_start_time_is_the_same_heat():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=41000)], N="[HEAT] 1 - A"), NOW)
    events = feed.receive(heat([drv(1, laps=3, last=41000)], N="[HEAT] 1 - A (final)"), NOW + 1)
    assert not of_kind(events, EventKind.SESSION_CHANGE)
    assert feed.model.session.name == "1 - A (final)" and feed.model.entries[0].lap_count == 3


def test_a_heat_without_start_time_keeps_its_identity_when_it_starts():
    feed = BMIFeed()
    feed.receive(heat([drv(1)], S=0, T=0, N="[HEAT] 9 - Kids"), NOW)
    feed.receive(heat([drv(1)], S=0, T=T0 - 60, N="[HEAT] 9 - Kids"), NOW + 5)  # a planned time
    events = feed.receive(heat([drv(1)], S=1, T=T0, N="[HEAT] 9 - Kids"), NOW + 10)
    assert not of_kind(events, EventKind.SESSION_CHANGE)
    assert [e.data["state"] for e in of_kind(events, EventKind.SESSION_STATE)] == ["started"]
    assert feed.model.session.generation == 1


def test_the_next_heat_under_the_same_name_is_a_new_heat():
    feed = BMIFeed()
    feed.receive(heat([drv(1, laps=3, last=41000)], S=4, N="[HEAT] Open session"), NOW)
    events = feed.receive(heat([drv(2)], S=0, T=0, N="[HEAT] Open session"), NOW + 60)
    assert of_kind(events, EventKind.SESSION_CHANGE)


def test_heat_name_and_venue_helpers():
    assert clean_heat_name("[HEAT] 33 - Carrera XL ") == "33 - Carrera XL"
    assert clean_heat_name("  [heat]Kids cup") == "Kids cup"
    assert clean_heat_name("") == "Heat"
    assert venue_from_url("wss://live.kartcenter-berlin.de:8443/") == "Kartcenter Berlin"
    assert venue_from_url("ws://www.kartbahn.example.com/ws") == "Kartbahn"
    assert venue_from_url("ws://127.0.0.1:9000/") == "127.0.0.1"
    assert venue_from_url("ws://localhost/") == "localhost"
    assert venue_from_url("not a url") is None


@pytest.mark.parametrize("raw,expected", [
    ("", (None, None, None)),
    ("00.998", (0.998, 0.998, None)),
    ("03.421", (3.421, 3.421, None)),
    ("1:02.345", (62.345, 62.345, None)),
    ("1 Lap", ("1 lap", None, 1)),
    ("2 Laps", ("2 laps", None, 2)),
    ("3L", ("3 laps", None, 3)),
    ("2", ("2 laps", None, 2)),
    (1.5, (1.5, 1.5, None)),
    ("-", ("-", None, None)),
    (-4, (None, None, None)),
    ({"x": 1}, (None, None, None)),
    (True, (None, None, None)),
])
def test_the_sources_gap_text(raw, expected):
    assert parse_gap(raw) == expected


def test_gap_format_of_the_simulator_round_trips():
    for ms in (0, 998, 3421, 59_999, 62_345):
        assert parse_gap(format_gap(ms))[1] == ms / 1000


# ------------------------------------------------------------------------------------------------
# Hostile input
# ------------------------------------------------------------------------------------------------

HOSTILE = [
    "", "   ", "not json", "[1, 2]", '"text"', "null", "42", "true", '{"foo": 1}', '{"N": ',
    "[" * 100_000 + "]" * 100_000, '{"D": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"T": 1e999, "S": NaN, "C": Infinity}', "\x00\x01", "\ud800",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_never_raises_and_leaves_the_heat_alone(text):
    feed = BMIFeed()
    feed.receive(SPEC_FRAME, NOW)
    before = [(e.key, e.lap_count, e.last_lap) for e in feed.model.entries]
    events = feed.receive(text, NOW + 1)
    assert all(e.kind in (EventKind.BAD_FRAME,) for e in events)
    assert [(e.key, e.lap_count, e.last_lap) for e in feed.model.entries] == before
    assert feed.model.session.name == "33 - Carrera XL"


@pytest.mark.parametrize("value", [None, b"\xff\xfe", 12, 3.5, ["x"], {"a": 1}])
def test_non_text_frames(value):
    events = BMIFeed().receive(value, NOW)  # type: ignore[arg-type]
    assert kinds(events) == ["bad_frame"]


def test_wrong_types_negative_and_huge_values_are_partly_used():
    feed = BMIFeed()
    feed.receive(SPEC_FRAME, NOW)
    junk = {"T": T0, "N": "[HEAT] 33 - Carrera XL ", "S": "running", "C": -5, "E": "x", "R": None,
            "D": [None, 5, "x", [], {"D": {"x": 1}, "N": ["a"], "K": 1e300, "L": -3, "T": -1, "B": 1e308,
                                     "A": "NaN", "G": {"a": 1}, "P": "first"},
                  {"D": 3591187, "N": "Maty", "K": "8", "L": 10**12, "T": 10**15, "B": -1, "P": 1}]}
    events = feed.receive(json.dumps(junk), NOW + 1)
    bad = of_kind(events, EventKind.BAD_FRAME)
    assert len(bad) == 1 and bad[0].data["partial"]
    maty = next(e for e in feed.model.entries if e.key == "d3591187")
    assert maty.lap_count == 11, "an unusable lap counter changes nothing"
    assert maty.last_lap == 36.58 or maty.last_lap is None or maty.last_lap > 0
    feed.receive(SPEC_FRAME, NOW + 2)
    assert [e.driver for e in feed.model.entries] == ["Maty", "leiño"]
    assert [e.lap_count for e in feed.model.entries] == [11, 11]
    assert feed.model.session.mode == "best lap wins"


def test_ten_thousand_drivers_are_capped_quickly():
    drivers = [drv(index + 1, laps=50, last=41000, best=40000, pos=index + 1) for index in range(10_000)]
    feed = BMIFeed()
    began = time.perf_counter()
    events = feed.receive(heat(drivers), NOW)
    assert time.perf_counter() - began < 10
    assert len(feed.model.entries) == MAX_DRIVERS
    assert any(e.kind == EventKind.BAD_FRAME and e.data.get("partial") for e in events)
    columns = ctd.column_spec(feed.model)
    assert len(ctd.cars(feed.model, columns)) == MAX_DRIVERS


def test_huge_lap_counters_are_bounded():
    feed = BMIFeed()
    feed.receive(heat([drv(index, laps=5000, last=41000, pos=index) for index in range(1, 40)]), NOW)
    assert sum(e.lap_count for e in feed.model.entries) <= 50_000


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)), max_leaves=12)
_driver_keys = ["LP", "A", "B", "K", "G", "D", "L", "T", "R", "N", "P", "M"]
_drivers = st.lists(st.one_of(
    st.fixed_dictionaries({}, optional={key: st.one_of(_scalars, _json) for key in _driver_keys}),
    st.builds(drv, st.integers(1, 4), st.integers(0, 30), st.integers(-5, 200_000),
              st.integers(-5, 200_000), st.integers(-5, 200_000),
              st.sampled_from(["", "00.998", "1 Lap", "x", "2"]), st.integers(-1, 5)),
    _json,
), max_size=6)
_heats = st.fixed_dictionaries({}, optional={
    "T": st.one_of(st.sampled_from([T0, T0 + 1, 0, -1, 1e300]), _scalars),
    "N": st.one_of(st.sampled_from(["[HEAT] A", "[HEAT] B", ""]), _scalars),
    "S": st.one_of(st.integers(-1, 6), _scalars), "E": st.one_of(st.integers(-1, 4), _scalars),
    "R": st.one_of(st.integers(-1, 3), _scalars), "C": st.one_of(st.integers(-10, 10**13), _scalars),
    "CS": st.one_of(st.integers(0, 1), _scalars), "L": st.one_of(st.integers(-1, 20), _scalars),
    "D": st.one_of(_drivers, _json), "CE": _json, "EM": _json,
})
_texts = st.one_of(
    _heats.map(lambda frame: json.dumps(frame, allow_nan=True)),
    _json.map(lambda value: json.dumps(value, allow_nan=True)),
    st.text(max_size=30), st.just("{}"), st.just(SPEC_FRAME),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_texts, min_size=1, max_size=8),
       st.floats(allow_nan=True, allow_infinity=True),
       st.floats(min_value=0.5, max_value=5.0))
def test_fuzz_receive_never_raises_and_ctd_always_renders(texts, timestamp, threshold):
    feed = BMIFeed(pit_threshold=threshold)
    for index, text in enumerate(texts):
        events = feed.receive(text, timestamp + index if timestamp == timestamp else timestamp)
        assert isinstance(events, list)
        assert not any("internal error" in e.text for e in events), [e.text for e in events]
        model = feed.model
        columns = ctd.column_spec(model)
        rows = ctd.cars(model, columns)
        assert all(len(row) == len(columns) for row in rows)
        json.dumps(ctd.session(model, NOW))
        json.dumps(ctd.messages(events))
        ctd.description(model), ctd.track_data(model), ctd.name(model)
        numbers = [entry.number for entry in model.entries]
        assert len(numbers) == len(set(numbers)), "car numbers are unique"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_fuzz_mutated_simulator_frames_never_raise(rnd):
    frames = [text for _t, text in build_bmi("sequence", seed=2).frames()][::7]
    feed = BMIFeed()
    for text in frames[:40]:
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("D") and rnd.random() < 0.7:
            target = rnd.choice(frame["D"]) if rnd.random() < 0.6 else frame
            key = rnd.choice(list(target))
            target[key] = rnd.choice([None, -1, 10**18, "x", [], {}, 1e308, True, "1:2:3", 0])
            text = json.dumps(frame)
        events = feed.receive(text, NOW)
        assert not any("internal error" in e.text for e in events)
        ctd.cars(feed.model, ctd.column_spec(feed.model))


# ------------------------------------------------------------------------------------------------
# The simulator and its truth
# ------------------------------------------------------------------------------------------------


def _value(cell: Any) -> Any:
    return cell[0] if isinstance(cell, list) else cell


def check_checkpoint(feed: BMIFeed, checkpoint: dict) -> list:
    """Differences between what the CTD shows and a checkpoint's truth."""
    model = feed.model
    columns = ctd.column_spec(model)
    index = {tuple(getattr(c, "value", c))[0]: n for n, c in enumerate(columns)}
    rows = ctd.cars(model, columns)
    problems: list = []
    if ctd.session(model)["flagState"] != checkpoint["flag"]:
        problems.append(("flag", ctd.session(model)["flagState"], checkpoint["flag"]))
    if len(rows) != len(checkpoint["cars"]):
        return problems + [("cars", len(rows), len(checkpoint["cars"]))]
    for row, car in zip(rows, checkpoint["cars"], strict=True):
        shown = {
            "kart": row[index["Num"]], "driver": row[index["Driver"]], "laps": row[index["Laps"]],
            "last": _value(row[index["Last"]]) or None, "best": _value(row[index["Best"]]) or None,
            "average": row[index["Avg"]] or None, "gap": row[index["Gap"]], "interval": row[index["Int"]],
            "state": row[index["State"]], "pits": row[index["Pits"]] if "Pits" in index else 0,
        }
        for key, got in shown.items():
            want = car[key]
            if isinstance(want, dict):
                continue  # {"observed": true}: only the consumer's own clock can time it
            if isinstance(want, float) and isinstance(got, (int, float)):
                if abs(want - got) > 0.0015:
                    problems.append((car["kart"], key, got, want))
            elif got != want:
                problems.append((car["kart"], key, got, want))
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("counter", ["remaining", "elapsed"])
def test_feed_shows_the_simulators_truth_at_every_checkpoint(scenario, counter):
    sim = build_bmi(scenario, seed=3, counter=counter)
    truth = sim.truth()
    checkpoints = {c["frames"]: c for c in truth["checkpoints"]}
    feed = BMIFeed()
    for number, (t, text) in enumerate(sim.frames(), start=1):
        feed.receive(text, 1_900_000_000 + t)
        checkpoint = checkpoints.get(number)
        if checkpoint is None:
            continue
        assert check_checkpoint(feed, checkpoint) == [], checkpoint["name"]
        if checkpoint["heat"] is None:
            continue
        clock, block = checkpoint["clock"], ctd.session(feed.model)
        assert block.get("lapsRemain") == clock["laps_remaining"], checkpoint["name"]
        if clock["counts_down"]:
            assert block["timeRemain"] == pytest.approx(clock["remaining"], abs=0.002), checkpoint["name"]
            if clock["start_seen"]:
                assert block["timeElapsed"] == pytest.approx(clock["elapsed"], abs=0.002)
        else:
            assert block["timeElapsed"] == pytest.approx(clock["elapsed"], abs=0.002), checkpoint["name"]
        assert ctd.description(feed.model) == checkpoint["description"]


def test_simulator_is_deterministic_and_writes_truth(tmp_path):
    from livetiming.service.plugins.carobama.sim.cli import main

    for run in ("a", "b"):
        assert main(["bmi", "--scenario", "sequence", "--seed", "4", "--out", str(tmp_path / f"{run}.jsonl"),
                     "--truth", str(tmp_path / f"{run}.truth.json")]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    header = json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert header["source"] == "bmi" and header["capture"] == 1
    truth = json.loads((tmp_path / "a.truth.json").read_text(encoding="utf-8"))
    assert {c["heat"]["mode"] for c in truth["checkpoints"] if c["heat"]} == {0, 1, 2}


def test_demo_scenario_has_every_kind_of_heat():
    sim = build_bmi("demo")
    truth = sim.truth()
    names = [c["name"] for c in truth["checkpoints"]]
    assert any("Sprint" in n and n.endswith("after-gap") for n in names)
    assert any(n.endswith(":paused") for n in names)
    assert any("Endurance" in n and n.endswith(":pit") for n in names)
    final = truth["checkpoints"][-1]
    assert len(final["cars"]) == 10 and all(car["pits"] == 2 for car in final["cars"])
    sprint = next(c for c in truth["checkpoints"] if c["name"].endswith("Sprint 10 min:finished"))
    assert len(sprint["cars"]) == 12 and {"Maty", "leiño"} <= {car["driver"] for car in sprint["cars"]}


def test_bundled_demo_capture_is_small_and_bmi():
    from livetiming.service.plugins.carobama.capture import read_capture
    from livetiming.service.plugins.carobama.demo import DEMOS, demo_capture

    assert DEMOS["bmi"] == ("demo-bmi.capture.jsonl.gz", "/")
    path = Path(demo_capture("bmi"))
    assert path.stat().st_size < 1_000_000
    header, _reader = read_capture(path)
    assert header["source"] == "bmi"
