"""Deterministic simulator of a BMI Leisure karting heat websocket (``shared/spec/bmi-heat.md``).

It writes invented but realistic captures: several heats back to back, each a sequence of complete
heat frames (the venue sends the whole heat on every line crossing and every few seconds), with the
things a parser has to survive: ``"{}"`` while no heat is loaded, a heat loaded but not started
(``S`` 0, no start time ``T`` yet), the start, repeated frames, a red-flag pause (``S`` 2, the
counter stands still, the lap in progress is long for everyone), gaps in the feed (frames lost, lap
counters jump), a timekeeper's correction (a double-read transponder adds a lap that the next frame
removes), pit stops in endurance heats (one very long lap, sometimes a kart swap: same driver id,
new kart number), the chequered flag (``S`` 4) with laps still arriving from the karts that have not
finished yet, and the finished heat re-sent with ``C`` 0 until the next one is loaded.

The counter ``C`` follows one of two conventions (``counter``): ``"remaining"`` (timed heats count
down from their length, shown in full before the start; lap races count up) or ``"elapsed"``
(everything counts up). Finished heats are re-sent with ``C`` 0 in both.

Every heat's timeline is computed first (integer milliseconds, seeded), then frames are rendered;
equal inputs give equal bytes. :meth:`BMISimulator.truth` describes what a correct consumer shows at
named *checkpoints* (a frame count of the capture): per kart laps, last/best/average lap, the
source's gap, the interval, inferred pits, state, order, flag and clock. Intervals follow the rule of
the Common Timing Data view: the difference of the two karts' gaps to the leader recorded when each
completed the same lap (only for laps whose crossing a consumer saw as the newest lap of a frame),
else laps down, else ``{"observed": true}`` (the consumer can only time it with its own clock).

Scenarios (:data:`SCENARIOS`): ``demo`` (all of the heats below, back to back: the bundled demo),
``sprint`` (a 10-minute timed sprint with 12 karts, a feed gap, a correction and repeated frames),
``laps`` (a 12-lap race with a red-flag pause), ``endurance`` (a 60-minute endurance with pit stops
and a kart swap), ``sequence`` (short heats of every race mode back to back, a qualifying stopped
by staff for 25 s (``S`` 3), ``"{}"`` between them, a next heat announced with ``S`` 5, and a feed
gap that swallows a heat's end and the next heat's start) and ``hostile`` (a short heat with
hostile frames mixed in).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BASE_UNIX",
    "COUNTERS",
    "SCENARIOS",
    "BMISimulator",
    "HeatPlan",
    "build_bmi",
    "format_gap",
]

#: Unix seconds of the first frame of every capture (2024-02-20 18:00 UTC; all data is invented).
BASE_UNIX = 1_708_452_000
COUNTERS = ("remaining", "elapsed")

_DRIVERS = [
    "Maty", "leiño", "Zoë Marchetti", "Bjørn Aas", "Łukasz Nowak", "Ana Sánchez", "Tomás Ruiz",
    "Émile Roy", "Jürgen Falk", "Kenji Sato", "Priya Nair", "Omar Haddad", "Sofía Peña", "Chloé Martin",
    "Nils Åberg", "Iñaki Etxeberria", "Mia Novak", "Luca Bianchi", "Aoife Byrne", "Dmitri Volkov",
    "Hana Kim", "Rafael Costa", "Elif Demir", "Timo Virtanen",
]
_SPEC_NAMES = ["Maty", "leiño"]
_TEAMS = [
    "Los Rápidos", "Kartel", "Team Zebra", "Slipstream Bros", "Apex Hunters", "Brake Later",
    "Drift Kings", "Green Flag Gang", "Oversteer United", "Les Pilotes Fous",
]
_FLAGS = {0: "none", 1: "green", 2: "red", 3: "red", 4: "chequered", 5: "none"}
_MODES = {0: "most laps wins", 1: "best lap wins", 2: "best average wins"}


def format_gap(ms: int) -> str:
    """A gap as BMI shows it: ``"00.998"``, ``"03.421"``, ``"1:02.345"``."""
    minutes, rest = divmod(max(0, ms), 60_000)
    seconds = f"{rest // 1000:02d}.{rest % 1000:03d}"
    return f"{minutes}:{seconds}" if minutes else seconds


def _laps_text(count: int) -> str:
    return "1 lap" if count == 1 else f"{count} laps"


@dataclass
class HeatPlan:
    """One heat: its rules and the incidents in it (times are running seconds of the heat)."""

    number: int
    title: str
    mode: int = 0
    end: int = 1
    minutes: float | None = 10.0
    laps: int | None = None
    karts: int = 12
    base_lap: float = 42.0
    teams: bool = False
    #: Laps (per kart, counted from 1) on which a kart stops in the pits, and how long a stop takes.
    pit_laps: tuple[int, ...] = ()
    pit_seconds: tuple[float, float] = (55.0, 85.0)
    #: Index of a kart that moves to another kart number at its first pit stop.
    kart_swap: int | None = None
    pause_at: float | None = None
    pause_seconds: float = 0.0
    #: ``S`` during the pause: 2 (paused, a red flag) or 3 (stopped by staff, then restarted).
    pause_state: int = 2
    #: Frames lost: from this running time, for this many seconds of wall time.
    outage_at: float | None = None
    outage_seconds: float = 0.0
    correction_at: float | None = None
    #: Seconds loaded but not started (``S`` 0) before the start, and finished frames kept after.
    prelude_seconds: float = 30.0
    hold_seconds: float = 30.0
    #: Announce the heat with ``S`` 5 (next heat) before it is loaded with ``S`` 0.
    announce_seconds: float = 0.0
    #: ``"{}"`` frames sent for this many seconds before the heat appears.
    empty_before: float = 0.0
    #: Frame period (seconds) besides the frame sent on every line crossing.
    period: float = 5.0
    #: Lose every frame from the last ``n`` seconds of this heat's hold and the first ``n`` of the next.
    outage_across_next: float = 0.0


@dataclass
class _Kart:
    index: int
    driver_id: int
    name: str
    kart: str
    member: int
    skill: float
    laps: list[int] = field(default_factory=list)  # lap times (ms, wall)
    crossings: list[int] = field(default_factory=list)  # wall ms since the heat was loaded
    gaps: list[str] = field(default_factory=list)  # G recorded at each crossing (most-laps heats)
    gap_ms: list[int | None] = field(default_factory=list)
    pit_laps: list[int] = field(default_factory=list)
    swap_after: int | None = None
    swap_kart: str | None = None


class _HeatRun:
    """A heat's timeline (crossings, pause, finish) and its frames."""

    def __init__(self, plan: HeatPlan, rng: random.Random, counter: str, karts: list[_Kart]):
        self.plan = plan
        self.rng = rng
        self.counter = counter
        self.karts = karts
        self.start = round((plan.announce_seconds + plan.prelude_seconds) * 1000)
        self.pause_at = round(plan.pause_at * 1000) if plan.pause_at is not None else None
        self.pause_ms = round(plan.pause_seconds * 1000) if self.pause_at is not None else 0
        self.length = round(plan.minutes * 60_000) if plan.minutes and plan.end in (1, 3) else None
        self.finish_run = 0  # running ms at which the heat finished
        self._schedule()

    # ----- timeline

    def wall(self, run_ms: int) -> int:
        """Wall ms since the heat was loaded for a running time of the heat."""
        shift = self.pause_ms if self.pause_at is not None and run_ms > self.pause_at else 0
        return self.start + run_ms + shift

    def running(self, wall_ms: int) -> int:
        """Running ms of the heat at a wall time (the clock stands still while paused)."""
        run = wall_ms - self.start
        if self.pause_at is not None and run > self.pause_at:
            run = max(self.pause_at, run - self.pause_ms)
        return max(0, min(run, self.finish_run))

    def _schedule(self) -> None:
        plan, rng = self.plan, self.rng
        base = round(plan.base_lap * 1000)
        horizon = (self.length or 0) + 5 * base if self.length else 0
        if plan.end in (2, 3) and plan.laps:
            horizon = max(horizon, plan.laps * base * 2)
        runs: list[list[int]] = []
        for kart in self.karts:
            run, times = 0, []
            lap = 0
            while run < horizon:
                lap += 1
                time = round(base * kart.skill + rng.gauss(0, 250))
                if lap == 1:
                    time += rng.randint(1500, 3500)
                if lap in kart.pit_laps:
                    time += round(rng.uniform(*plan.pit_seconds) * 1000)
                run += time
                times.append(run)
            runs.append(times)
        finish = self.length if self.length is not None else None
        if plan.end in (2, 3) and plan.laps:
            leader = min(times[plan.laps - 1] for times in runs)
            finish = leader if finish is None else min(finish, leader)
        assert finish is not None
        self.finish_run = finish
        for kart, times in zip(self.karts, runs, strict=True):
            kept = []
            for run in times:
                kept.append(run)
                if run >= finish:
                    break
            kart.crossings = [self.wall(run) for run in kept]
            previous = self.start
            kart.laps = []
            for crossing in kart.crossings:
                kart.laps.append(crossing - previous)
                previous = crossing
        self.finish_wall = self.wall(finish)
        self.all_done = max(kart.crossings[-1] for kart in self.karts)
        self.end_wall = self.all_done + round(plan.hold_seconds * 1000)
        # G recorded at each crossing (most-laps heats): gap to the first kart to complete that lap.
        order = sorted((crossing, kart.index, lap) for kart in self.karts
                       for lap, crossing in enumerate(kart.crossings, start=1))
        first: dict[int, int] = {}
        most = 0
        by_index = {kart.index: kart for kart in self.karts}
        for crossing, index, lap in order:
            kart = by_index[index]
            if lap in first or most > lap:
                if most > lap:
                    kart.gaps.append(_laps_text(most - lap).replace("lap", "Lap"))
                    kart.gap_ms.append(None)
                else:
                    kart.gaps.append(format_gap(crossing - first[lap]))
                    kart.gap_ms.append(crossing - first[lap])
            else:
                first[lap] = crossing
                kart.gaps.append("")
                kart.gap_ms.append(0)
            most = max(most, lap)

    # ----- state at a wall time

    def state(self, wall_ms: int) -> int:
        """The heat's ``S`` at a wall time."""
        if wall_ms < self.plan.announce_seconds * 1000:
            return 5
        if wall_ms < self.start:
            return 0
        if wall_ms >= self.finish_wall:
            return 4
        if self.pause_at is not None:
            pause = self.wall(self.pause_at)
            if pause <= wall_ms < pause + self.pause_ms:
                return self.plan.pause_state
        return 1

    def counter_ms(self, wall_ms: int) -> int:
        """``C`` at a wall time."""
        state = self.state(wall_ms)
        counts_down = self.counter == "remaining" and self.length is not None
        if state == 4:
            if wall_ms >= self.all_done:
                return 0
            return 0 if counts_down else self.finish_run
        run = self.running(wall_ms) if state in (1, 2, 3) else 0
        return (self.length or 0) - run if counts_down else run

    def laps_at(self, kart: _Kart, wall_ms: int) -> int:
        """Completed laps of a kart at a wall time."""
        count = 0
        for crossing in kart.crossings:
            if crossing > wall_ms:
                break
            count += 1
        return count

    def standings(self, wall_ms: int, extra_lap: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Each kart's source values at a wall time, in ``P`` order."""
        mode = self.plan.mode
        rows = []
        last_crossing = -1
        last_passer = None
        for kart in self.karts:
            laps = self.laps_at(kart, wall_ms)
            times = kart.laps[:laps]
            gap = kart.gaps[laps - 1] if laps and mode == 0 else ""
            if extra_lap is not None and extra_lap[0] == kart.index:
                times = times + [extra_lap[1]]
                laps += 1
            swapped = kart.swap_after is not None and laps >= kart.swap_after
            row = {
                "kart_obj": kart, "laps": laps, "times": times, "gap": gap,
                "last": times[-1] if times else 0, "best": min(times) if times else 0,
                "average": round(sum(times) / len(times)) if times else 0,
                "cross": kart.crossings[laps - 1] if laps and laps <= len(kart.crossings) else 0,
                "kart": kart.swap_kart if swapped and kart.swap_kart else kart.kart,
            }
            if laps and row["cross"] > last_crossing:
                last_crossing, last_passer = row["cross"], kart.index
            rows.append(row)
        if mode == 0:
            rows.sort(key=lambda r: (-r["laps"], r["cross"] if r["laps"] else 0, r["kart_obj"].index))
        else:
            key = "best" if mode == 1 else "average"
            rows.sort(key=lambda r: (r[key] == 0, r[key], r["kart_obj"].index))
            leader = rows[0][key]
            for row in rows:
                row["gap"] = format_gap(row[key] - leader) if row[key] and row is not rows[0] else ""
        for position, row in enumerate(rows, start=1):
            row["P"] = position
            row["LP"] = 1 if row["kart_obj"].index == last_passer else 0
        return rows

    def frame(self, wall_ms: int, key: int, extra_lap: tuple[int, int] | None = None) -> str:
        """The heat frame at a wall time (``key`` = the heat's start in Unix seconds)."""
        state = self.state(wall_ms)
        rows = self.standings(wall_ms, extra_lap)
        leader_laps = max((row["laps"] for row in rows), default=0)
        drivers = [
            {"LP": row["LP"], "A": row["average"], "B": row["best"], "K": row["kart"], "G": row["gap"],
             "D": row["kart_obj"].driver_id, "L": row["laps"], "T": row["last"], "R": 0,
             "N": row["kart_obj"].name, "P": row["P"], "M": row["kart_obj"].member}
            for row in rows
        ]
        laps_left = max(0, (self.plan.laps or 0) - leader_laps) if self.plan.end in (2, 3) else 0
        heat = {
            "T": key if state not in (0, 5) else 0, "CE": 1, "CS": 1 if state not in (0, 5) else 0,
            "D": drivers, "EM": 0, "C": self.counter_ms(wall_ms), "N": f"[HEAT] {self.plan.title} ",
            "E": self.plan.end, "R": self.plan.mode, "L": laps_left, "S": state,
        }
        return json.dumps(heat, ensure_ascii=False, separators=(",", ":"))

    def frame_times(self) -> list[tuple[int, set[str]]]:
        """Wall times (ms since loaded) of the frames to send, with why (one frame per time)."""
        plan = self.plan
        period = round(plan.period * 1000)
        times: dict[int, set[str]] = {}
        for wall in range(0, self.end_wall, period):
            times.setdefault(wall, set()).add("periodic")
        times.setdefault(self.start, set()).add("start")
        times.setdefault(self.finish_wall, set()).add("finish")
        if self.pause_at is not None:
            pause = self.wall(self.pause_at)
            times.setdefault(pause, set()).add("pause")
            times.setdefault(pause + self.pause_ms, set()).add("resume")
        for kart in self.karts:
            for crossing in kart.crossings:
                times.setdefault(crossing, set()).add("crossing")
        times.setdefault(self.end_wall, set()).add("end")
        return sorted(times.items())


class BMISimulator:
    """Heats back to back as ``(t, text)`` frames, with checkpoints and their truth."""

    def __init__(self, plans: list[HeatPlan], seed: int = 1, counter: str = "remaining",
                 hostile: bool = False, url: str = "wss://live.demo-karting.example/"):
        if counter not in COUNTERS:
            raise ValueError(f"counter must be one of {COUNTERS}")
        self.plans = plans
        self.seed = seed
        self.counter = counter
        self.hostile = hostile
        self.url = url
        self.rng = random.Random(seed * 7919 + 13)
        self._frames: list[tuple[float, str]] = []
        self._checkpoints: list[dict[str, Any]] = []
        self._build()

    # ----- building

    def _karts(self, plan: HeatPlan) -> list[_Kart]:
        rng = self.rng
        first = plan is self.plans[0] and not plan.teams and plan.karts >= 2
        pool = _TEAMS if plan.teams else [name for name in _DRIVERS if not first or name not in _SPEC_NAMES]
        names = rng.sample(pool, plan.karts)
        if first:
            names[:2] = _SPEC_NAMES  # the spec's names, in the first heat
        numbers = rng.sample(range(1, 31), plan.karts)
        karts = []
        for index, name in enumerate(names):
            kart = _Kart(index=index, driver_id=3_591_100 + rng.randint(0, 89_999), name=name,
                         kart=str(numbers[index]), member=rng.choice([0, 0, rng.randint(10_000, 99_999)]),
                         skill=1.0 + index * 0.006 + rng.uniform(0, 0.01))
            kart.pit_laps = [lap + rng.randint(-2, 2) for lap in plan.pit_laps]
            if plan.kart_swap == index and kart.pit_laps:
                kart.swap_after = kart.pit_laps[0]
                kart.swap_kart = str(max(numbers) + 1)
            karts.append(kart)
        return karts

    def _build(self) -> None:
        t0 = 0  # capture ms at which the next heat is loaded
        skip_until = -1
        for number, plan in enumerate(self.plans):
            karts = self._karts(plan)
            run = _HeatRun(plan, self.rng, self.counter, karts)
            empty_ms = round(plan.empty_before * 1000)
            for wall in range(0, empty_ms, round(plan.period * 1000)):
                self._emit(t0 + wall, "{}", skip_until)
            if empty_ms:
                self._checkpoint(f"{number}:{plan.title}:no-heat", None, None, 0, {})
            t0 += empty_ms
            key = BASE_UNIX + (t0 + run.start) // 1000
            self._run_heat(number, run, t0, key, skip_until)
            skip_until = -1
            if plan.outage_across_next:
                skip_until = t0 + run.end_wall + round(plan.outage_across_next * 1000)
                # frames of the hold are lost too
                lost_from = t0 + run.end_wall - round(plan.outage_across_next * 1000)
                self._frames = [(t, text) for t, text in self._frames if t * 1000 < lost_from]
                self._checkpoints = [c for c in self._checkpoints if c["t"] * 1000 < lost_from]
            t0 += run.end_wall + 1000

    def _emit(self, t_ms: int, text: str, skip_until: int) -> bool:
        """Append a frame (times never go backwards) unless it falls in a feed outage."""
        if t_ms < skip_until:
            return False
        t = round(t_ms / 1000.0, 3)
        if self._frames and t < self._frames[-1][0]:
            t = self._frames[-1][0]
        self._frames.append((t, text))
        return True

    def _run_heat(self, number: int, run: _HeatRun, t0: int, key: int, skip_until: int) -> None:
        plan, rng = run.plan, self.rng
        outage = None
        if plan.outage_at is not None:
            begin = run.wall(round(plan.outage_at * 1000))
            outage = (begin, begin + round(plan.outage_seconds * 1000))
        correction = None
        if plan.correction_at is not None:
            target = round(plan.correction_at * 1000)
            kart = run.karts[len(run.karts) // 2]
            crossing = next(c for c in kart.crossings if c >= run.wall(target))
            correction = (crossing + 700, kart.index)
        observed: dict[int, dict[int, int | None]] = {kart.index: {} for kart in run.karts}
        seen_laps: dict[int, int] = {}
        pits_seen: dict[int, list[int]] = {kart.index: [] for kart in run.karts}
        times = dict(run.frame_times())
        if correction is not None:
            times.setdefault(correction[0], set()).add("correction")
            times.setdefault(correction[0] + 450, set()).add("corrected")
        checkpoints = self._checkpoint_times(run, outage)
        hostile_rng = random.Random(self.seed * 104_729 + number)
        start_seen = False  # a frame from before the heat's clock started was delivered
        for wall, why in sorted(times.items()):
            t_ms = t0 + wall
            if outage is not None and outage[0] <= wall < outage[1]:
                continue
            if t_ms < skip_until:
                continue
            extra = None
            if "correction" in why and correction is not None:
                extra = (correction[1], 2_871)  # a double-read transponder: a 2.871 s "lap"
            text = run.frame(wall, key, extra)
            self._emit(t_ms, text, -1)
            start_seen = start_seen or wall < run.start
            if "crossing" in why and rng.random() < 0.3:
                self._emit(t_ms + rng.randint(5, 40), text, -1)  # the same frame again
            if extra is None:
                self._observe(run, wall, observed, seen_laps, pits_seen)
            else:
                kart = run.karts[extra[0]]
                seen_laps[kart.index] = run.laps_at(kart, wall) + 1
            if self.hostile and why & {"periodic", "crossing"} and hostile_rng.random() < 0.25:
                for junk in _hostile_frames(hostile_rng, key, plan.title):
                    self._emit(t_ms + 5, junk, -1)
                self._emit(t_ms + 10, text, -1)  # the truth again, so the end state is known
            for name in checkpoints.get(wall, ()):
                self._checkpoint(f"{number}:{plan.title}:{name}", run, key, wall,
                                 {"observed": observed, "pits": pits_seen, "start_seen": start_seen})

    def _observe(self, run: _HeatRun, wall: int, observed: dict, seen: dict, pits: dict) -> None:
        """What a consumer learns from a delivered frame: the newest lap's gap, inferred pits."""
        for kart in run.karts:
            laps = run.laps_at(kart, wall)
            before = seen.get(kart.index)
            if laps and (before is None or laps != before):
                if run.plan.mode == 0:
                    observed[kart.index][laps] = kart.gap_ms[laps - 1]
                if before is not None and laps > before and laps in kart.pit_laps:
                    pits[kart.index].append(laps)
            if before is not None and laps < before:
                for lap in [lap for lap in observed[kart.index] if lap > laps]:
                    del observed[kart.index][lap]
            seen[kart.index] = laps

    def _checkpoint_times(self, run: _HeatRun, outage: tuple[int, int] | None) -> dict[int, list[str]]:
        """Wall ms of the frames after which the truth is recorded, with their names."""
        plan = run.plan
        times = [wall for wall, _why in run.frame_times()]
        times.sort()

        def last_before(limit: int) -> int:
            return max(wall for wall in times if wall <= limit and (
                outage is None or not outage[0] <= wall < outage[1]))

        marks: dict[int, list[str]] = {}
        if plan.announce_seconds:
            marks.setdefault(last_before(round(plan.announce_seconds * 1000) - 1), []).append("next-heat")
        marks.setdefault(last_before(run.start - 1), []).append("not-started")
        middle = run.wall(run.finish_run // 2)
        if run.pause_at is not None:
            pause = run.wall(run.pause_at)
            marks.setdefault(last_before(pause + run.pause_ms // 2), []).append(
                "paused" if plan.pause_state == 2 else "stopped")
            middle = run.wall(run.pause_at + (run.finish_run - run.pause_at) // 2)
        if outage is not None:
            after = min(wall for wall in times if wall >= outage[1])
            marks.setdefault(after, []).append("after-gap")
        marks.setdefault(last_before(middle), []).append("running")
        for index, kart in enumerate(run.karts):
            if kart.pit_laps and index == 0:
                pit_lap = kart.pit_laps[0]
                if pit_lap <= len(kart.crossings):
                    marks.setdefault(kart.crossings[pit_lap - 1], []).append("pit")
        if plan.outage_across_next:
            marks.setdefault(last_before(run.end_wall - round(plan.outage_across_next * 1000) - 1000),
                             []).append("finished")
        else:
            marks.setdefault(run.end_wall, []).append("finished")
        return marks

    # ----- truth

    def _checkpoint(self, name: str, run: _HeatRun | None, key: int | None, wall: int,
                    seen: dict[str, Any]) -> None:
        frames = len(self._frames)
        t = self._frames[-1][0] if self._frames else 0.0
        if run is None:
            self._checkpoints.append({"name": name, "frames": frames, "t": t, "heat": None,
                                      "flag": "none", "cars": [], "messages": ["No heat loaded"]})
            return
        plan = run.plan
        state = run.state(wall)
        rows = run.standings(wall)
        observed, pits = seen["observed"], seen["pits"]
        cars = []
        for index, row in enumerate(rows):
            kart = row["kart_obj"]
            laps = row["laps"]
            interval: Any = ""
            if index:
                ahead = rows[index - 1]
                interval = self._interval(plan.mode, row, ahead, observed)
            gap: Any = row["gap"]
            if gap:
                gap = (_laps_text(int(gap.split()[0])) if "Lap" in gap
                       else round(_seconds(gap), 3))
            finished = state == 4 and any(c >= run.finish_wall for c in kart.crossings[:laps])
            car_state = "N/S" if state in (0, 5) else "FIN" if finished else "RUN"
            cars.append({
                "kart": row["kart"], "driver_id": kart.driver_id, "driver": kart.name, "laps": laps,
                "last": row["last"] / 1000 if row["last"] else None,
                "best": row["best"] / 1000 if row["best"] else None,
                "average": row["average"] / 1000 if row["average"] else None,
                "gap": gap, "interval": interval, "pits": len(pits[kart.index]), "state": car_state,
            })
        running = run.running(wall)
        counts_down = self.counter == "remaining" and run.length is not None
        clock: dict[str, Any] = {
            "running": state == 1,
            "elapsed": round((run.finish_run if state == 4 else running if state in (1, 2, 3) else 0)
                             / 1000, 3),
            "remaining": (round(max(0, run.length - (run.finish_run if state == 4 else running
                                                      if state in (1, 2, 3) else 0)) / 1000, 3)
                          if run.length is not None else None),
            "counter": run.counter_ms(wall), "counts_down": counts_down,
            "start_seen": seen["start_seen"],
            "laps_remaining": (max(0, (plan.laps or 0) - max((c["laps"] for c in cars), default=0))
                               if plan.end in (2, 3) else None),
        }
        messages = []
        if state == 2:
            messages.append("Heat paused")
        if state == 3:
            messages.append("Heat stopped")
        if state == 4:
            messages.append("Heat finished")
        if any(c["pits"] for c in cars) and name.endswith(":pit"):
            messages.append("pit stop (inferred")
        title = plan.title
        self._checkpoints.append({
            "name": name, "frames": frames, "t": t,
            "heat": {"name": title, "raw_name": f"[HEAT] {title} ", "T": key if state not in (0, 5) else 0,
                     "state": state, "mode": plan.mode, "mode_words": _MODES[plan.mode], "end": plan.end,
                     "counter": self.counter},
            "description": f"{title} ({_MODES[plan.mode]})",
            "flag": _FLAGS[state], "clock": clock, "cars": cars, "messages": messages,
        })

    @staticmethod
    def _interval(mode: int, row: dict, ahead: dict, observed: dict) -> Any:
        if mode in (1, 2):
            key = "best" if mode == 1 else "average"
            if not row[key] or not ahead[key]:
                return ""
            return round(round(row[key] / 1000, 3) - round(ahead[key] / 1000, 3), 3)
        laps = row["laps"]
        if not laps:
            return ""
        mine = observed[row["kart_obj"].index].get(laps)
        theirs = observed[ahead["kart_obj"].index].get(laps) if ahead["laps"] >= laps else None
        if mine is not None and theirs is not None:
            return round((mine - theirs) / 1000, 3)
        if ahead["laps"] - laps >= 1:
            return _laps_text(ahead["laps"] - laps)
        return {"observed": True}

    # ----- output

    def frames(self) -> Iterator[tuple[float, str]]:
        """``(t, text)`` of every frame, ``t`` in seconds since the capture started."""
        yield from self._frames

    def header(self) -> dict[str, Any]:
        """The capture header line."""
        started = datetime.fromtimestamp(BASE_UNIX, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {"capture": 1, "source": "bmi", "url": self.url, "started": started}

    def truth(self) -> dict[str, Any]:
        """Checkpoints (frame counts) with what a correct consumer shows after them."""
        return {
            "source": "bmi", "seed": self.seed, "counter": self.counter, "hostile": self.hostile,
            "frames": len(self._frames),
            "heats": [{"title": plan.title, "mode": plan.mode, "end": plan.end} for plan in self.plans],
            "checkpoints": self._checkpoints,
        }


def _seconds(text: str) -> float:
    minutes, _, rest = text.rpartition(":")
    return (int(minutes) * 60 if minutes else 0) + float(rest)


def _hostile_frames(rng: random.Random, key: int, title: str) -> list[str]:
    """Frames a consumer must survive without changing what it shows once the truth comes back."""
    nested = "[" * 50_000 + "]" * 50_000
    choices = [
        "", "not json", "[1, 2, 3]", '"a string"', "null", "42", '{"foo": 1}', "{\"N\": ",
        nested, '{"D": ' + "[" * 20_000 + "]" * 20_000 + "}",
        json.dumps({"T": key, "N": f"[HEAT] {title} ", "S": "running", "C": -5, "E": "x", "R": None,
                    "D": "not a list"}),
        json.dumps({"T": key, "N": f"[HEAT] {title} ", "S": 1, "C": 10**30, "E": 1, "R": 0,
                    "D": [None, 5, "x", [], {"D": {"x": 1}, "N": ["a"], "K": 1e300, "L": -3, "T": -1,
                                             "B": 1e308, "A": "NaN", "G": {"a": 1}, "P": "first"}]}),
        json.dumps({"T": key, "N": f"[HEAT] {title} ", "S": 1, "C": 1000, "E": 1, "R": 0,
                    "D": [{"D": 1, "N": "x", "K": "1", "L": 10**12, "T": 10**15, "P": 1}]}),
        '{"T": 1e999, "S": NaN, "C": Infinity}',
    ]
    return [rng.choice(choices) for _ in range(rng.randint(1, 3))]


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


def _sprint(number: int = 31, **extra: Any) -> HeatPlan:
    values: dict[str, Any] = dict(number=number, title=f"{number} - Sprint 10 min", mode=0, end=1,
                                  minutes=10.0, karts=12, base_lap=41.5, outage_at=150.0,
                                  outage_seconds=95.0, correction_at=400.0, prelude_seconds=30.0,
                                  empty_before=10.0)
    values.update(extra)
    return HeatPlan(**values)


def _lap_race(number: int = 32, **extra: Any) -> HeatPlan:
    values: dict[str, Any] = dict(number=number, title=f"{number} - Grand Prix 12 laps", mode=0, end=2,
                                  minutes=None, laps=12, karts=10, base_lap=43.0, pause_at=200.0,
                                  pause_seconds=90.0, prelude_seconds=20.0)
    values.update(extra)
    return HeatPlan(**values)


def _endurance(number: int = 34, **extra: Any) -> HeatPlan:
    values: dict[str, Any] = dict(number=number, title=f"{number} - Endurance 60 min", mode=0, end=1,
                                  minutes=60.0, karts=10, base_lap=46.0, teams=True, pit_laps=(25, 52),
                                  kart_swap=2, prelude_seconds=30.0, period=10.0)
    values.update(extra)
    return HeatPlan(**values)


def _scenario(name: str) -> list[HeatPlan]:
    if name == "sprint":
        return [_sprint()]
    if name == "laps":
        return [_lap_race(empty_before=5.0)]
    if name == "endurance":
        return [_endurance(karts=6, empty_before=5.0, period=20.0)]
    if name == "sequence":
        return [
            HeatPlan(number=40, title="40 - Qualifying", mode=1, end=1, minutes=3.0, karts=6,
                     base_lap=40.0, prelude_seconds=10.0, hold_seconds=15.0, empty_before=5.0,
                     pause_at=70.0, pause_seconds=25.0, pause_state=3),
            HeatPlan(number=41, title="41 - Final 5 laps", mode=0, end=2, minutes=None, laps=5, karts=6,
                     base_lap=40.5, prelude_seconds=10.0, hold_seconds=20.0, empty_before=10.0,
                     announce_seconds=10.0, outage_across_next=12.0),
            HeatPlan(number=42, title="42 - Consistency challenge", mode=2, end=3, minutes=3.0, laps=30,
                     karts=5, base_lap=41.0, prelude_seconds=15.0, hold_seconds=15.0),
        ]
    if name == "hostile":
        return [HeatPlan(number=50, title="50 - Hostile feed", mode=0, end=1, minutes=2.0, karts=5,
                         base_lap=40.0, prelude_seconds=10.0, hold_seconds=10.0, empty_before=3.0)]
    if name == "demo":
        return [
            _sprint(),
            _lap_race(empty_before=10.0),
            HeatPlan(number=33, title="33 - Qualifying", mode=1, end=1, minutes=5.0, karts=8,
                     base_lap=40.0, prelude_seconds=20.0, announce_seconds=15.0),
            HeatPlan(number=35, title="35 - Consistency challenge", mode=2, end=1, minutes=6.0, karts=8,
                     base_lap=41.0, prelude_seconds=20.0, empty_before=15.0),
            _endurance(empty_before=15.0),
        ]
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")


#: Scenario names for :func:`build_bmi` and ``carobama-simulate bmi --scenario``.
SCENARIOS = ("demo", "sprint", "laps", "endurance", "sequence", "hostile")


def build_bmi(scenario: str = "demo", seed: int = 1, counter: str = "remaining") -> BMISimulator:
    """A ready-made capture (see the module docstring for the scenarios)."""
    plans = _scenario(scenario)
    return BMISimulator(plans, seed=seed, counter=counter, hostile=scenario == "hostile")
