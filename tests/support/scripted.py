"""A scripted service for unit tests of recording and analysis: the test sets the table, a
``task.Clock`` sets the time, and every published state is kept by the second it was published."""

from __future__ import annotations

import copy

from twisted.internet import task

from livetiming.messages import RaceControlMessage
from livetiming.racing import Stat
from livetiming.service import BaseService, parse_args
from livetiming.service.compression import decompress_state

EPOCH = 1_700_000_000
COLUMNS = [Stat.NUM, Stat.STATE, Stat.CLASS, Stat.TEAM, Stat.DRIVER, Stat.CAR, Stat.LAPS,
           Stat.GAP, Stat.LAST_LAP, Stat.BEST_LAP, Stat.PITS]


class StateSink:
    """Publisher keeping every state (decompressed) and every other message."""

    def __init__(self, clock):
        self.clock = clock
        self.states: list[tuple[float, dict]] = []
        self.messages: list[tuple[float, str, dict, bool]] = []

    def publish(self, topic, message, retain=False):
        """Keep a published message (states decompressed), with the clock time."""
        now = self.clock.seconds()
        if topic.startswith("livetiming.service."):
            self.states.append((now, decompress_state(message["payload"])))
        else:
            self.messages.append((now, topic, message, retain))

    def by_second(self) -> dict[int, dict]:
        """The newest state published in each second."""
        found: dict[int, dict] = {}
        for when, state in self.states:
            found[int(when)] = state
        return found

    def analysis(self, prefix: str = "livetiming.analysis/") -> list[tuple[float, str, dict, bool]]:
        """Analysis publications as (time, topic, message, retain)."""
        return [item for item in self.messages if item[1].startswith(prefix)]


class Scripted(BaseService):
    """A service whose table, session and race-control messages the test sets directly."""

    def __init__(self, args, extra_args=None):
        super().__init__(args, extra_args)
        self.cars: list[list] = []
        self.session: dict = {"flagState": "green", "timeElapsed": 0, "timeRemain": 3600}
        self.rc: list[str] = []
        self.columns = list(COLUMNS)

    def getName(self):
        """Series name."""
        return "Scripted Series"

    def getDefaultDescription(self):
        """Session name."""
        return "Scripted session"

    def getColumnSpec(self):
        """The columns the test set (``COLUMNS`` by default)."""
        return self.columns

    def getPollInterval(self):
        """One second."""
        return 1

    def getVersion(self):
        """Plugin version."""
        return "1.0"

    def getExtraMessageGenerators(self):
        """Race-control texts appended to ``self.rc`` become messages."""
        return [RaceControlMessage(self.rc)]

    def getRaceState(self):
        """A copy of the table and session the test set."""
        return {"cars": copy.deepcopy(self.cars), "session": copy.deepcopy(self.session)}

    # ----- test helpers -----------------------------------------------------------------

    def at(self, seconds: float) -> None:
        """Move the clock to ``EPOCH + seconds`` and run one update."""
        self.clock.advance(EPOCH + seconds - self.clock.seconds())
        self._updateAndPublishRaceState()


def make_scripted(*argv: str, cls=Scripted) -> tuple[Scripted, StateSink]:
    """A scripted service on a task.Clock set to EPOCH, with a sink attached."""
    args, extra = parse_args(["scripted", "--uuid", "scripted", *argv])
    service = cls(args, extra)
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    sink = StateSink(service.clock)
    service.add_publisher(sink)
    return service, sink


def car(num: str, state: str = "RUN", laps: int = 0, last=None, driver: str = "Driver",
        car_class: str = "GT3", team: str = "Team", vehicle: str = "Car", gap="", best=None,
        pits: int = 0) -> list:
    """A table row in ``COLUMNS`` order."""
    return [num, state, car_class, team, driver, vehicle, laps, gap,
            [last, ""] if last is not None else "", [best, ""] if best is not None else "", pits]


def play_frames(service, frames, lead: float = 5) -> None:
    """Hand capture ``frames`` (``(t, data)``) to a carobama ``service`` at ``EPOCH + lead + t``
    on its task.Clock, as its upstream connection would."""
    for t, data in frames:
        target = EPOCH + lead + t
        if target > service.clock.seconds():
            service.clock.advance(target - service.clock.seconds())
        service._on_frame(data, t)
