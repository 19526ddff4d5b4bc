"""Racing vocabulary shared by every plugin: flag states and timing columns.

Clients recognise a column by its exact tuple (title, type[, description]),
so the ``Stat`` values below are part of the wire format and must not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum, IntEnum


class FlagStatus(IntEnum):
    """Track status, ordered by the original framework's numbering.

    The lower-cased member name is what a state's ``session.flagState``
    carries; the integer is what analysis data carries.
    """

    NONE = 0
    GREEN = 1
    WHITE = 2
    CHEQUERED = 3
    YELLOW = 4
    FCY = 5
    CODE_60 = 6
    VSC = 7
    SC = 8
    CAUTION = 9
    RED = 10
    SLOW_ZONE = 11
    CODE_60_ZONE = 12

    @staticmethod
    def fromString(string: str | None) -> FlagStatus:
        """Return the flag named ``string`` (any case); unknown names give NONE."""
        if not string:
            return FlagStatus.NONE
        try:
            return FlagStatus[string.strip().upper()]
        except KeyError:
            return FlagStatus.NONE

    def wire_name(self) -> str:
        """The lower-case name used for ``session.flagState``."""
        return self.name.lower()


class Stat(Enum):
    """A timing column: ``(title, type)`` or ``(title, type, description)``."""

    NUM = ("Num", "text", "Car number")
    STATE = ("State", "text")
    CLASS = ("Class", "class")
    POS_IN_CLASS = ("PIC", "numeric", "Position in class")
    TEAM = ("Team", "text")
    DRIVER = ("Driver", "text")
    CAR = ("Car", "text")
    TYRE = ("T", "text", "Tyre")
    TYRE_STINT = ("TS", "text", "Tyre stint - laps on these tyres since last stop")
    TYRE_AGE = ("TA", "text", "Tyre age - total laps on these tyres from new")
    LAPS = ("Laps", "numeric")
    GAP = ("Gap", "delta", "Gap to leader")
    CLASS_GAP = ("C.Gap", "delta", "Gap to class leader")
    INT = ("Int", "delta", "Interval to car in front")
    CLASS_INT = ("C.Int", "delta", "Interval to class car in front")
    S1 = ("S1", "time", "Sector 1 time")
    BS1 = ("BS1", "time", "Best sector 1 time")
    S2 = ("S2", "time", "Sector 2 time")
    BS2 = ("BS2", "time", "Best sector 2 time")
    S3 = ("S3", "time", "Sector 3 time")
    BS3 = ("BS3", "time", "Best sector 3 time")
    S4 = ("S4", "time", "Sector 4 time")
    BS4 = ("BS4", "time", "Best sector 4 time")
    S5 = ("S5", "time", "Sector 5 time")
    BS5 = ("BS5", "time", "Best sector 5 time")
    LAST_LAP = ("Last", "time", "Last lap time")
    BEST_LAP = ("Best", "time", "Best lap time")
    SPEED = ("Spd", "numeric", "Last lap speed")
    BEST_SPEED = ("B.Spd", "numeric", "Best lap speed")
    PITS = ("Pits", "numeric")
    PUSH_TO_PASS = ("PTP", "numeric", "Push-to-Pass remaining")
    DRIVER_1_BEST_LAP = ("D1 Best", "time", "Driver 1 best lap")
    DRIVER_2_BEST_LAP = ("D2 Best", "time", "Driver 2 best lap")
    AGGREGATE_BEST_LAP = ("Average", "time", "Average of best laps")
    T1_SPEED = ("T1 Spd", "numeric", "Turn 1 speed")
    BEST_T1_SPEED = ("BT1S", "numeric", "Best turn 1 speed")
    T3_SPEED = ("T3 Spd", "numeric", "Turn 3 speed")
    BEST_T3_SPEED = ("BT3S", "numeric", "Best turn 3 speed")
    NO_TOW_SPEED = ("NTS", "numeric", "No-tow speed - best speed without tow")
    NO_TOW_RANK = ("NTR", "numeric", "No-tow rank")

    @property
    def title(self) -> str:
        """Column heading shown to users."""
        return self.value[0]

    @property
    def type(self) -> str:
        """Formatting type: text, class, numeric, delta or time."""
        return self.value[1]

    @property
    def description(self) -> str | None:
        """Tooltip text, or None for two-element stats."""
        return self.value[2] if len(self.value) > 2 else None

    @staticmethod
    def from_title(title: str) -> Stat | None:
        """Find the stat with this heading ("Lap" is accepted for Laps)."""
        if title == "Lap":
            title = "Laps"
        for stat in Stat:
            if stat.value[0] == title:
                return stat
        return None

    @staticmethod
    def parse_colspec(colspec: Iterable[Sequence[str] | Stat]) -> list[Stat | tuple]:
        """Turn a manifest colSpec (lists or Stats) into Stats where known."""
        parsed: list[Stat | tuple] = []
        for column in colspec:
            if isinstance(column, Stat):
                parsed.append(column)
                continue
            column = tuple(column)
            try:
                parsed.append(Stat(column))
            except ValueError:
                parsed.append(Stat.from_title(column[0]) or column)
        return parsed

    @staticmethod
    def sector(n: int) -> tuple:
        """Column tuple for sector ``n`` (any n, not only 1-5)."""
        return (f"S{n}", "time", f"Sector {n} time")

    @staticmethod
    def best_sector(n: int) -> tuple:
        """Column tuple for the best time in sector ``n``."""
        return (f"BS{n}", "time", f"Best sector {n} time")


#: Column tuples of the modern Timing71 clients (``t71://`` stream) that differ
#: from the legacy ones above.
MODERN_STAT_OVERRIDES = {
    Stat.LAST_LAP.value: ("Last", "laptime", "Last lap time"),
    Stat.BEST_LAP.value: ("Best", "laptime", "Best lap time"),
}
AV_SPEED = ("Av.Spd", "numeric", "Average speed")


def colspec_entry(column: Stat | Sequence[str]) -> list[str]:
    """The JSON form of a column: a list of its tuple's strings."""
    if isinstance(column, Stat):
        return list(column.value)
    return list(column)
