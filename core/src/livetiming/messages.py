"""Message generators: compare two timing states and describe what happened.

A message is ``[unix_seconds, category, text, style]`` with the car number
appended for per-car messages. Texts and styles are read by people and by
client themes, so the built-in wording is fixed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from livetiming.racing import FlagStatus, Stat

#: Finds a car number in free text such as "Car #12 penalised" or "CAR 7".
CAR_NUMBER_REGEX = re.compile(r"car\s*#?\s*([0-9]+)", re.IGNORECASE)


def formatTime(seconds: float | None) -> str:
    """Format seconds as ``M:SS.sss`` (e.g. 65.5 → ``1:05.500``)."""
    if seconds is None:
        return ""
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}:{rest:06.3f}"


class TimingMessage:
    """Base of all message generators.

    ``process(old_state, new_state)`` returns a (possibly empty) list of
    messages; subclasses implement ``_consider`` returning one message or
    None. ``clock`` (an ``IReactorTime``) may be set by the service so message
    timestamps follow the reactor's clock; otherwise the wall clock is used.
    """

    clock = None

    def now(self) -> int:
        """Current time in whole Unix seconds for message timestamps."""
        if self.clock is not None:
            return int(self.clock.seconds())
        return int(time.time())

    def process(self, oldState: dict, newState: dict) -> list[list]:
        """Messages describing the change from ``oldState`` to ``newState``."""
        message = self._consider(oldState, newState)
        return [message] if message else []

    def _consider(self, oldState: dict, newState: dict) -> list | None:
        return None


class PerCarMessage(TimingMessage):
    """A generator that looks at each car in turn.

    Cars are paired between the two states by Num, Car and Class; the car
    number is taken from column 0. Column positions are looked up once, when
    the generator is made. A subclass whose ``_consider`` can only report a
    change sets ``skip_unchanged``: a car whose row equals its previous row is
    then not considered at all (the built-in generators do; most rows of an
    update are often unchanged).
    """

    #: When True, cars whose row is unchanged are not passed to ``_consider``.
    skip_unchanged = False

    def __init__(self, columnSpec: Sequence[Any]):
        self.columnSpec = list(columnSpec)
        self._indices = {}
        for index, column in enumerate(self.columnSpec):
            key = column if isinstance(column, Stat) else _as_stat(column)
            if key is not None and key not in self._indices:
                self._indices[key] = index
        self._car_index = self._indices.get(Stat.CAR)
        self._class_index = self._indices.get(Stat.CLASS)

    def getValue(self, car: Sequence[Any] | None, stat: Stat, default: Any = None) -> Any:
        """The car's value for ``stat``, or ``default`` when absent."""
        if car is None:
            return default
        index = self._indices.get(stat)
        if index is None or index >= len(car):
            return default
        return car[index]

    def _car_key(self, car: Sequence[Any]) -> tuple:
        return (car[0] if car else None, _at(car, self._car_index), _at(car, self._class_index))

    def process(self, oldState: dict, newState: dict) -> list[list]:
        """Run ``_consider(old_car, new_car)`` for every car of the new state."""
        car_key = self._car_key
        old_cars = {car_key(car): car for car in (oldState or {}).get("cars", [])}
        consider = self._consider
        skip_unchanged = self.skip_unchanged
        messages = []
        for new_car in (newState or {}).get("cars", []):
            old_car = old_cars.get(car_key(new_car))
            if skip_unchanged and old_car is not None and (old_car is new_car or old_car == new_car):
                continue
            message = consider(old_car, new_car)
            if message:
                messages.append(message)
        return messages

    def _car_label(self, car: Sequence[Any]) -> str:
        number = car[0] if car else "?"
        driver = _plain(self.getValue(car, Stat.DRIVER))
        return f"#{number} ({driver})" if driver else f"#{number}"


def _at(car: Sequence[Any] | None, index: int | None) -> Any:
    """``car[index]``, or None when there is no car, no such column or the row is shorter."""
    if car is None or index is None or index >= len(car):
        return None
    return car[index]


def _as_stat(column: Sequence[Any]) -> Stat | None:
    try:
        return Stat(tuple(column))
    except ValueError:
        return Stat.from_title(column[0]) if column else None


def _plain(value: Any) -> Any:
    """Strip a ``[value, flag]`` pair down to its value."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


_FLAG_MESSAGES = {
    FlagStatus.GREEN: ("Green flag - track clear", "green"),
    FlagStatus.SC: ("Safety car deployed", "yellow"),
    FlagStatus.FCY: ("Full course yellow", "yellow"),
    FlagStatus.YELLOW: ("Yellow flags shown", "yellow"),
    FlagStatus.RED: ("Red flag", "red"),
    FlagStatus.CHEQUERED: ("Chequered flag", "track"),
    FlagStatus.CODE_60: ("Code 60", "code60"),
    FlagStatus.VSC: ("Virtual safety car deployed", "yellow"),
    FlagStatus.CAUTION: ("Full course caution", "yellow"),
    FlagStatus.WHITE: ("White flag - final lap", "white"),
}


def _flag_of(state: dict | None) -> FlagStatus:
    session = (state or {}).get("session") or {}
    return FlagStatus.fromString(session.get("flagState"))


class FlagChangeMessage(TimingMessage):
    """Announces a change of track status (category "Track")."""

    def _consider(self, oldState, newState):
        old_flag, new_flag = _flag_of(oldState), _flag_of(newState)
        if old_flag == new_flag or new_flag not in _FLAG_MESSAGES:
            return None
        text, style = _FLAG_MESSAGES[new_flag]
        return [self.now(), "Track", text, style]


class SlowZoneMessage(TimingMessage):
    """Opt-in: announces slow zones coming into force and being lifted."""

    def _consider(self, oldState, newState):
        zones = {FlagStatus.SLOW_ZONE, FlagStatus.CODE_60_ZONE}
        was, now = _flag_of(oldState) in zones, _flag_of(newState) in zones
        if now and not was:
            return [self.now(), "Track", "Slow zone(s) in operation", "yellow"]
        if was and not now:
            return [self.now(), "Track", "Slow zone(s) lifted", "green"]
        return None


class CarPitMessage(PerCarMessage):
    """Pit entry and exit, fuelling, retirement, stopping and resuming."""

    skip_unchanged = True

    def __init__(self, columnSpec: Sequence[Any]):
        super().__init__(columnSpec)
        self._state_index = self._indices.get(Stat.STATE)

    def _consider(self, oldCar, newCar):
        if oldCar is None:
            return None
        old_state = _at(oldCar, self._state_index)
        new_state = _at(newCar, self._state_index)
        if old_state == new_state or not new_state:
            return None
        if new_state == "OUT":
            what, style = "has left the pits", "out"
        elif new_state == "PIT":
            what, style = "has entered the pits", "pit"
        elif new_state == "FUEL":
            what, style = "has entered the fuelling area", "pit"
        elif new_state == "RET":
            what, style = "has retired", ""
        elif new_state == "STOP":
            what, style = "is running slowly or stopped", "yellow"
        elif new_state == "RUN" and old_state == "STOP":
            what, style = "has resumed", ""
        else:
            return None
        category = _plain(self.getValue(newCar, Stat.CLASS)) or "Pits"
        return [self.now(), category, f"{self._car_label(newCar)} {what}", style, newCar[0]]


class DriverChangeMessage(PerCarMessage):
    """A car's driver changed."""

    skip_unchanged = True

    def __init__(self, columnSpec: Sequence[Any]):
        super().__init__(columnSpec)
        self._driver_index = self._indices.get(Stat.DRIVER)

    def _consider(self, oldCar, newCar):
        if oldCar is None:
            return None
        old_driver = _at(oldCar, self._driver_index)
        new_driver = _at(newCar, self._driver_index)
        if old_driver == new_driver:
            return None
        old_driver, new_driver = _plain(old_driver), _plain(new_driver)
        if old_driver == new_driver:
            return None
        if old_driver and new_driver:
            detail = f"{old_driver} to {new_driver}"
        elif new_driver:
            detail = f"to {new_driver}"
        else:
            detail = f"from {old_driver} to nobody"
        category = _plain(self.getValue(newCar, Stat.CLASS)) or "Pits"
        return [self.now(), category, f"#{newCar[0]} Driver change ({detail})", None, newCar[0]]


class FastLapMessage(PerCarMessage):
    """Personal and overall best laps, from the Last column's ``[time, flag]``."""

    skip_unchanged = True

    def __init__(self, columnSpec: Sequence[Any]):
        super().__init__(columnSpec)
        self._last_index = self._indices.get(Stat.LAST_LAP)

    def _consider(self, oldCar, newCar):
        new_last = _at(newCar, self._last_index)
        if not isinstance(new_last, (list, tuple)) or len(new_last) < 2 or not new_last[0]:
            return None
        old_last = _at(oldCar, self._last_index)
        if isinstance(old_last, (list, tuple)) and list(old_last) == list(new_last):
            return None
        flag = new_last[1]
        category = _plain(self.getValue(newCar, Stat.CLASS)) or "Timing"
        if flag == "sb-new":
            what, style = "set a new overall best", "sb"
        elif flag == "pb":
            what, style = "set a new personal best", "pb"
        else:
            return None
        text = f"{self._car_label(newCar)} {what}: {formatTime(new_last[0])}"
        return [self.now(), category, text, style, newCar[0]]


class RaceControlMessage(TimingMessage):
    """Passes on free-text messages a plugin appends to ``message_list``.

    The car number is taken from the text when it names one.
    """

    def __init__(self, message_list: list):
        self.messageList = message_list

    def process(self, oldState, newState):
        messages = []
        while self.messageList:
            text = self.messageList.pop(0)
            found = CAR_NUMBER_REGEX.search(text)
            message = [self.now(), "Race Control", text, "raceControl"]
            if found:
                message.append(found.group(1))
            messages.append(message)
        return messages
