"""Structural checks of analysis data (timing71-wire §4.1, §4.4): what Timing71 clients require."""

from __future__ import annotations

KEYS = ("static", "driver", "lap", "stint", "car_messages", "messages", "session")


def _check_flag(flag) -> None:
    assert isinstance(flag, int) and not isinstance(flag, bool) and 0 <= flag <= 12, flag


def check_stint(stint: list, drivers: list) -> None:
    """One stint tuple: ``[startLap, startTime, endLap, endTime, inProgress, driverIndex, best,
    yellowLaps, average, [[laptime, flag], ...]]``."""
    assert isinstance(stint, list) and len(stint) == 10, stint
    start_lap, start_time, end_lap, end_time, in_progress, driver, best, yellow, average, laps = stint
    assert isinstance(start_lap, int) and isinstance(end_lap, int) and end_lap >= start_lap
    assert isinstance(start_time, (int, float))
    assert end_time is None or end_time >= start_time
    assert isinstance(in_progress, bool)
    assert isinstance(driver, int) and -1 <= driver < len(drivers)
    assert best is None or best > 0
    assert isinstance(yellow, int) and yellow >= 0
    assert average is None or average > 0
    assert isinstance(laps, list)
    for lap in laps:
        assert isinstance(lap, list) and len(lap) == 2 and lap[0] > 0, lap
        _check_flag(lap[1])
    if laps:
        assert best == min(lap[0] for lap in laps)


def check_analysis(data: dict, with_service: bool = False) -> None:
    """Raise AssertionError when ``data`` would be rejected by COMMON's v1 migration or LTA."""
    for key in KEYS:
        assert key in data, f"missing key {key}"
    static = data["static"]
    for num, value in static.items():
        assert isinstance(num, str)
        assert isinstance(value, list) and len(value) == 3
        drivers = data["driver"].get(num)
        assert isinstance(drivers, list), f"car {num} has no driver list"
        assert all(isinstance(name, str) for name in drivers)
        stints = data["stint"].get(num)
        assert isinstance(stints, list), f"car {num} has no stint list"
        for stint in stints:
            check_stint(stint, drivers)
            assert stint[4] is False
        lap = data["lap"].get(num)
        assert isinstance(lap, list) and len(lap) == 2, f"car {num} lap entry {lap}"
        if lap[0] is not None:
            check_stint(lap[0], drivers)
            assert lap[0][4] is True
        assert isinstance(data["car_messages"].get(num, []), list)
    session = data["session"]
    for key in ("currentTimestamp", "flagStats", "leaderLap"):
        assert key in session, f"session.{key} missing"
    for period in session["flagStats"]:
        assert isinstance(period, list) and len(period) == 5
        _check_flag(period[0])
    open_periods = [period for period in session["flagStats"] if period[4] is None]
    assert len(open_periods) <= 1
    assert isinstance(data["messages"].get("messages"), list)
    for message in data["messages"]["messages"]:
        assert len(message) < 5 or message[4] is None
    if with_service:
        assert "colSpec" in data["service"]
        num_index = [column[0] for column in data["service"]["colSpec"]].index("Num")
        for car in data["state"]["cars"]:
            assert car[num_index] in static, f"car {car[num_index]} of the state is not in static"
        assert data["state"]["session"].get("flagState") in (
            "none", "green", "white", "chequered", "yellow", "fcy", "code_60", "vsc", "sc",
            "caution", "red", "slow_zone", "code_60_zone")
