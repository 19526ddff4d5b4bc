"""The analysis model: what is known about every car, stint, lap and flag period.

Everything here is updated incrementally, one committed second at a time,
with work proportional to the cars in that second's table (never to the
laps recorded so far), so analysis stays cheap on the reactor thread for
the whole of a 24-hour race. The model is plain data and round-trips
through JSON (``to_json`` / ``from_json``) for the saved analysis state.

Rules (documented for users of the analysis data):

* A lap is detected when the car's ``Laps`` value increases; when the
  column spec has no ``Laps`` column (or its value is not a number) a
  change of the ``Last`` lap time counts as a lap. A lap takes the ``Last``
  time shown when it is counted; if ``Last`` had not changed yet (the same
  time twice, or a feed that updates ``Last`` after ``Laps``) and then
  changes before the next lap, the lap's time is corrected. Services should
  therefore always publish a ``Laps`` column, and ``Last`` for lap times.
* A lap's flag is the most severe flag (highest ``FlagStatus``) shown while
  it was driven; laps flagged ``YELLOW`` or worse count as yellow laps.
* A stint runs from the moment the car is seen out of the pits until it
  enters a pit state (``PIT``, ``FUEL``, ``N/S``), retires (``RET``) or
  finishes (``FIN``), or until it completes a lap while the chequered flag
  is out (it has taken the flag). A finished car starts no new stint until
  the flag changes from chequered to something else.
* A stint's average lap excludes its first (out) lap and, when it ended in
  the pits, its last (in) lap; it is null when no lap remains.
* A lap count that goes back (a new session that the service did not
  announce with ``start_new_session()``) ends the car's stint; the next
  stint starts from the new count.
* Static data (class, team, car) is the first non-empty value seen.
"""

from __future__ import annotations

import math
import re
from typing import Any

from livetiming.racing import FlagStatus

PIT_STATES = frozenset(("PIT", "FUEL", "N/S"))
ENDED_STATES = frozenset(("FIN", "RET"))
YELLOW = int(FlagStatus.YELLOW)
CHEQUERED = int(FlagStatus.CHEQUERED)

_TIME = re.compile(r"^\s*(?:(\d+):)?(\d+(?:\.\d+)?)\s*$")


def cell_value(cell: Any) -> Any:
    """The value of a table cell (``[value, flag]`` cells give their value)."""
    if type(cell) is list or type(cell) is tuple:
        return cell[0] if cell else None
    return cell


def parse_laptime(value: Any) -> float | None:
    """A lap time in seconds from a number or ``"M:SS.sss"``/``"SS.sss"`` text; None if unusable."""
    if type(value) is float or type(value) is int:
        seconds = float(value)
    elif isinstance(value, str):
        match = _TIME.match(value)
        if not match:
            return None
        seconds = float(match.group(2)) + 60 * int(match.group(1) or 0)
    else:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def parse_lap_count(value: Any) -> int | None:
    """The lap count in a ``Laps`` cell, or None when it is not a number."""
    if type(value) is int:
        return value
    if type(value) is float:
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


class Stint:
    """A car's run between pit stops: laps, flags, driver, best and average lap."""

    __slots__ = ("start_lap", "start_time", "end_lap", "end_time", "in_progress", "driver",
                 "laps", "best", "yellow", "total", "counted", "ended_in_pit")

    def __init__(self, start_lap: int, start_time: int, driver: str | None):
        self.start_lap = start_lap
        self.start_time = start_time
        self.end_lap: int | None = None
        self.end_time: int | None = None
        self.in_progress = True
        self.driver = driver
        #: ``[laptime, flag]`` of every timed lap, in order.
        self.laps: list[list] = []
        self.best: float | None = None
        self.yellow = 0
        #: Sum and number of lap times after the first (out) lap: the running average.
        self.total = 0.0
        self.counted = 0
        self.ended_in_pit = False

    def add_lap(self, laptime: float | None, flag: int) -> None:
        """Record a completed lap (``laptime`` None: lap without a usable time)."""
        if flag >= YELLOW:
            self.yellow += 1
        if laptime is not None:
            self.add_time(laptime, flag)

    def add_time(self, laptime: float, flag: int) -> None:
        """Add a lap's time (for a lap already counted whose time came late)."""
        if self.laps:
            self.total += laptime
            self.counted += 1
        self.laps.append([laptime, flag])
        if self.best is None or laptime < self.best:
            self.best = laptime

    def correct_last_time(self, laptime: float) -> None:
        """Replace the time of the latest lap (its time arrived after it was counted)."""
        old, flag = self.laps[-1]
        self.laps[-1] = [laptime, flag]
        if len(self.laps) > 1:
            self.total += laptime - old
        if self.best == old and laptime > old:
            self.best = min(lap[0] for lap in self.laps)
        elif self.best is None or laptime < self.best:
            self.best = laptime

    def finish(self, lap: int, timestamp: int, in_pit: bool) -> None:
        """Close the stint."""
        self.end_lap = lap
        self.end_time = timestamp
        self.in_progress = False
        self.ended_in_pit = in_pit

    @property
    def average(self) -> float | None:
        """Average lap without the out lap and (for a stint ended in the pits) the in lap."""
        total, counted = self.total, self.counted
        if self.ended_in_pit and counted:
            total -= self.laps[-1][0]
            counted -= 1
        if counted <= 0:
            return None
        return round(total / counted, 3)

    def to_json(self) -> dict:
        """This stint as plain data (for the saved analysis state)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: dict) -> Stint:
        """Rebuild a stint saved by ``to_json``."""
        stint = cls(data["start_lap"], data["start_time"], data.get("driver"))
        for name in cls.__slots__:
            if name in data:
                setattr(stint, name, data[name])
        return stint


class Car:
    """Everything analysis knows about one car (by race number)."""

    __slots__ = ("race_num", "race_class", "team", "vehicle", "drivers", "driver", "stints",
                 "current_stint", "current_lap", "last_pass", "messages", "lap_flag", "finished",
                 "seen", "prev_state", "prev_laps", "prev_last", "provisional", "stint_data",
                 "last_row", "static_done", "last_static")

    def __init__(self, race_num: str):
        self.race_num = race_num
        self.race_class: Any = None
        self.team: Any = None
        self.vehicle: Any = None
        #: Driver names in the order they were first seen (stints refer to them by index).
        self.drivers: list[str] = []
        self.driver: str | None = None
        #: Completed stints.
        self.stints: list[Stint] = []
        self.current_stint: Stint | None = None
        self.current_lap = 0
        self.last_pass: int | None = None
        self.messages: list[list] = []
        self.lap_flag = 0
        self.finished = False
        self.seen = False
        self.prev_state: Any = None
        self.prev_laps: int | None = None
        self.prev_last: Any = None
        #: Where the latest lap is when its time was carried over from the previous lap
        #: (``"current"`` or ``"last"`` stint) and may still be corrected; else None.
        self.provisional: str | None = None
        #: Completed stints as published tuples (they never change once complete).
        self.stint_data: list[list] = []
        #: The values of the latest row taken in, to skip rows that did not change.
        self.last_row: tuple | None = None
        #: True once class, team and car are known (or have no column).
        self.static_done = False
        self.last_static: tuple | None = None

    def for_json(self) -> list:
        """The car's static data as published: ``[class, team, car]``."""
        return [self.race_class, self.team, self.vehicle]

    def driver_index(self, name: str | None) -> int:
        """Index of ``name`` in ``drivers``, -1 when unknown."""
        if name is None:
            return -1
        try:
            return self.drivers.index(name)
        except ValueError:
            return -1

    def stint_tuple(self, stint: Stint | None, timestamp: int | None) -> list | None:
        """The published form of a stint (``map_stint_with``)."""
        if stint is None:
            return None
        in_progress = stint.in_progress
        return [
            stint.start_lap,
            stint.start_time,
            self.current_lap if in_progress else stint.end_lap,
            timestamp if in_progress else stint.end_time,
            in_progress,
            self.driver_index(stint.driver),
            stint.best,
            stint.yellow,
            stint.average,
            [list(lap) for lap in stint.laps],
        ]

    def to_json(self) -> dict:
        """This car as plain data (for the saved analysis state)."""
        data = {name: getattr(self, name) for name in self.__slots__
                if name not in _TRANSIENT_CAR_FIELDS}
        data["stints"] = [stint.to_json() for stint in self.stints]
        data["current_stint"] = self.current_stint.to_json() if self.current_stint else None
        data["stint_data"] = self.stint_data
        return data

    @classmethod
    def from_json(cls, data: dict) -> Car:
        """Rebuild a car saved by ``to_json``."""
        car = cls(str(data["race_num"]))
        for name in cls.__slots__:
            if name in data and name not in _TRANSIENT_CAR_FIELDS:
                setattr(car, name, data[name])
        car.stint_data = data.get("stint_data", [])
        car.stints = [Stint.from_json(stint) for stint in data.get("stints", [])]
        current = data.get("current_stint")
        car.current_stint = Stint.from_json(current) if current else None
        return car


_TRANSIENT_CAR_FIELDS = frozenset(("stints", "current_stint", "stint_data", "last_row",
                                   "static_done", "last_static"))
_STATIC_FIELDS = ("race_class", "team", "vehicle")


def static_values(row: Any, indexes: tuple) -> tuple:
    """Class, team and car of a table row (None where the column is missing)."""
    values = []
    size = len(row)
    for index in indexes:
        value = row[index] if index is not None and index < size else None
        if type(value) is list or type(value) is tuple:
            value = value[0] if value else None
        values.append(value)
    return tuple(values)


class AnalysisModel:
    """All cars, the flag periods, the session messages and the leader's lap."""

    def __init__(self) -> None:
        self.cars: dict[str, Car] = {}
        #: ``[flag, startLap, startTime, endLap, endTime]``; the last one may be open.
        self.flag_periods: list[list] = []
        self.flag: int | None = None
        self.leader_lap = 0
        self.latest_timestamp: int | None = None
        #: Session messages (no car number), newest first.
        self.messages: list[list] = []
        #: The committed state's messages (to find new ones when none are given).
        self.last_messages: list = []

    # ----- one committed second ---------------------------------------------------

    def apply(self, second: int, rows: list[tuple], flag_state: Any, new_messages: list,
              changes: Changes | None, static_indexes: tuple = (None, None, None)) -> None:
        """Take in one second's table, flag and new messages.

        ``rows`` holds ``((num, state, laps, last, driver), raw_row)`` per car
        (see ``extract_rows``); ``static_indexes`` are the columns of class,
        team and car in the raw rows. Rows that did not change since the
        previous second are skipped unless the flag changed.
        """
        self.latest_timestamp = second
        flag = int(FlagStatus.fromString(flag_state if isinstance(flag_state, str) else None))
        flag_changed = flag != self.flag
        if flag_changed:
            self._flag_change(flag, second, changes)
        cars = self.cars
        for values, raw in rows:
            car = cars.get(values[0])
            if car is not None and not flag_changed and values == car.last_row:
                if car.static_done or static_values(raw, static_indexes) == car.last_static:
                    continue
            self._update_car(values, raw, car, second, flag, changes, static_indexes)
        if new_messages:
            self._take_messages(new_messages, changes)

    def _flag_change(self, flag: int, second: int, changes: Changes | None) -> None:
        previous = self.flag
        if self.flag_periods and self.flag_periods[-1][3] is None and self.flag_periods[-1][4] is None:
            self.flag_periods[-1][3] = self.leader_lap
            self.flag_periods[-1][4] = second
        self.flag_periods.append([flag, self.leader_lap, second, None, None])
        self.flag = flag
        for car in self.cars.values():
            if flag > car.lap_flag:
                car.lap_flag = flag
            if previous == CHEQUERED:
                car.finished = False
        if changes is not None:
            changes.session = True

    def _update_car(self, values: tuple, raw: Any, car: Car | None, second: int, flag: int,
                    changes: Changes | None, static_indexes: tuple) -> None:
        num, state, laps_cell, last_cell, driver = values
        if car is None:
            car = self.cars[num] = Car(num)
            car.lap_flag = flag
            if changes is not None:
                changes.static = True
                changes.driver = True
                changes.cars_full.add(num)
        car.last_row = values
        if not car.static_done:
            statics = static_values(raw, static_indexes)
            car.last_static = statics
            done = True
            for field, index, value in zip(_STATIC_FIELDS, static_indexes, statics, strict=True):
                if index is None or getattr(car, field):
                    continue
                if value:
                    setattr(car, field, value)
                    if changes is not None:
                        changes.static = True
                else:
                    done = False
            car.static_done = done
        if driver != car.driver:
            if driver and driver not in car.drivers:
                car.drivers.append(driver)
                if changes is not None:
                    changes.driver = True
            car.driver = driver
            if driver and car.current_stint is not None:
                car.current_stint.driver = driver
            if changes is not None:
                changes.laps.add(num)

        laps = parse_lap_count(laps_cell)
        last = last_cell
        if car.seen:
            self._detect_laps(car, laps, last, second, flag, changes)
        else:
            car.seen = True
            if laps is not None:
                car.current_lap = laps
            if laps is not None and laps > self.leader_lap:
                self.leader_lap = laps
                if changes is not None:
                    changes.session = True
        car.prev_laps = laps
        car.prev_last = last

        if state != car.prev_state:
            car.prev_state = state
            if state in ENDED_STATES:
                car.finished = True
            if (state in PIT_STATES or state in ENDED_STATES) and car.current_stint is not None:
                self._close_stint(car, second, state in PIT_STATES, changes)
        if (car.current_stint is None and not car.finished and state not in PIT_STATES
                and state not in ENDED_STATES):
            car.current_stint = Stint(car.current_lap, second, car.driver or None)
            if changes is not None:
                changes.laps.add(num)

    def _detect_laps(self, car: Car, laps: int | None, last: Any, second: int, flag: int,
                     changes: Changes | None) -> None:
        if laps is not None and car.prev_laps is not None:
            if laps > car.prev_laps:
                self._complete_lap(car, laps, last, second, flag, changes)
            elif laps < car.prev_laps:
                # The count went back (a new session the service did not announce): the stint
                # so far ends here and the next one starts from the new count.
                if car.current_stint is not None:
                    self._close_stint(car, second, False, changes)
                car.current_lap = laps
                car.provisional = None
            elif last != car.prev_last and car.provisional is not None:
                self._correct_lap_time(car, last, changes)
        elif laps is None and last != car.prev_last and parse_laptime(last) is not None:
            self._complete_lap(car, car.current_lap + 1, last, second, flag, changes)
        elif laps is not None and car.prev_laps is None:
            car.current_lap = laps

    def _complete_lap(self, car: Car, lap_count: int, last: Any, second: int, flag: int,
                      changes: Changes | None) -> None:
        lap_flag = car.lap_flag
        car.lap_flag = flag
        car.current_lap = lap_count
        car.last_pass = second
        car.provisional = None
        stint = car.current_stint
        if stint is not None:
            laptime = parse_laptime(last)
            stint.add_lap(laptime, lap_flag)
            if laptime is not None and last == car.prev_last:
                car.provisional = "current"
        if lap_count > self.leader_lap:
            self.leader_lap = lap_count
            if changes is not None:
                changes.session = True
        if changes is not None:
            changes.laps.add(car.race_num)
        if flag == CHEQUERED and stint is not None:
            car.finished = True
            self._close_stint(car, second, False, changes)

    def _correct_lap_time(self, car: Car, last: Any, changes: Changes | None) -> None:
        laptime = parse_laptime(last)
        if laptime is None:
            return
        where = car.provisional
        car.provisional = None
        if where == "current" and car.current_stint is not None and car.current_stint.laps:
            car.current_stint.correct_last_time(laptime)
        elif where == "last" and car.stints and car.stints[-1].laps:
            stint = car.stints[-1]
            stint.correct_last_time(laptime)
            car.stint_data[-1] = car.stint_tuple(stint, stint.end_time)
            if changes is not None:
                changes.stints.add(car.race_num)
        else:
            return
        if changes is not None:
            changes.laps.add(car.race_num)

    def _close_stint(self, car: Car, second: int, in_pit: bool, changes: Changes | None) -> None:
        stint = car.current_stint
        if stint is None:
            return
        stint.finish(car.current_lap, second, in_pit)
        car.stints.append(stint)
        car.current_stint = None
        car.stint_data.append(car.stint_tuple(stint, second))
        if car.provisional == "current":
            car.provisional = "last"
        if changes is not None:
            changes.stints.add(car.race_num)
            changes.laps.add(car.race_num)

    def _take_messages(self, new_messages: list, changes: Changes | None) -> None:
        session_messages = []
        for message in reversed(new_messages):  # oldest first
            car_num = message[4] if len(message) > 4 else None
            if car_num is None:
                text = message[2] if len(message) > 2 else ""
                if not (isinstance(text, str) and "Driver change (" in text):
                    session_messages.append(message)
                continue
            style = message[3] if len(message) > 3 else None
            if style in ("pit", "out"):
                continue
            key = str(car_num)
            car = self.cars.get(key)
            if car is None:
                continue
            car.messages.append(list(message))
            if changes is not None:
                changes.car_messages.add(key)
        if session_messages:
            session_messages.reverse()
            self.messages[:0] = [list(message) for message in session_messages]
            if changes is not None:
                changes.messages = True

    # ----- persistence ---------------------------------------------------------------

    def to_json(self) -> dict:
        """The whole model as plain data."""
        return {
            "cars": {num: car.to_json() for num, car in self.cars.items()},
            "flag_periods": self.flag_periods,
            "flag": self.flag,
            "leader_lap": self.leader_lap,
            "latest_timestamp": self.latest_timestamp,
            "messages": self.messages,
            "last_messages": self.last_messages,
        }

    @classmethod
    def from_json(cls, data: dict) -> AnalysisModel:
        """Rebuild a model saved by ``to_json``."""
        model = cls()
        model.cars = {str(num): Car.from_json(car) for num, car in data.get("cars", {}).items()}
        model.flag_periods = [list(period) for period in data.get("flag_periods", [])]
        model.flag = data.get("flag")
        model.leader_lap = data.get("leader_lap", 0)
        model.latest_timestamp = data.get("latest_timestamp")
        model.messages = data.get("messages", [])
        model.last_messages = data.get("last_messages", [])
        return model


class Changes:
    """What one committed second changed, to know which keys to publish."""

    __slots__ = ("static", "driver", "session", "messages", "laps", "stints", "car_messages",
                 "cars_full")

    def __init__(self) -> None:
        self.static = False
        self.driver = False
        self.session = False
        self.messages = False
        self.laps: set[str] = set()
        self.stints: set[str] = set()
        self.car_messages: set[str] = set()
        #: Cars seen for the first time (every per-car key is published for them).
        self.cars_full: set[str] = set()

    def any(self) -> bool:
        """True when the second changed anything analysis publishes."""
        return bool(self.static or self.driver or self.session or self.messages or self.laps
                    or self.stints or self.car_messages or self.cars_full)
