"""Deterministic simulator of the Emperor Servers / ACSM race-control websocket.

It produces invented but realistic ``/api/race-control`` captures (spec
``shared/spec/emperor-race-control.md``) in two flavours:

- ``v1``: the open-source manager (times in ``+01:00``, Go-duration ``Split``, no pit fields),
- ``v2x``: the superset of current Emperor managers (``Tyres``, splits, ``NumPits``, ``DriverSwap``,
  ``53`` with ``RacePosition``/``Gap``/``IsInPits``, a ``200`` per sector split, times in ``Z``).

Layers: Go-style encoders (``go_float32`` …), invented tracks (:class:`Track`, a closed polyline
with a speed profile and ``map.ini`` parameters), :class:`RaceControl` (the manager's state and frame
encoders), :class:`EmperorSimulator` (event-driven cars, scripted actions, ``frames()`` iterator,
``truth()``), :func:`build_race` (a ready-made race) and :func:`write_capture`.

Everything is integer milliseconds internally and seeded, so equal inputs give equal bytes.
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
import os
import queue
import random
import struct
import threading
import uuid
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

FLAVOURS = ("v1", "v2x")

__all__ = [
    "FLAVOURS",
    "ZERO_TIME",
    "go_float32",
    "go_float64",
    "go_str",
    "go_duration",
    "acsm_duration",
    "GoClock",
    "TrackSpec",
    "TRACKS",
    "Track",
    "get_track",
    "CarModel",
    "CAR_MODELS",
    "DriverSpec",
    "make_guid",
    "SessionSpec",
    "RaceControl",
    "PitPlan",
    "CarSim",
    "EmperorSimulator",
    "build_race",
    "capture_line",
    "write_capture",
    "read_capture",
]


# =====================================================================================
# Go-style encoding (spec section 3)
# =====================================================================================

#: Go's zero ``time.Time`` ("never").
ZERO_TIME = "0001-01-01T00:00:00Z"

_F32 = struct.Struct("<f")
_pack = _F32.pack
_unpack = _F32.unpack


def _fix_exponent(s: str, value: float) -> str:
    """Turn a Python ``%g``/``repr`` exponent string into what Go's encoder prints."""
    a = abs(value)
    if 1e-6 <= a < 1e21:
        text = format(Decimal(s), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    mant, exp = s.split("e")
    sign = "-" if exp.startswith("-") else "+"
    digits = exp.lstrip("+-").lstrip("0") or "0"
    if sign == "+" and len(digits) < 2:
        digits = digits.rjust(2, "0")
    return f"{mant}e{sign}{digits}"


def go_float32(x: float) -> str:
    """Format ``x`` as Go formats a ``float32`` in JSON (shortest round-trip decimal)."""
    v = _unpack(_pack(x))[0]
    if v == 0.0:
        return "0"
    s = "%.8g" % v  # noqa: UP031 (fastest formatting)
    if _unpack(_pack(float(s)))[0] == v:
        s7 = "%.7g" % v  # noqa: UP031 (fastest formatting)
        if _unpack(_pack(float(s7)))[0] == v:
            s = s7
            s6 = "%.6g" % v  # noqa: UP031 (fastest formatting)
            if _unpack(_pack(float(s6)))[0] == v:
                s = s6
    else:
        s = "%.9g" % v  # noqa: UP031 (fastest formatting)
    if "e" in s:
        return _fix_exponent(s, v)
    return s


def go_float64(x: float) -> str:
    """Format ``x`` as Go formats a ``float64`` in JSON."""
    if x == 0.0:
        return "0"
    s = repr(float(x))
    if "e" in s:
        return _fix_exponent(s, x)
    if s.endswith(".0"):
        return s[:-2]
    return s


_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_str(s: str) -> str:
    """Quote ``s`` as a JSON string the way Go does (UTF-8 kept, HTML characters escaped)."""
    return json.dumps(s, ensure_ascii=False).translate(_HTML)


def _frac(value: int, unit: int, digits: int) -> str:
    whole, part = divmod(value, unit)
    if part == 0:
        return str(whole)
    return f"{whole}.{str(part).rjust(digits, '0').rstrip('0')}"


def go_duration(ns: int) -> str:
    """``time.Duration(ns).String()``: ``"0s"``, ``"283ms"``, ``"15.662s"``, ``"1m2.345s"``, ``"1h0m0s"``."""
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            s = f"{u}ns"
        elif u < 1_000_000:
            s = _frac(u, 1_000, 3) + "µs"
        else:
            s = _frac(u, 1_000_000, 6) + "ms"
    else:
        h, rem = divmod(u, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        sec = _frac(rem, 1_000_000_000, 9) + "s"
        if h:
            s = f"{h}h{m}m{sec}"
        elif m:
            s = f"{m}m{sec}"
        else:
            s = sec
    return "-" + s if neg else s


def acsm_duration(ns: int) -> str:
    """ACSM v2 ``formatDuration(d, true)``: ``"MM:SS.mmm"``, hours shown only when non-zero."""
    neg = ns < 0
    ms = (abs(ns) + 500_000) // 1_000_000
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, milli = divmod(rem, 1000)
    text = f"{m:02d}:{s:02d}.{milli:03d}" if h == 0 else f"{h:02d}:{m:02d}:{s:02d}.{milli:03d}"
    return "-" + text if neg else text


class GoClock:
    """RFC 3339 formatting of nanosecond Unix timestamps in a fixed zone, as Go prints ``time.Time``.

    ``utc_offset_min`` 0 gives a ``Z`` suffix, otherwise ``+01:00``-style offsets.
    """

    def __init__(self, utc_offset_min: int) -> None:
        self.offset_ns = utc_offset_min * 60_000_000_000
        if utc_offset_min == 0:
            self.suffix = "Z"
        else:
            sign = "+" if utc_offset_min > 0 else "-"
            h, m = divmod(abs(utc_offset_min), 60)
            self.suffix = f"{sign}{h:02d}:{m:02d}"
        self._prefixes: dict[int, str] = {}

    def format(self, ns: int) -> str:
        """Format a Unix time in nanoseconds (``None`` or ``0`` give the zero time)."""
        if not ns:
            return ZERO_TIME
        local = ns + self.offset_ns
        sec, frac = divmod(local, 1_000_000_000)
        prefix = self._prefixes.get(sec)
        if prefix is None:
            if len(self._prefixes) > 8192:
                self._prefixes.clear()
            dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=sec)
            prefix = self._prefixes[sec] = dt.strftime("%Y-%m-%dT%H:%M:%S")
        if frac:
            return f"{prefix}.{str(frac).rjust(9, '0').rstrip('0')}{self.suffix}"
        return prefix + self.suffix


# =====================================================================================
# Tracks
# =====================================================================================


@dataclass(frozen=True)
class TrackSpec:
    """Invented geometry and metadata of one track layout (``folder`` + ``config``)."""

    folder: str
    config: str
    length_m: float
    info: dict[str, Any]
    harmonics: tuple[tuple[int, float, float], ...]
    aspect: float
    rotation: float
    centre: tuple[float, float]
    elevation: tuple[float, float, float]
    sectors: tuple[float, float]
    scale_factor: float
    gt3_lap_s: float
    clockwise: bool = True
    pit_side: float = -1.0
    corner_ratio: float = 0.30

    @property
    def key(self) -> str:
        """``folder`` or ``folder/config``."""
        return f"{self.folder}/{self.config}" if self.config else self.folder


def _track_info(
    name: str,
    city: str,
    country: str,
    length: int,
    pitboxes: int,
    run: str,
    tags: list[str],
    width: str,
    geotags: list[str],
    year: int,
) -> dict[str, Any]:
    return {
        "name": name,
        "city": city,
        "country": country,
        "description": f"{name}: invented description text from ui_track.json for the simulator.",
        "geotags": geotags,
        "length": f"{length}m",
        "pitboxes": pitboxes,
        "run": run,
        "tags": tags,
        "width": width,
        # v2.x only (added by the encoder for that flavour)
        "author": "Kunos Simulazioni",
        "version": "1.0",
        "url": "",
        "year": year,
    }


TRACKS: dict[str, TrackSpec] = {
    spec.key: spec
    for spec in (
        TrackSpec(
            "ks_laguna_seca",
            "",
            3602,
            _track_info(
                "Laguna Seca",
                "Monterey",
                "USA",
                3602,
                24,
                "clockwise",
                ["circuit", "usa", "original"],
                "15m",
                ["36.5841", "-121.7535"],
                1957,
            ),
            ((2, 0.10, 0.4), (3, 0.07, 1.9), (5, 0.035, 0.3), (7, 0.012, 2.2)),
            1.55,
            0.35,
            (40.0, -25.0),
            (12.0, 3.5, 0.8),
            (0.31, 0.67),
            1.5,
            84.0,
        ),
        TrackSpec(
            "ks_brands_hatch",
            "indy",
            1929,
            _track_info(
                "Brands Hatch Indy",
                "West Kingsdown",
                "United Kingdom",
                1929,
                30,
                "clockwise",
                ["circuit", "uk", "original"],
                "12m",
                ["51.3569", "0.2631"],
                1950,
            ),
            ((2, 0.12, 1.1), (3, 0.06, 0.2), (4, 0.03, 2.5), (6, 0.012, 0.9)),
            1.45,
            -0.2,
            (-30.0, 15.0),
            (10.0, 4.0, 1.3),
            (0.34, 0.66),
            1.0,
            52.4,
        ),
        TrackSpec(
            "ks_vallelunga",
            "club_circuit",
            1745,
            _track_info(
                "Vallelunga Club",
                "Campagnano di Roma",
                "Italy",
                1745,
                30,
                "clockwise",
                ["circuit", "italy", "original"],
                "14m",
                ["42.1581", "12.3686"],
                1951,
            ),
            ((2, 0.14, 2.0), (3, 0.05, 0.7), (5, 0.03, 1.4), (6, 0.010, 0.1)),
            1.8,
            0.6,
            (120.0, 60.0),
            (45.0, 2.5, 0.4),
            (0.36, 0.70),
            1.0,
            44.0,
        ),
        TrackSpec(
            "ks_red_bull_ring",
            "layout_gp",
            4318,
            _track_info(
                "Red Bull Ring GP",
                "Spielberg",
                "Austria",
                4318,
                36,
                "clockwise",
                ["circuit", "austria", "original"],
                "14m",
                ["47.2197", "14.7647"],
                1969,
            ),
            ((2, 0.09, 0.9), (3, 0.09, 2.6), (4, 0.04, 0.1), (6, 0.015, 1.7)),
            1.35,
            1.1,
            (10.0, 200.0),
            (680.0, 30.0, 1.1),
            (0.33, 0.64),
            2.0,
            101.0,
        ),
        TrackSpec(
            "spa",
            "",
            7004,
            _track_info(
                "Spa-Francorchamps",
                "Stavelot",
                "Belgium",
                7004,
                40,
                "clockwise",
                ["circuit", "belgium", "original"],
                "12m",
                ["50.4372", "5.9714"],
                1921,
            ),
            ((2, 0.11, 0.2), (3, 0.08, 1.3), (4, 0.04, 2.9), (5, 0.02, 0.6), (8, 0.008, 1.0)),
            1.25,
            -0.6,
            (-150.0, 90.0),
            (380.0, 45.0, 0.9),
            (0.30, 0.70),
            3.0,
            141.0,
            corner_ratio=0.40,
        ),
    )
}


class Track:
    """A closed polyline in world coordinates (metres, X/Z map plane, Y height) with a speed profile.

    Positions are sampled at equal arc-length steps, so ``NormalisedSplinePos`` is the fraction of
    the lap length.  ``tau`` is the cumulative reference time fraction: a car at constant pace covers
    equal ``tau`` in equal time, which makes it slow in corners and fast on straights.
    """

    PIT_OFFSET = 16.0

    def __init__(self, spec: TrackSpec) -> None:
        self.spec = spec
        self.length = float(spec.length_m)
        n = max(400, int(self.length / 2.0))
        self.n = n
        dense = 8 * n
        pts: list[tuple[float, float]] = []
        sign = -1.0 if spec.clockwise else 1.0
        for i in range(dense + 1):
            th = sign * 2.0 * math.pi * i / dense
            r = 1.0
            for k, amp, ph in spec.harmonics:
                r += amp * math.cos(k * th + ph)
            x = r * math.cos(th) * spec.aspect
            z = r * math.sin(th)
            c, s = math.cos(spec.rotation), math.sin(spec.rotation)
            pts.append((x * c - z * s, x * s + z * c))
        cum = [0.0]
        for i in range(1, len(pts)):
            cum.append(cum[-1] + math.dist(pts[i - 1], pts[i]))
        scale = self.length / cum[-1]
        cx, cz = spec.centre
        xs: list[float] = []
        zs: list[float] = []
        j = 0
        for i in range(n):
            target = cum[-1] * i / n
            while cum[j + 1] < target:
                j += 1
            f = (target - cum[j]) / (cum[j + 1] - cum[j])
            xs.append(cx + scale * (pts[j][0] + f * (pts[j + 1][0] - pts[j][0])))
            zs.append(cz + scale * (pts[j][1] + f * (pts[j + 1][1] - pts[j][1])))
        self.xs = xs
        self.zs = zs
        base, amp, ph = spec.elevation
        self.ys = [
            base + amp * math.sin(2 * math.pi * i / n + ph) + 0.3 * amp * math.sin(6 * math.pi * i / n)
            for i in range(n)
        ]
        # unit tangents and curvature
        tx: list[float] = []
        tz: list[float] = []
        for i in range(n):
            dx = xs[(i + 1) % n] - xs[i - 1]
            dz = zs[(i + 1) % n] - zs[i - 1]
            d = math.hypot(dx, dz) or 1.0
            tx.append(dx / d)
            tz.append(dz / d)
        self.tx = tx
        self.tz = tz
        ds = self.length / n
        curv = []
        for i in range(n):
            a1 = math.atan2(tz[i - 1], tx[i - 1])
            a2 = math.atan2(tz[(i + 1) % n], tx[(i + 1) % n])
            da = (a2 - a1 + math.pi) % (2 * math.pi) - math.pi
            curv.append(abs(da) / (2 * ds))
        w = 6
        smooth = [sum(curv[(i + k) % n] for k in range(-w, w + 1)) / (2 * w + 1) for i in range(n)]
        self.curvature = smooth
        vmax, acc, brk = 72.0, 5.5, 13.0
        # normalise the grip so that the tightest corner is taken at ~30 % of top speed
        alat = (spec.corner_ratio * vmax) ** 2 * max(smooth)
        v = [min(vmax, math.sqrt(alat / max(c, 1e-9))) for c in smooth]
        for _ in range(2):
            for i in range(1, 2 * n):
                a, b = (i - 1) % n, i % n
                v[b] = min(v[b], math.sqrt(v[a] ** 2 + 2 * acc * ds))
            for i in range(2 * n, 0, -1):
                a, b = i % n, (i - 1) % n
                v[b] = min(v[b], math.sqrt(v[a] ** 2 + 2 * brk * ds))
        self.vref = v
        tau = [0.0]
        for i in range(n):
            tau.append(tau[-1] + ds / v[i])
        self.ref_lap_s = tau[-1]
        self.tau = [t / tau[-1] for t in tau]  # n+1 entries, tau[n] == 1
        # map.ini parameters
        sf = spec.scale_factor
        margin = 20.0
        reach = self.PIT_OFFSET + 6.0
        min_x, max_x = min(xs) - reach, max(xs) + reach
        min_z, max_z = min(zs) - reach, max(zs) + reach
        self.map_data = {
            "width": math.ceil((max_x - min_x) / sf + 2 * margin),
            "height": math.ceil((max_z - min_z) / sf + 2 * margin),
            "margin": margin,
            "scale_factor": sf,
            "offset_x": round(-min_x + margin * sf, 3),
            "offset_y": round(-min_z + margin * sf, 3),
            "drawing_size": 10,
        }

    def tau_at(self, s: float) -> float:
        """Reference time fraction (0..1) at spline fraction ``s`` (0..1)."""
        f = s * self.n
        i = int(f)
        if i >= self.n:
            return 1.0
        return self.tau[i] + (f - i) * (self.tau[i + 1] - self.tau[i])

    def s_at(self, tau: float) -> float:
        """Inverse of :meth:`tau_at`."""
        i = bisect_right(self.tau, tau) - 1
        if i >= self.n:
            return 1.0
        if i < 0:
            return 0.0
        t0 = self.tau[i]
        return (i + (tau - t0) / (self.tau[i + 1] - t0)) / self.n

    def point(self, s: float, lateral: float = 0.0) -> tuple[float, float, float, float, float, float]:
        """World ``(x, y, z, tangent_x, tangent_z, vref)`` at spline fraction ``s``, shifted sideways."""
        n = self.n
        f = (s % 1.0) * n
        i = int(f)
        if i >= n:
            i = n - 1
        j = i + 1 if i + 1 < n else 0
        a = f - i
        b = 1.0 - a
        txi = self.tx[i]
        tzi = self.tz[i]
        x = self.xs[i] * b + self.xs[j] * a - tzi * lateral
        z = self.zs[i] * b + self.zs[j] * a + txi * lateral
        y = self.ys[i] * b + self.ys[j] * a
        return x, y, z, txi, tzi, self.vref[i]

    def pixel(self, x: float, z: float) -> tuple[float, float]:
        """``map.png`` pixel of a world position (spec section 5.4)."""
        md = self.map_data
        return (x + md["offset_x"]) / md["scale_factor"], (z + md["offset_y"]) / md["scale_factor"]


_TRACK_CACHE: dict[str, Track] = {}


def get_track(key: str) -> Track:
    """Return the (cached) :class:`Track` for ``"folder"`` or ``"folder/config"``."""
    if key not in _TRACK_CACHE:
        _TRACK_CACHE[key] = Track(TRACKS[key])
    return _TRACK_CACHE[key]


# =====================================================================================
# Cars, drivers
# =====================================================================================


@dataclass(frozen=True)
class CarModel:
    """A car content folder with its prettified name, class and pace relative to a GT3."""

    model: str
    name: str
    car_class: str
    pace: float
    skins: tuple[str, ...]
    redline: int = 8500
    tyres: tuple[str, ...] = ("S", "M", "H")


CAR_MODELS: dict[str, CarModel] = {
    m.model: m
    for m in (
        CarModel(
            "ks_mazda_mx5_cup",
            "Mazda MX5 CUP",
            "MX5",
            1.265,
            ("00_official", "01_blue", "03_red", "05_white", "07_yellow", "09_black"),
            7500,
            ("SM",),
        ),
        CarModel(
            "ks_porsche_911_gt3_r_2016",
            "Porsche 911 GT3 R 2016",
            "GT3",
            1.000,
            ("porsche_red", "porsche_white", "martini", "gulf"),
        ),
        CarModel(
            "ks_audi_r8_lms_2016",
            "Audi R8 LMS 2016",
            "GT3",
            1.002,
            ("audi_white", "audi_black", "phoenix", "wrt"),
        ),
        CarModel(
            "ks_mercedes_amg_gt3", "Mercedes-AMG GT3", "GT3", 1.004, ("amg_silver", "black_falcon", "hto")
        ),
        CarModel(
            "ks_lamborghini_huracan_gt3",
            "Lamborghini Huracan GT3",
            "GT3",
            1.001,
            ("grasser_green", "orange", "white_blue"),
        ),
        CarModel("ks_mclaren_650_gt3", "McLaren 650S GT3", "GT3", 1.003, ("papaya", "garage59", "black")),
        CarModel("bmw_m6_gt3", "BMW M6 GT3", "GT3", 1.005, ("rowe", "schubert", "walkenhorst")),
        CarModel("ks_nissan_gtr_gt3", "Nissan GT-R GT3", "GT3", 1.006, ("nismo_white", "gtacademy")),
        CarModel("ks_ferrari_488_gt3", "Ferrari 488 GT3", "GT3", 1.002, ("af_corse", "rosso", "giallo")),
        CarModel(
            "ks_porsche_cayman_gt4_clubsport",
            "Porsche Cayman GT4 Clubsport",
            "GT4",
            1.085,
            ("gt4_white", "gt4_blue", "gt4_green"),
            7800,
        ),
        CarModel(
            "ks_maserati_gt_mc_gt4",
            "Maserati GranTurismo MC GT4",
            "GT4",
            1.09,
            ("trident", "blu", "bianco"),
            7500,
        ),
    )
}

_FIRST = (
    "Alice",
    "Bob",
    "Chen",
    "Dana",
    "Eve",
    "Femi",
    "Greta",
    "Hugo",
    "Ines",
    "Jack",
    "Kenji",
    "Lena",
    "Marco",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomas",
    "Ulla",
    "Viktor",
    "Wanda",
    "Xavier",
    "Yara",
    "Zoltan",
    "Aiden",
    "Bea",
    "Callum",
    "Dmitri",
    "Elif",
    "Farah",
    "Gareth",
    "Hana",
    "Ivo",
    "Jonas",
    "Kaja",
    "Luca",
    "Mia",
    "Niamh",
    "Olu",
    "Pavel",
    "Rhys",
    "Saoirse",
    "Teodor",
    "Uma",
    "Vera",
    "Wes",
    "Yusuf",
    "Zara",
)
_LAST = (
    "Martin",
    "O'Neil",
    "Wei",
    "Kowalski",
    "Laurent",
    "Adeyemi",
    "Lindqvist",
    "Moreau",
    "Duarte",
    "Smith",
    "Tanaka",
    "Vogel",
    "Bianchi",
    "Haddad",
    "Nilsson",
    "Raman",
    "Dubois",
    "Ferreira",
    "Berg",
    "Novak",
    "Jensen",
    "Petrov",
    "Zielinski",
    "Garcia",
    "Okafor",
    "Horvath",
    "Brennan",
    "Schulz",
    "MacLeod",
    "Ivanov",
    "Yilmaz",
    "Khan",
    "Pryce",
    "Sato",
    "Kralj",
    "Weber",
    "Mäkinen",
    "Rossi",
    "Andersen",
    "Byrne",
    "Eze",
    "Dvorak",
    "Hughes",
    "Kelly",
    "Popescu",
    "Mehta",
    "Costa",
    "Evans",
    "Demir",
    "Fischer",
)
_TEAMS = ("YORK", "YORK", "APEX", "RSR", "VLR")


@dataclass(frozen=True)
class DriverSpec:
    """A driver: Steam GUID (SteamID64 as a decimal string) and display name."""

    guid: str
    name: str

    @property
    def initials(self) -> str:
        """ACSM's ``driverInitials``: first three letters of the last name, upper-cased."""
        parts = self.name.split()
        last = parts[-1] if parts else ""
        return last[:3].upper()


def make_guid(n: int) -> str:
    """SteamID64-like GUID ``7656119800000xxxx`` for driver number ``n``."""
    return f"7656119800000{n:04d}"


def _driver_pool(
    rng: random.Random, count: int, first_guid: int = 1, team_share: float = 0.3
) -> list[DriverSpec]:
    names: list[str] = []
    seen: set[str] = set()
    out = []
    for i in range(count):
        while True:
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            if name not in seen:
                break
        seen.add(name)
        if rng.random() < team_share:
            name = f"{name}-{rng.choice(_TEAMS)}"
        names.append(name)
        out.append(DriverSpec(make_guid(first_guid + i), name))
    return out


# =====================================================================================
# ACSM race-control state (what the manager keeps and broadcasts)
# =====================================================================================

SESSION_TYPES = {0: "Booking", 1: "Practice", 2: "Qualify", 3: "Race"}
_NULL_SPLITS = "{}"


@dataclass
class SessionSpec:
    """One acServer session (the ``50`` SessionInfo fields that the simulator chooses)."""

    name: str = "Practice"
    type: int = 1
    time_min: int = 25
    laps: int = 0
    wait_time: int = 0
    ambient: int = 22
    road: int = 31
    weather: str = "3_clear"
    index: int = 0
    count: int = 3
    track: str = "ks_laguna_seca"


class CarLapInfo:
    """``Cars[model]`` of a RaceControlDriver (spec section 4.4)."""

    __slots__ = (
        "top_this",
        "top_best",
        "best",
        "num_laps",
        "last",
        "last_completed",
        "total",
        "car_name",
        "tyre_best",
        "race_number",
        "cur_splits",
        "best_splits",
        "best_lap_splits",
    )

    def __init__(self, car_name: str, race_number: int, now_ns: int) -> None:
        self.top_this = 0.0
        self.top_best = 0.0
        self.best = 0
        self.num_laps = 0
        self.last = 0
        self.last_completed = now_ns
        self.total = 0
        self.car_name = car_name
        self.tyre_best = ""
        self.race_number = race_number
        # split index -> [time_ns, cuts, is_drivers_best, is_best]
        self.cur_splits: dict[int, list[Any]] = {}
        self.best_splits: dict[int, list[Any]] = {}
        self.best_lap_splits: dict[int, list[Any]] = {}


class RCDriver:
    """A RaceControlDriver (spec section 4.3), keyed by GUID."""

    __slots__ = (
        "guid",
        "name",
        "initials",
        "car_id",
        "model",
        "skin",
        "tyres",
        "race_number",
        "car_name",
        "class_id",
        "total_laps",
        "connected",
        "loaded",
        "position",
        "split",
        "last_seen",
        "last_pos_json",
        "last_pos",
        "collisions",
        "cars",
        "in_pits",
        "drs",
        "blue",
        "last_pit_stop",
        "spline_json",
        "steer",
        "status",
        "num_pits",
        "num_long_pits",
        "delta_best",
        "delta_self",
        "ping",
        "completed",
        "swap",
        "cache",
        "full",
    )

    def __init__(
        self,
        guid: str,
        name: str,
        car_id: int,
        model: str,
        skin: str,
        tyres: str,
        race_number: int,
        car_name: str,
        class_id: str,
        now_ns: int,
    ) -> None:
        self.guid = guid
        self.name = name
        self.initials = DriverSpec(guid, name).initials
        self.car_id = car_id
        self.model = model
        self.skin = skin
        self.tyres = tyres
        self.race_number = race_number
        self.car_name = car_name
        self.class_id = class_id
        self.total_laps = 0
        self.connected = 0
        self.loaded = 0
        self.position = 0
        self.split = ""
        self.last_seen = 0
        self.last_pos = (0.0, 0.0, 0.0)
        self.last_pos_json = '{"X":0,"Y":0,"Z":0}'
        self.collisions: list[str] = []
        self.cars: dict[str, CarLapInfo] = {model: CarLapInfo(car_name, race_number, now_ns)}
        self.in_pits = False
        self.drs = False
        self.blue = False
        self.last_pit_stop = 0
        self.spline_json = "0"
        self.steer = 127
        self.status = 0
        self.num_pits = 0
        self.num_long_pits = 0
        self.delta_best = 0
        self.delta_self = 0
        self.ping = 0
        self.completed = False
        # [in_swap, expected_ns, penalty, actual_ns] or None
        self.swap: list[Any] | None = None
        self.cache: tuple[str, str, str, str] | None = None
        self.full: tuple[tuple, str] | None = None

    @property
    def car(self) -> CarLapInfo:
        """The CarLapInfo of the current car model."""
        c = self.cars.get(self.model)
        if c is None:
            c = self.cars[self.model] = CarLapInfo(self.car_name, self.race_number, 0)
        return c


class DriverMap:
    """``{"Drivers": {...}, "GUIDsInPositionalOrder": [...] | null}``."""

    __slots__ = ("drivers", "order")

    def __init__(self) -> None:
        self.drivers: dict[str, RCDriver] = {}
        self.order: list[str] | None = None


class RaceControl:
    """The manager-side state and the exact frame encoders of one flavour (``v1`` or ``v2x``).

    Methods named ``on_*`` change the state like ACSM's handlers and return the frame texts the
    manager broadcasts, in order.  Times are Unix nanoseconds of the manager's clock.
    """

    def __init__(
        self,
        flavour: str,
        clock: GoClock,
        server_name: str,
        interval_ms: int,
        damage: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {flavour!r}")
        self.flavour = flavour
        self.v2 = flavour != "v1"
        self.clock = clock
        self.server_name = server_name
        self.interval_ms = interval_ms
        self.damage = damage
        self.rng = rng or random.Random(0)
        self.version = 202 if self.v2 else 4
        self.session: SessionSpec | None = None
        self.track: Track | None = None
        self.map_data: dict[str, Any] | None = None
        self.session_start = 0
        self.elapsed = 0
        self.ambient = 0
        self.road = 0
        self.weather = ""
        self.chat: list[str] = []
        self.chat_nil = True
        self.connected = DriverMap()
        self.disconnected = DriverMap()
        self.car_to_guid: dict[int, str] = {}
        self.best_splits: dict[int, list[Any]] = {}
        self.best_lap = 0
        self.cached_200: str | None = None
        self._static_top: str | None = None

    # ------------------------------------------------------------------ encoders
    def _car_info(self, d: RCDriver, event_type: int, full: bool = True) -> str:
        initials = go_str(d.initials) if full else '""'
        car_name = go_str(d.car_name) if full else '""'
        if self.v2:
            return (
                f'{{"CarID":{d.car_id},"DriverName":{go_str(d.name)},"DriverGUID":"{d.guid}",'
                f'"CarModel":{go_str(d.model)},"CarSkin":{go_str(d.skin)},"Tyres":{go_str(d.tyres)},'
                f'"RaceNumber":{d.race_number},"DriverInitials":{initials},"CarName":{car_name},'
                f'"ClassID":"{d.class_id}","EventType":{event_type}}}'
            )
        return (
            f'{{"CarID":{d.car_id},"DriverName":{go_str(d.name)},"DriverGUID":"{d.guid}",'
            f'"CarModel":{go_str(d.model)},"CarSkin":{go_str(d.skin)},"DriverInitials":{initials},'
            f'"CarName":{car_name},"EventType":{event_type}}}'
        )

    @staticmethod
    def _split_obj(idx: int, s: list[Any]) -> str:
        return (
            f'{{"SplitIndex":{idx},"SplitTime":{s[0]},"Cuts":{s[1]},'
            f'"IsDriversBest":{"true" if s[2] else "false"},"IsBest":{"true" if s[3] else "false"}}}'
        )

    def _split_map(self, m: dict[int, list[Any]]) -> str:
        if not m:
            return _NULL_SPLITS
        return "{" + ",".join(f'"{k}":{self._split_obj(k, m[k])}' for k in sorted(m, key=str)) + "}"

    def _car_lap_json(self, model: str, c: CarLapInfo, top_this: str) -> str:
        fmt = self.clock.format
        base = (
            f'{go_str(model)}:{{"TopSpeedThisLap":{top_this},"TopSpeedBestLap":{go_float64(c.top_best)},'
            f'"BestLap":{c.best},"NumLaps":{c.num_laps},"LastLap":{c.last},'
            f'"LastLapCompletedTime":"{fmt(c.last_completed)}","TotalLapTime":{c.total},'
            f'"CarName":{go_str(c.car_name)}'
        )
        if not self.v2:
            return base + "}"
        return (
            base + f',"TyreBestLap":{go_str(c.tyre_best)},"RaceNumber":{c.race_number},'
            f'"CurrentLapSplits":{self._split_map(c.cur_splits)},"BestSplits":{self._split_map(c.best_splits)},'
            f'"BestLapSplits":{self._split_map(c.best_lap_splits)},"BestLapMiniSectors":null}}'
        )

    def _driver_static(self, d: RCDriver) -> tuple[str, str, str, str]:
        """(head, middle, cars_pre, cars_post) pieces that only change on rare events."""
        fmt = self.clock.format
        head = (
            f'"{d.guid}":{{"CarInfo":{self._car_info(d, 51)},"TotalNumLaps":{d.total_laps},'
            f'"ConnectedTime":"{fmt(d.connected)}","LoadedTime":"{fmt(d.loaded)}"'
        )
        if self.v2:
            sw = d.swap
            if sw is None:
                swap = (
                    '{"IsInDriverSwap":false,"DriverSwapExpectedCompletionTime":"0001-01-01T00:00:00Z",'
                    '"DriverSwapHadPenalty":false,"DriverSwapActualCompletionTime":"0001-01-01T00:00:00Z"}'
                )
            else:
                swap = (
                    f'{{"IsInDriverSwap":{"true" if sw[0] else "false"},'
                    f'"DriverSwapExpectedCompletionTime":"{fmt(sw[1])}",'
                    f'"DriverSwapHadPenalty":{"true" if sw[2] else "false"},'
                    f'"DriverSwapActualCompletionTime":"{fmt(sw[3])}"}}'
                )
            middle = (
                f',"LastPitStop":{d.last_pit_stop},"NumPits":{d.num_pits},"NumLongPits":{d.num_long_pits},'
                f'"DriverSwap":{swap},"DriftInfo":{{"CurrentLapScore":0,"BestLapScore":0}}'
            )
        else:
            middle = ""
        middle += ',"Collisions":' + ("[" + ",".join(d.collisions) + "]" if d.collisions else "null")
        models = sorted(d.cars)
        pre_parts = []
        post_parts = []
        cur = None
        for m in models:
            if m == d.model:
                cur = m
                continue
            c = d.cars[m]
            (post_parts if cur else pre_parts).append(self._car_lap_json(m, c, go_float64(c.top_this)))
        marker = "\x00"
        cur_json = self._car_lap_json(d.model, d.car, marker)
        a, b = cur_json.split(marker)
        cars_pre = ',"Cars":{' + "".join(p + "," for p in pre_parts) + a
        cars_post = b + "".join("," + p for p in post_parts) + "}}"
        return head, middle, cars_pre, cars_post

    def _driver_json(self, d: RCDriver) -> str:
        if d.cache is None:
            d.cache = self._driver_static(d)
            d.full = None
        key = (d.position, d.split, d.last_seen, d.car.top_this, d.in_pits, d.blue, d.completed)
        full = d.full
        if full is not None and full[0] == key:
            return full[1]
        head, middle, cars_pre, cars_post = d.cache
        dyn = (
            f',"Position":{d.position},"Split":"{d.split}",'
            f'"LastSeen":"{self.clock.format(d.last_seen)}","LastPos":{d.last_pos_json}'
        )
        if self.v2:
            dyn += (
                f',"IsInPits":{"true" if d.in_pits else "false"},"DRSActive":{"true" if d.drs else "false"},'
                f'"BlueFlag":{"true" if d.blue else "false"},"NormalisedSplinePos":{d.spline_json},'
                f'"SteerAngle":{d.steer},"StatusBytes":{d.status},"DeltaToBest":{d.delta_best},'
                f'"DeltaToSelf":{d.delta_self},"Ping":{d.ping},'
                f'"HasCompletedSession":{"true" if d.completed else "false"}'
            )
        text = head + dyn + middle + cars_pre + go_float64(d.car.top_this) + cars_post
        d.full = (key, text)
        return text

    def _driver_map_json(self, dm: DriverMap) -> str:
        body = ",".join(self._driver_json(dm.drivers[g]) for g in sorted(dm.drivers))
        order = "null" if dm.order is None else "[" + ",".join(f'"{g}"' for g in dm.order) + "]"
        return f'{{"Drivers":{{{body}}},"GUIDsInPositionalOrder":{order}}}'

    def session_info_json(self, event_type: int = 50) -> str:
        """The SessionInfo object (``50`` message and ``200.SessionInfo``)."""
        s = self.session
        if s is None:
            parts = [
                '"Version":0,"SessionIndex":0,"CurrentSessionIndex":0,"SessionCount":0,"ServerName":"",'
                '"Track":"","TrackConfig":"","Name":"","Type":0,"Time":0,"Laps":0,"WaitTime":0,'
                '"AmbientTemp":0,"RoadTemp":0,"WeatherGraphics":"","ElapsedMilliseconds":0'
            ]
            if self.v2:
                parts.append(',"IsSolo":false,"VisibilityMode":0')
            parts.append(',"EventType":0')
            return "{" + "".join(parts) + "}"
        spec = self.track.spec if self.track else None
        folder = spec.folder if spec else ""
        config = spec.config if spec else ""
        text = (
            f'{{"Version":{self.version},"SessionIndex":{s.index},"CurrentSessionIndex":{s.index},'
            f'"SessionCount":{s.count},"ServerName":{go_str(self.server_name)},"Track":{go_str(folder)},'
            f'"TrackConfig":{go_str(config)},"Name":{go_str(s.name)},"Type":{s.type},"Time":{s.time_min},'
            f'"Laps":{s.laps},"WaitTime":{s.wait_time},"AmbientTemp":{self.ambient},"RoadTemp":{self.road},'
            f'"WeatherGraphics":{go_str(self.weather)},"ElapsedMilliseconds":{self.elapsed}'
        )
        if self.v2:
            text += ',"IsSolo":false,"VisibilityMode":0'
        return text + f',"EventType":{event_type}}}'

    def _static_top_json(self) -> tuple[str, str]:
        """TrackMapData and TrackInfo objects."""
        if self.map_data is None:
            md = (
                '{"width":0,"height":0,"margin":0,"scale_factor":0,"offset_x":0,"offset_y":0,"drawing_size":0'
            )
            md += ',"padding":0}' if self.v2 else "}"
        else:
            m = self.map_data
            md = (
                f'{{"width":{go_float64(m["width"])},"height":{go_float64(m["height"])},'
                f'"margin":{go_float64(m["margin"])},"scale_factor":{go_float64(m["scale_factor"])},'
                f'"offset_x":{go_float64(m["offset_x"])},"offset_y":{go_float64(m["offset_y"])},'
                f'"drawing_size":{go_float64(m["drawing_size"])}'
            )
            md += ',"padding":0}' if self.v2 else "}"
        if self.track is None:
            ti = (
                '{"name":"","city":"","country":"","description":"","geotags":null,"length":"","pitboxes":0,'
                '"run":"","tags":null,"width":""'
            )
            ti += ',"author":"","version":"","url":"","year":0}' if self.v2 else "}"
        else:
            i = self.track.spec.info
            ti = (
                f'{{"name":{go_str(i["name"])},"city":{go_str(i["city"])},"country":{go_str(i["country"])},'
                f'"description":{go_str(i["description"])},'
                f'"geotags":[{",".join(go_str(g) for g in i["geotags"])}],"length":{go_str(i["length"])},'
                f'"pitboxes":{i["pitboxes"]},"run":{go_str(i["run"])},'
                f'"tags":[{",".join(go_str(t) for t in i["tags"])}],"width":{go_str(i["width"])}'
            )
            if self.v2:
                ti += (
                    f',"author":{go_str(i["author"])},"version":{go_str(i["version"])},'
                    f'"url":{go_str(i["url"])},"year":{i["year"]}}}'
                )
            else:
                ti += "}"
        return md, ti

    def snapshot(self) -> str:
        """Encode the current ``200`` frame."""
        if self._static_top is None:
            self._static_top = "\x01".join(self._static_top_json())
        md, ti = self._static_top.split("\x01")
        chat = "null" if self.chat_nil else "[" + ",".join(self.chat) + "]"
        start = self.clock.format(self.session_start)
        c2g = (
            "{" + ",".join(f'"{k}":"{self.car_to_guid[k]}"' for k in sorted(self.car_to_guid, key=str)) + "}"
        )
        conn = self._driver_map_json(self.connected)
        disc = self._driver_map_json(self.disconnected)
        interval = self.interval_ms if self.session is not None else -1
        if self.v2:
            if self.best_splits:
                bs = (
                    "["
                    + ",".join(self._split_obj(k, self.best_splits[k]) for k in sorted(self.best_splits))
                    + "]"
                )
            else:
                bs = "null"
            return (
                f'{{"EventType":200,"Message":{{"CurrentRealtimePosInterval":{interval},'
                f'"SessionInfo":{self.session_info_json()},"TrackMapData":{md},"TrackInfo":{ti},'
                f'"SessionStartTime":"{start}","ChatMessages":{chat},"ConnectedDrivers":{conn},'
                f'"DisconnectedDrivers":{disc},"CarIDToGUID":{c2g},"BestSplits":{bs},'
                f'"BestLap":{self.best_lap},"DamageMultiplier":{self.damage}}}}}'
            )
        return (
            f'{{"EventType":200,"Message":{{"SessionInfo":{self.session_info_json()},"TrackMapData":{md},'
            f'"TrackInfo":{ti},"SessionStartTime":"{start}","CurrentRealtimePosInterval":{interval},'
            f'"ChatMessages":{chat},"ChatMessagesMutex":{{}},"ConnectedDrivers":{conn},'
            f'"DisconnectedDrivers":{disc},"CarIDToGUID":{c2g}}}}}'
        )

    def broadcast_200(self, cache: bool = True) -> str:
        """Encode a ``200`` and remember it as the v1 connect cache when ACSM would."""
        text = self.snapshot()
        if cache:
            self.cached_200 = text
        return text

    # ------------------------------------------------------------------ sorting
    def _sort(self, dm: DriverMap, disconnected: bool = False) -> None:
        drivers = dm.drivers
        race = self.session is not None and self.session.type == 3
        if race and disconnected:
            key = lambda g: (-drivers[g].car.last_completed, g)  # noqa: E731
        elif race:
            key = lambda g: (-drivers[g].car.num_laps, drivers[g].car.total, g)  # noqa: E731
        else:

            def key(g: str) -> tuple:
                c = drivers[g].car
                if c.best:
                    return (0, c.best, 0, 0, g)
                return (1, 0, -c.num_laps, c.last_completed, g)

        dm.order = sorted(drivers, key=key)
        for i, g in enumerate(dm.order):
            drivers[g].position = i + 1

    def _add(self, dm: DriverMap, d: RCDriver, disconnected: bool = False) -> None:
        dm.drivers[d.guid] = d
        self._sort(dm, disconnected)

    def _remove(self, dm: DriverMap, guid: str, disconnected: bool = False) -> None:
        dm.drivers.pop(guid, None)
        self._sort(dm, disconnected)

    def by_car(self, car_id: int) -> RCDriver | None:
        """Connected driver in slot ``car_id``."""
        g = self.car_to_guid.get(car_id)
        if g is not None:
            d = self.connected.drivers.get(g)
            if d is not None and d.car_id == car_id:
                return d
        for d in self.connected.drivers.values():
            if d.car_id == car_id:
                return d
        return None

    # ------------------------------------------------------------------ handlers
    def on_version(self) -> list[str]:
        """``56``: acServer (re)started."""
        if not self.v2:
            self.chat = []
            self.chat_nil = True
        return [f'{{"EventType":56,"Message":{self.version}}}']

    def on_new_session(self, spec: SessionSpec, now_ns: int, looped: bool) -> list[str]:
        """``50`` then ``200``: a session starts (looped practice keeps laps)."""
        track = get_track(spec.track)
        if self.track is None or track.spec.key != self.track.spec.key:
            self.track = track
            self.map_data = track.map_data
            self._static_top = None
        self.session = spec
        self.session_start = now_ns
        self.elapsed = -spec.wait_time * 1000 if spec.wait_time else 0
        self.ambient, self.road, self.weather = spec.ambient, spec.road, spec.weather
        if looped:
            for d in self.connected.drivers.values():
                d.car.last_completed = now_ns
                d.cache = None
        else:
            self.best_splits = {}
            self.best_lap = 0
            old = self.connected
            fresh = DriverMap()
            fresh.order = old.order
            for g, d in old.drivers.items():
                nd = RCDriver(
                    d.guid,
                    d.name,
                    d.car_id,
                    d.model,
                    d.skin,
                    d.tyres,
                    d.race_number,
                    d.car_name,
                    d.class_id,
                    now_ns,
                )
                nd.last_seen = now_ns
                if self.v2:
                    nd.connected, nd.loaded, nd.in_pits = d.connected, d.loaded, d.in_pits
                fresh.drivers[g] = nd
            self.connected = fresh
            self.disconnected = DriverMap()
        frames = ["{" + f'"EventType":50,"Message":{self.session_info_json()}' + "}"]
        frames.append(self.broadcast_200())
        return frames

    def on_connect(
        self,
        guid: str,
        name: str,
        car_id: int,
        model: str,
        skin: str,
        tyres: str,
        race_number: int,
        class_id: str,
        now_ns: int,
    ) -> list[str]:
        """``51`` then ``200``."""
        cm = CAR_MODELS[model]
        d = self.connected.drivers.get(guid)
        if d is None:
            d = self.disconnected.drivers.get(guid)
            if d is not None:
                self._remove(self.disconnected, guid, True)
            else:
                d = RCDriver(guid, name, car_id, model, skin, tyres, race_number, cm.name, class_id, now_ns)
        d.name, d.car_id, d.model, d.skin, d.tyres = name, car_id, model, skin, tyres
        d.race_number, d.car_name, d.class_id = race_number, cm.name, class_id
        if model not in d.cars:
            d.cars[model] = CarLapInfo(cm.name, race_number, now_ns)
        d.car.last_completed = now_ns
        d.connected = now_ns
        d.loaded = 0
        d.last_seen = 0
        d.last_pos = (0.0, 0.0, 0.0)
        d.last_pos_json = '{"X":0,"Y":0,"Z":0}'
        d.completed = False
        d.cache = None
        self.car_to_guid[car_id] = guid
        self._add(self.connected, d)
        return [f'{{"EventType":51,"Message":{self._car_info(d, 51)}}}', self.broadcast_200()]

    def on_loaded(self, car_id: int, now_ns: int) -> list[str]:
        """``58`` then ``200``."""
        d = self.by_car(car_id)
        if d is not None:
            d.loaded = now_ns
            d.cache = None
        return [f'{{"EventType":58,"Message":{car_id}}}', self.broadcast_200()]

    def _disconnect(self, d: RCDriver) -> None:
        self._remove(self.connected, d.guid)
        d.loaded = 0
        d.cache = None
        if d.swap is not None and d.swap[0]:
            d.swap = None
        if d.total_laps > 0:
            self._add(self.disconnected, d, True)

    def on_disconnect(self, car_id: int, now_ns: int) -> list[str]:
        """acServer ``52`` (raw CarInfo: empty initials and car name) then ``200``.

        v2 first sends the server chat ``"<name> disconnected from the server"``.
        """
        d = self.by_car(car_id)
        if d is None:
            return []
        frames = []
        if self.v2:
            frames.extend(self.on_chat(255, f"{d.name} disconnected from the server", "0", "Server", now_ns))
        frames.append(f'{{"EventType":52,"Message":{self._car_info(d, 52, full=False)}}}')
        self._disconnect(d)
        frames.append(self.broadcast_200())
        return frames

    def on_server_stop(self, now_ns: int) -> list[str]:
        """ACSM synthesises a ``52`` (full CarInfo) per connected driver, then one ``200`` (not cached)."""
        frames = []
        for g in list(self.connected.order or sorted(self.connected.drivers)):
            d = self.connected.drivers.get(g)
            if d is None:
                continue
            frames.append(f'{{"EventType":52,"Message":{self._car_info(d, 52)}}}')
            self._disconnect(d)
        frames.append(self.broadcast_200(cache=False))
        return frames

    def on_chat(self, car_id: int, text: str, guid: str, name: str, now_ns: int) -> list[str]:
        """``57`` (messages starting with ``/`` are swallowed); the list keeps the last 50."""
        if text.startswith("/"):
            return []
        t = self.clock.format(now_ns)
        if self.v2:
            body = (
                f'{{"CarID":{car_id},"RecipientCarID":255,"Message":{go_str(text)},'
                f'"DriverGUID":"{guid}","DriverName":{go_str(name)},"Time":"{t}"}}'
            )
        else:
            body = (
                f'{{"CarID":{car_id},"Message":{go_str(text)},"DriverGUID":"{guid}",'
                f'"DriverName":{go_str(name)},"Time":"{t}"}}'
            )
        self.chat.append(body)
        self.chat_nil = False
        if len(self.chat) > 50:
            del self.chat[0]
        return [f'{{"EventType":57,"Message":{body}}}']

    def on_car_update(
        self, d: RCDriver, now_ns: int, pos: tuple[float, float, float], pos_json: str, speed_kmh: float
    ) -> None:
        """State part of a ``53`` (the engine encodes the frame itself)."""
        d.last_seen = now_ns
        d.last_pos = pos
        d.last_pos_json = pos_json
        c = d.cars.get(d.model)
        if c is not None and speed_kmh > c.top_this:
            c.top_this = speed_kmh

    def on_split(self, d: RCDriver, index: int, split_ns: int, cuts: int) -> list[str]:
        """v2: a sector split, folded into a ``200``."""
        c = d.car
        if index == 0:
            c.cur_splits = {}
        prev = c.best_splits.get(index)
        drivers_best = cuts == 0 and (prev is None or split_ns < prev[0])
        sb = self.best_splits.get(index)
        is_best = cuts == 0 and (sb is None or split_ns < sb[0])
        entry = [split_ns, cuts, drivers_best, is_best]
        c.cur_splits[index] = entry
        if drivers_best:
            c.best_splits[index] = entry
        if is_best:
            self.best_splits[index] = entry
        d.cache = None
        return []

    def on_lap(self, d: RCDriver, lap_ns: int, cuts: int, now_ns: int) -> list[str]:
        """Lap completed: counters, best lap, order and ``Split`` are updated, then one ``200``."""
        c = d.car
        c.num_laps += 1
        d.total_laps += 1
        c.last = lap_ns
        c.total += lap_ns
        c.last_completed = now_ns
        if cuts == 0 and (c.best == 0 or lap_ns < c.best):
            c.best = lap_ns
            c.top_best = c.top_this
            c.tyre_best = d.tyres
            c.best_lap_splits = dict(c.cur_splits)
        if self.v2 and cuts == 0 and (self.best_lap == 0 or lap_ns < self.best_lap):
            self.best_lap = lap_ns
        c.top_this = 0.0
        d.cache = None
        race = self.session is not None and self.session.type == 3
        if not (race and self.v2):
            # v2 races are re-sorted by spline position on every 53 (the engine does it)
            self._sort(self.connected)
        if race:
            if not self.v2:
                order = self.connected.order or []
                i = order.index(d.guid)
                if i == 0:
                    d.split = "0s"
                else:
                    a = self.connected.drivers[order[i - 1]].car
                    if a.num_laps == c.num_laps:
                        diff = c.total - a.total
                        d.split = go_duration(round(diff / 1e6) * 1_000_000)
                    else:
                        n = a.num_laps - c.num_laps
                        d.split = "1 lap" if n == 1 else f"{n} laps"
        else:
            prev_best = 0
            for i, g in enumerate(self.connected.order or []):
                o = self.connected.drivers[g]
                b = o.car.best
                if i == 0:
                    o.split = "00:00.000" if self.v2 else "0s"
                elif not b or not prev_best:
                    o.split = ""
                else:
                    o.split = acsm_duration(b - prev_best) if self.v2 else go_duration(b - prev_best)
                prev_best = b
        return [self.broadcast_200()]

    def on_collision(
        self,
        d: RCDriver,
        other: RCDriver | None,
        impact: float,
        world: tuple[float, float, float],
        rel: tuple[float, float, float],
        now_ns: int,
    ) -> list[str]:
        """``10``/``11`` then ``200`` with the stored record in ``Collisions``."""
        wp = f'{{"X":{go_float32(world[0])},"Y":{go_float32(world[1])},"Z":{go_float32(world[2])}}}'
        rp = f'{{"X":{go_float32(rel[0])},"Y":{go_float32(rel[1])},"Z":{go_float32(rel[2])}}}'
        impact32 = float(go_float32(impact))
        if self.v2:
            dz = [round(self.rng.uniform(0, 40), 1) if self.rng.random() < 0.6 else 0 for _ in range(5)]
            odz = [
                round(self.rng.uniform(0, 40), 1) if (other and self.rng.random() < 0.6) else 0
                for _ in range(5)
            ]
            dzj = "[" + ",".join(go_float32(x) for x in dz) + "]"
            odzj = "[" + ",".join(go_float32(x) for x in odz) + "]"
            speed = impact32
        else:
            speed = impact32 * 3.6
        cid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        rec = (
            f'{{"ID":"{cid}","Type":"{"with other car" if other else "with environment"}",'
            f'"Time":"{self.clock.format(now_ns)}","OtherDriverGUID":"{other.guid if other else ""}",'
            f'"OtherDriverName":{go_str(other.name) if other else chr(34) * 2},"Speed":{go_float64(speed)}'
        )
        if self.v2:
            rec += f',"DamageZones":{dzj},"OtherDamageZones":{odzj}'
        rec += "}"
        d.collisions.append(rec)
        d.cache = None
        if other is not None:
            msg = (
                f'{{"CarID":{d.car_id},"OtherCarID":{other.car_id},"ImpactSpeed":{go_float32(impact)},'
                f'"WorldPos":{wp},"RelPos":{rp}'
            )
            if self.v2:
                msg += f',"DamageZones":{dzj},"OtherDamageZones":{odzj}'
            frame = f'{{"EventType":10,"Message":{msg}}}}}'
        else:
            msg = f'{{"CarID":{d.car_id},"ImpactSpeed":{go_float32(impact)},"WorldPos":{wp},"RelPos":{rp}'
            if self.v2:
                msg += f',"DamageZones":{dzj}'
            frame = f'{{"EventType":11,"Message":{msg}}}}}'
        return [frame, self.broadcast_200()]

    def on_tyres(self, d: RCDriver, tyres: str) -> list[str]:
        """v2: ``101`` TyresChanged (no ``200``)."""
        d.tyres = tyres
        d.cache = None
        return [f'{{"EventType":101,"Message":{self._car_info(d, 101)}}}']

    def on_poll(self, now_ns: int, ambient: int, road: int, weather: str) -> list[str]:
        """30-s SessionInfo poll: elapsed time is refreshed silently; a weather change sends a ``200``."""
        s = self.session
        if s is None:
            return []
        self.elapsed = (now_ns - self.session_start) // 1_000_000 - s.wait_time * 1000
        if (ambient, road, weather) != (self.ambient, self.road, self.weather):
            self.ambient, self.road, self.weather = ambient, road, weather
            return [self.broadcast_200()]
        return []


# =====================================================================================
# The simulation engine
# =====================================================================================

RACE, LINEAR, HOLD = 0, 1, 2
EV_NONE, EV_SPLIT0, EV_SPLIT1, EV_LAP, EV_PIT_ENTRY, EV_BOX, EV_PIT_EXIT = range(7)
PIT_SPEED = 60 / 3.6
S_PIT_IN, S_BOX, S_PIT_OUT = -0.045, 0.012, 0.045

_CHAT_LINES = (
    "hi all",
    "good luck everyone",
    "gl hf",
    "sorry, my fault",
    "nice move",
    "blue flag pls",
    "lag spike, sorry",
    "brb",
    "anyone else stuttering?",
    "close one!",
    "track is getting slippery",
    "tyres are gone",
    "great racing <3",
    "Fish & chips after this?",
    "gg",
    "box box",
    "thanks for the gap",
    "mirrors!",
    "what pressures are you running?",
    "ouch",
    "sorry for the tap",
)


@dataclass
class PitPlan:
    """A planned stop at the end of car lap ``lap``: tyre change and/or driver swap."""

    lap: int
    stop_s: float = 24.0
    tyres: str | None = None
    swap_to: int | None = None
    swap_s: float = 30.0


class CarSim:
    """One entry-list slot (CarID): its drivers, pace model and motion along the track."""

    def __init__(
        self,
        sim: EmperorSimulator,
        car_id: int,
        model: CarModel,
        drivers: list[DriverSpec],
        skin: str,
        race_number: int,
        class_id: str,
        pace: list[float],
        consistency: float,
        tyres: str,
    ) -> None:
        self.sim = sim
        self.car_id = car_id
        self.model = model
        self.drivers = drivers
        self.skin = skin
        self.race_number = race_number
        self.class_id = class_id
        self.pace = pace
        self.consistency = consistency
        self.tyres = tyres
        self.driver_idx = 0
        self.rng = random.Random(sim.seed * 1000003 + car_id * 7919)
        self.lateral = self.rng.uniform(-1.5, 1.5)
        self.phase = 0
        self.legs: deque[list[Any]] = deque()
        self.leg: list[Any] | None = None
        self.leg_ver = 0
        self.ticking = False
        self.tick_gen = 0
        self.lap_start = 0
        self.split_start = 0
        self.laps = 0
        self.records: list[dict[str, Any]] = []
        self.pit_plans: dict[int, PitPlan] = {}
        self.pending_plan: PitPlan | None = None
        self.stops = 0
        self.stint_laps = 0
        self.finished = False
        self.finish_ms = 0
        self.connected = False
        self.loaded = False
        self.in_pits = True
        self.gap = ""
        self.race_position = 0
        self.delta = 0
        self.ping = self.rng.randint(18, 95)
        self.last_cross = 0
        self.cool = False
        self.cur_cuts = 0
        self.pending_swap_release = False

    @property
    def driver(self) -> DriverSpec:
        """The driver currently assigned to the car."""
        return self.drivers[self.driver_idx]

    # ----------------------------------------------------------------- motion
    def target_lap_ms(self) -> float:
        """Lap time this car aims for now (pace of driver and car, tyre wear)."""
        t = self.sim.track
        base = t.spec.gt3_lap_s * 1000.0 * self.model.pace * self.pace[self.driver_idx]
        return base * (1.0 + 0.0003 * min(self.stint_laps, 40))

    def _tau(self, p: float) -> float:
        fl = math.floor(p)
        return fl + self.sim.track.tau_at(p - fl)

    def _race_leg(
        self, t0: int, p0: float, p1: float, factor: float, ev: int, extra_ms: int = 0
    ) -> list[Any]:
        tau0, tau1 = self._tau(p0), self._tau(p1)
        dur = max(1, round((tau1 - tau0) * self.target_lap_ms() * factor) + extra_ms)
        return [t0, t0 + dur, p0, p1, RACE, tau0, tau1, ev, self.lateral, self.lateral]

    def _linear_leg(
        self, t0: int, p0: float, p1: float, ev: int, lat0: float, lat1: float, speed: float = PIT_SPEED
    ) -> list[Any]:
        dur = max(1, round(abs(p1 - p0) * self.sim.track.length / speed * 1000))
        return [t0, t0 + dur, p0, p1, LINEAR, 0.0, 0.0, ev, lat0, lat1]

    def hold(self, t0: int, p: float, lat: float, until: int | None = None) -> None:
        """Replace the motion by a stationary hold at progress ``p``."""
        self.legs.clear()
        self._start_leg(
            [t0, until if until is not None else 1 << 62, p, p, HOLD, 0.0, 0.0, EV_NONE, lat, lat]
        )

    def _lap_noise(self) -> tuple[float, list[float], int, int]:
        rng = self.rng
        lap = rng.gauss(0.0, self.consistency)
        sectors = [rng.gauss(0.0, self.consistency * 0.5) for _ in range(3)]
        mistake = 0
        if rng.random() < 0.05:
            mistake = rng.randint(800, 4500)
        cuts = rng.choice((1, 1, 2)) if rng.random() < 0.03 else 0
        return lap, sectors, mistake, cuts

    def plan_lap(self, t0: int, p0: float, start: str = "line") -> None:
        """Queue the legs from ``p0`` to the end of the current lap (or into the box)."""
        b1, b2 = self.sim.track.spec.sectors
        k = math.ceil(p0) if start == "grid" else math.floor(p0 + 1e-9)
        lap_no = self.laps + 1
        lapn, sec, mistake, cuts = self._lap_noise()
        self.cur_cuts = cuts
        msec = self.rng.randrange(3)
        legs = []
        t = t0
        p = p0
        if start == "box":
            legs.append(self._linear_leg(t, p, k + S_PIT_OUT, EV_PIT_EXIT, self.sim.pit_lat, 0.0))
            t = legs[-1][1]
            p = k + S_PIT_OUT
        if self.cool:
            leg = self._race_leg(t, p, k + 1 + S_PIT_IN, 1.35, EV_PIT_ENTRY)
            legs.append(leg)
            t = leg[1]
            legs.append(self._linear_leg(t, k + 1 + S_PIT_IN, k + 1 + S_BOX, EV_BOX, 0.0, self.sim.pit_lat))
            self.legs.extend(legs)
            return
        plan = self.pit_plans.get(lap_no)
        bounds = [(k + b1, EV_SPLIT0, 0), (k + b2, EV_SPLIT1, 1), (k + 1.0, EV_LAP, 2)]
        extra_start = 0
        if start == "grid":
            extra_start = 1800 + self.rng.randint(0, 900)
        for target, ev, si in bounds:
            if p >= target - 1e-9:
                continue
            factor = 1.0 + lapn + sec[si]
            extra = (mistake if si == msec else 0) + extra_start
            extra_start = 0
            if ev == EV_LAP and plan is not None:
                leg = self._race_leg(t, p, k + 1 + S_PIT_IN, factor, EV_PIT_ENTRY, extra)
                legs.append(leg)
                t = leg[1]
                leg = self._linear_leg(t, k + 1 + S_PIT_IN, k + 1.0, EV_LAP, 0.0, self.sim.pit_lat)
                legs.append(leg)
                t = leg[1]
                legs.append(
                    self._linear_leg(t, k + 1.0, k + 1 + S_BOX, EV_BOX, self.sim.pit_lat, self.sim.pit_lat)
                )
                self.pending_plan = plan
                break
            leg = self._race_leg(t, p, target, factor, ev, extra)
            legs.append(leg)
            t = leg[1]
            p = target
        self.legs.extend(legs)

    def _start_leg(self, leg: list[Any]) -> None:
        self.leg = leg
        self.leg_ver += 1
        if leg[1] < (1 << 61):
            self.sim._push(leg[1], self._leg_end, self.leg_ver)

    def next_leg(self, now: int) -> None:
        """Start the next queued leg (planning another lap when the queue is empty)."""
        if not self.legs:
            self.plan_lap(now, self.leg[3] if self.leg else 0.0)
        leg = self.legs.popleft()
        self._start_leg(leg)

    def delay(self, ms: int) -> None:
        """Stretch the current leg and shift the queued ones (time lost in an incident)."""
        leg = self.leg
        if leg is None or leg[4] == HOLD:
            return
        leg[1] += ms
        for q in self.legs:
            q[0] += ms
            q[1] += ms
        self.leg_ver += 1
        self.sim._push(leg[1], self._leg_end, self.leg_ver)

    def state_at(self, ms: int) -> tuple[float, float, int]:
        """(progress, speed m/s, leg kind) at time ``ms``."""
        leg = self.leg
        kind = leg[4]
        if kind == HOLD:
            return leg[2], 0.0, HOLD
        t0, t1 = leg[0], leg[1]
        f = (ms - t0) / (t1 - t0)
        if f < 0.0:
            f = 0.0
        elif f > 1.0:
            f = 1.0
        track = self.sim.track
        if kind == LINEAR:
            p = leg[2] + f * (leg[3] - leg[2])
            return p, abs(leg[3] - leg[2]) * track.length * 1000.0 / (t1 - t0), LINEAR
        tau = leg[5] + f * (leg[6] - leg[5])
        fl = math.floor(tau)
        s = track.s_at(tau - fl)
        i = int(s * track.n)
        if i >= track.n:
            i = track.n - 1
        speed = track.vref[i] * track.ref_lap_s * 1000.0 * (leg[6] - leg[5]) / (t1 - t0)
        return fl + s, speed, RACE

    def lateral_at(self, ms: int) -> float:
        """Sideways offset from the racing line (pit lane is ``pit_lat``)."""
        leg = self.leg
        if leg[8] == leg[9]:
            return leg[8]
        f = (ms - leg[0]) / (leg[1] - leg[0])
        f = 0.0 if f < 0 else 1.0 if f > 1 else f
        return leg[8] + f * (leg[9] - leg[8])

    def _leg_end(self, ms: int, ver: int) -> None:
        if ver != self.leg_ver or self.leg is None:
            return
        ev = self.leg[7]
        self.sim._car_event(self, ev, ms)
        if self.leg is not None and self.leg[4] != HOLD and ver == self.leg_ver:
            self.next_leg(ms)


class EmperorSimulator:
    """Deterministic event-driven simulation of an ACSM race-control websocket.

    Script a scenario with the methods below (times are seconds since the simulation start, i.e.
    the manager's clock), then iterate :meth:`frames` for ``(t, frame_text)`` pairs where ``t`` is
    seconds since :meth:`client_connect`.  :meth:`truth` gives the expected end state.
    """

    def __init__(
        self,
        flavour: str = "v2x",
        seed: int = 1,
        track: str = "ks_brands_hatch/indy",
        server_name: str = "Example League | Sunday Cup",
        start: str = "2024-06-01T18:00:00",
        utc_offset_min: int | None = None,
        interval_ms: int = 1000,
        damage: int = 100,
        split_snapshots: bool | None = None,
        periodic_s: float | None = None,
        url: str | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        self.flavour = flavour
        self.v2 = flavour != "v1"
        self.seed = seed
        self.rng = random.Random(seed)
        if utc_offset_min is None:
            utc_offset_min = 0 if self.v2 else 60
        self.clock = GoClock(utc_offset_min)
        local = datetime.fromisoformat(start).replace(tzinfo=UTC)
        self.base_ns = int((local - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000_000
        self.base_ns -= utc_offset_min * 60_000_000_000
        self.interval_ms = interval_ms
        self.split_snapshots = self.v2 if split_snapshots is None else split_snapshots
        self.periodic_ms = int((periodic_s if periodic_s is not None else (30.0 if self.v2 else 0)) * 1000)
        self.url = url or "wss://example.emperorservers.com/api/race-control"
        self.track = get_track(track)
        self.pit_lat = self.track.PIT_OFFSET * self.track.spec.pit_side
        self.rc = RaceControl(flavour, self.clock, server_name, interval_ms, damage, random.Random(seed + 17))
        self.cars: dict[int, CarSim] = {}
        self._heap: list[tuple[int, int, Any, tuple]] = []
        self._seq = 0
        self._out: list[tuple[int, str]] = []
        self.connect_ms: int | None = None
        self.end_ms: int | None = None
        self.state = "none"
        self.session: SessionSpec | None = None
        self.green_ms = 0
        self.leader_done_ms = 0
        self.finish_order: list[int] = []
        self.pending_weather: tuple[int, int, str] | None = None
        self.poll_gen = 0
        self.frames_emitted = 0
        self._order_ms = -1
        self._ended = False
        self._grid: list[int] = []
        self.stop_after_end_ms: int | None = None
        self.planned_connect_ms = 0
        self.last_200_ms = -(1 << 40)
        self.expected_end_ms: int | None = None

    # ------------------------------------------------------------------ time helpers
    def wall(self, ms: int, jitter: bool = True) -> int:
        """Manager clock (Unix ns) at simulation time ``ms`` plus processing jitter."""
        ns = self.base_ns + ms * 1_000_000
        if jitter:
            ns += 1_000 + int(self.rng.random() * 39_999_000)
        return ns

    def _push(self, ms: int, fn: Any, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ms, self._seq, fn, args))

    def at(self, t: float, fn: Any, *args: Any) -> None:
        """Run ``fn(ms, *args)`` at ``t`` seconds of simulation time."""
        self._push(round(t * 1000), fn, *args)

    def _emit(self, ms: int, frames: list[str]) -> None:
        if self.connect_ms is not None and ms >= self.connect_ms:
            for f in frames:
                self._out.append((ms, f))
                if f.startswith('{"EventType":200'):
                    self.last_200_ms = ms

    # ------------------------------------------------------------------ entries
    def add_car(
        self,
        car_id: int,
        model: str,
        drivers: list[DriverSpec],
        *,
        skin: str | None = None,
        race_number: int | None = None,
        class_id: str | None = None,
        pace: float | list[float] = 1.0,
        consistency: float = 0.006,
        tyres: str | None = None,
    ) -> CarSim:
        """Add an entry-list slot with its driver(s); ``pace`` multiplies the car's reference lap."""
        cm = CAR_MODELS[model]
        if isinstance(pace, int | float):
            pace = [float(pace)] * len(drivers)
        car = CarSim(
            self,
            car_id,
            cm,
            list(drivers),
            skin or cm.skins[car_id % len(cm.skins)],
            race_number if race_number is not None else car_id + 1,
            class_id or "00000000-0000-0000-0000-000000000000",
            list(pace),
            consistency,
            tyres or cm.tyres[min(1, len(cm.tyres) - 1)],
        )
        car.phase = self.rng.randrange(0, self.interval_ms) if self.interval_ms > 1 else 0
        self.cars[car_id] = car
        return car

    # ------------------------------------------------------------------ script API
    def client_connect(self, t: float) -> None:
        """The capture starts: cached/fresh ``200`` (v1: empty frame if none yet) and chat replay."""
        self.planned_connect_ms = round(t * 1000)
        self.at(t, self._do_client_connect)

    def stop(self, t: float) -> None:
        """The capture ends at ``t``."""
        self.end_ms = round(t * 1000)

    def new_session(self, t: float, spec: SessionSpec, looped: bool = False, auto_end: bool = True) -> None:
        """acServer starts ``spec`` (``50`` + ``200``); non-race sessions end by time when ``auto_end``."""
        self.at(t, self._do_new_session, spec, looped, auto_end)

    def connect(self, t: float, car_id: int, driver: int = 0) -> None:
        """Driver number ``driver`` of the car connects (``51`` + ``200``)."""
        self.at(t, self._do_connect, car_id, driver)

    def load(self, t: float, car_id: int, release_s: float | None = None) -> None:
        """The car finishes loading (``58`` + ``200``); it leaves its pit box after ``release_s``."""
        self.at(t, self._do_load, car_id, release_s)

    def disconnect(self, t: float, car_id: int) -> None:
        """The driver of ``car_id`` leaves (acServer ``52`` + ``200``)."""
        self.at(t, self._do_disconnect, car_id)

    def chat(self, t: float, car_id: int | None, text: str) -> None:
        """Chat from the driver in ``car_id`` (``None``: an admin broadcast as CarID 0)."""
        self.at(t, self._do_chat, car_id, text)

    def collision(
        self,
        t: float,
        car_id: int,
        other: int | None = None,
        impact_kmh: float | None = None,
        loss_s: float | None = None,
    ) -> None:
        """Contact of ``car_id`` with a wall (``11``) or with car ``other`` (``10``); ``other=-1`` picks the
        nearest car on track (falls back to a wall hit)."""
        self.at(t, self._do_collision, car_id, other, impact_kmh, loss_s)

    def weather(
        self, t: float, ambient: int | None = None, road: int | None = None, graphics: str | None = None
    ) -> None:
        """Change temperatures/weather; the manager notices it at its next 30-s poll."""
        self.at(t, self._do_weather, ambient, road, graphics)

    def pit_stop(self, car_id: int, lap: int, stop_s: float = 24.0, tyres: str | None = None) -> None:
        """Stop at the end of car lap ``lap`` (``101`` when ``tyres`` is given, v2 only)."""
        self.cars[car_id].pit_plans[lap] = PitPlan(lap, stop_s, tyres)

    def driver_swap(
        self, car_id: int, lap: int, to_driver: int, tyres: str | None = None, swap_s: float = 30.0
    ) -> None:
        """At the end of car lap ``lap`` the car pits and driver ``to_driver`` takes over."""
        self.cars[car_id].pit_plans[lap] = PitPlan(lap, 0.0, tyres, to_driver, swap_s)

    def set_grid(self, car_ids: list[int]) -> None:
        """Starting order for race sessions (CarIDs, pole first); default: by CarID."""
        self._grid = list(car_ids)

    def end_session(self, t: float) -> None:
        """Force the end of the current session (``200`` only)."""
        self.at(t, self._do_end_session)

    def server_stop(self, t: float) -> None:
        """acServer process stops: synthesised ``52`` per driver, one ``200``."""
        self.at(t, self._do_server_stop)

    def server_start(self, t: float) -> None:
        """acServer process starts: ``56``."""
        self.at(t, self._do_server_start)

    def raw(self, t: float, text: str) -> None:
        """Emit an arbitrary frame text (edge cases)."""
        self.at(t, lambda ms: self._emit(ms, [text]))

    # ------------------------------------------------------------------ handlers
    def _do_client_connect(self, ms: int) -> None:
        self.connect_ms = ms
        rc = self.rc
        if self.v2:
            frames = [rc.snapshot()]
        else:
            frames = [rc.cached_200 if rc.cached_200 is not None else ""]
            frames += [f'{{"EventType":57,"Message":{c}}}' for c in rc.chat]
        self._emit(ms, frames)

    def _do_server_start(self, ms: int) -> None:
        self._emit(ms, self.rc.on_version())
        self.state = "none"

    def _do_server_stop(self, ms: int) -> None:
        for car in self.cars.values():
            car.ticking = False
            car.connected = car.loaded = False
            car.leg = None
            car.legs.clear()
        self.poll_gen += 1
        self.state = "stopped"
        self._emit(ms, self.rc.on_server_stop(self.wall(ms)))

    def _do_new_session(self, ms: int, spec: SessionSpec, looped: bool, auto_end: bool) -> None:
        if spec.track != self.track.spec.key:
            self.track = get_track(spec.track)
            self.pit_lat = self.track.PIT_OFFSET * self.track.spec.pit_side
        self.session = spec
        self._ended = False
        self.leader_done_ms = 0
        self.finish_order = []
        now = self.wall(ms)
        frames = self.rc.on_new_session(spec, now, looped)
        self.green_ms = ms + spec.wait_time * 1000
        self.state = "waiting" if spec.wait_time and spec.type == 3 else "running"
        if not looped:
            for car in self.cars.values():
                car.records = []
                car.laps = 0
                car.stops = 0
                car.finished = False
                car.cool = False
                car.stint_laps = 0
                car.pending_plan = None
        live = [c for c in self.cars.values() if c.loaded]
        if spec.type == 3:
            order = self._grid or sorted(c.car_id for c in live)
            slot = 0
            for cid in order + [c.car_id for c in live if c.car_id not in order]:
                car = self.cars[cid]
                if not car.loaded:
                    continue
                p = -0.012 - slot * (14.0 / self.track.length)
                car.hold(ms, p, 2.5 if slot % 2 == 0 else -2.5)
                car.in_pits = False
                slot += 1
            self._push(self.green_ms, self._do_green)
        elif not looped:
            for car in live:
                car.hold(ms, S_BOX, self.pit_lat)
                car.in_pits = True
                self._push(ms + self.rng.randint(4000, 20000), self._release, car.car_id, car.leg_ver)
        self._emit(ms, frames)
        self.poll_gen += 1
        self._push(ms + 30_000, self._poll, self.poll_gen)
        if auto_end and spec.type != 3 and spec.time_min:
            self._push(self.green_ms + spec.time_min * 60_000, self._auto_end, self.poll_gen)

    def _do_green(self, ms: int) -> None:
        if self.session is None or self.session.type != 3 or self.state != "waiting":
            return
        self.state = "running"
        for car in self.cars.values():
            if car.loaded and car.leg is not None and car.leg[4] == HOLD and not car.in_pits:
                p = car.leg[2]
                car.legs.clear()
                car.lap_start = car.split_start = ms
                car.plan_lap(ms, p, "grid")
                car.next_leg(ms)

    def _release(self, ms: int, car_id: int, ver: int) -> None:
        car = self.cars[car_id]
        if not car.loaded or car.leg is None or car.leg[4] != HOLD or car.leg_ver != ver:
            return
        if self.session is not None and self.session.type == 3 and self.state == "waiting":
            return
        p = car.leg[2]
        car.legs.clear()
        car.lap_start = car.split_start = ms
        car.stint_laps = 0
        car.plan_lap(ms, p, "box")
        car.next_leg(ms)

    def _poll(self, ms: int, gen: int) -> None:
        if gen != self.poll_gen:
            return
        rc = self.rc
        amb, road, wg = self.pending_weather or (rc.ambient, rc.road, rc.weather)
        self.pending_weather = None
        frames = rc.on_poll(self.wall(ms, False) + 3_000_000, amb, road, wg)
        if not frames and self.periodic_ms and ms - self.last_200_ms >= self.periodic_ms - 500:
            # v2.x: a quiet server still sends a snapshot about every 30 s
            frames = [rc.broadcast_200()]
        self._emit(ms, frames)
        self._push(ms + 30_000, self._poll, gen)

    def _do_weather(self, ms: int, ambient: int | None, road: int | None, graphics: str | None) -> None:
        rc = self.rc
        self.pending_weather = (
            ambient if ambient is not None else rc.ambient,
            road if road is not None else rc.road,
            graphics or rc.weather,
        )

    def _auto_end(self, ms: int, gen: int) -> None:
        if gen == self.poll_gen:
            self._do_end_session(ms)

    def _do_end_session(self, ms: int) -> None:
        if self._ended:
            return
        self._ended = True
        self.state = "finished"
        if self.stop_after_end_ms is not None and self.connect_ms is not None:
            self.end_ms = ms + self.stop_after_end_ms
        self._emit(ms, [self.rc.broadcast_200()])

    def _driver_args(self, car: CarSim) -> tuple:
        d = car.driver
        return (
            d.guid,
            d.name,
            car.car_id,
            car.model.model,
            car.skin,
            car.tyres,
            car.race_number,
            car.class_id,
        )

    def _do_connect(self, ms: int, car_id: int, driver: int) -> None:
        car = self.cars[car_id]
        car.driver_idx = driver
        car.connected = True
        car.loaded = False
        self._emit(ms, self.rc.on_connect(*self._driver_args(car), self.wall(ms)))

    def _do_load(self, ms: int, car_id: int, release_s: float | None) -> None:
        car = self.cars[car_id]
        if not car.connected:
            return
        car.loaded = True
        frames = self.rc.on_loaded(car_id, self.wall(ms))
        if self.session is not None and self.session.type == 3 and self.state == "waiting":
            slot = len([c for c in self.cars.values() if c.loaded and c is not car])
            car.hold(ms, -0.012 - slot * (14.0 / self.track.length), 2.5 if slot % 2 == 0 else -2.5)
            car.in_pits = False
        else:
            car.hold(ms, car.laps + S_BOX, self.pit_lat)
            car.in_pits = True
            delay = release_s if release_s is not None else self.rng.uniform(5, 15)
            self._push(ms + round(delay * 1000), self._release, car_id, car.leg_ver)
        self._start_ticks(car, ms)
        self._emit(ms, frames)

    def _start_ticks(self, car: CarSim, ms: int) -> None:
        car.ticking = True
        car.tick_gen += 1
        iv = self.interval_ms
        first = (ms // iv + 1) * iv + car.phase
        if first <= ms:
            first += iv
        self._push(first, self._tick, car.car_id, car.tick_gen)

    def _do_disconnect(self, ms: int, car_id: int) -> None:
        car = self.cars[car_id]
        if not car.connected:
            return
        car.connected = car.loaded = False
        car.ticking = False
        car.leg = None
        car.legs.clear()
        self._emit(ms, self.rc.on_disconnect(car_id, self.wall(ms)))

    def _do_chat(self, ms: int, car_id: int | None, text: str) -> None:
        if car_id is None:
            frames = self.rc.on_chat(0, text, "76561198000009999", "Race Director", self.wall(ms))
        else:
            car = self.cars[car_id]
            if not car.connected:
                return
            frames = self.rc.on_chat(car_id, text, car.driver.guid, car.driver.name, self.wall(ms))
        self._emit(ms, frames)

    def _position(self, car: CarSim, ms: int) -> tuple[float, float, float, float, float, float, float, int]:
        p, speed, kind = car.state_at(ms)
        x, y, z, tx, tz, _ = self.track.point(p - math.floor(p), car.lateral_at(ms))
        return p, x, y, z, tx * speed, tz * speed, speed, kind

    def _do_collision(
        self, ms: int, car_id: int, other: int | None, impact: float | None, loss: float | None
    ) -> None:
        car = self.cars[car_id]
        rc = self.rc
        d = rc.by_car(car_id)
        if d is None or car.leg is None or not car.loaded:
            return
        p, x, y, z, _, _, speed, _ = self._position(car, ms)
        od = None
        if other == -1:
            best = None
            for o in self.cars.values():
                if o is car or o.leg is None or not o.loaded:
                    continue
                op = o.state_at(ms)[0]
                dist = (op - p) % 1.0
                dist = min(dist, 1.0 - dist)
                if best is None or dist < best[0]:
                    best = (dist, o)
            other = best[1].car_id if best and best[0] * self.track.length < 60 else None
        if other is not None:
            od = rc.by_car(other)
            if od is not None:
                self.cars[other].delay(self.rng.randint(300, 1500))
        if impact is None:
            impact = self.rng.uniform(15, 70) if od else min(speed * 3.6 * 0.6, 120)
        impact_units = impact if self.v2 else impact / 3.6
        rel = (
            round(self.rng.uniform(-0.9, 0.9), 2),
            round(self.rng.uniform(0.05, 0.4), 2),
            round(self.rng.uniform(-2.2, 2.2), 2),
        )
        car.delay(round((loss if loss is not None else self.rng.uniform(1.0, 4.0)) * 1000))
        self._emit(ms, rc.on_collision(d, od, impact_units, (x, y, z), rel, self.wall(ms)))

    # ------------------------------------------------------------------ car updates
    def _refresh_order(self, ms: int, force: bool = False) -> None:
        """v2: ACSM-like race order (laps, then spline), gaps, blue flags; at most once a second
        (ACSM recomputes a driver's interval at most once a second)."""
        if not force and ms - self._order_ms < 1000 and self._order_ms >= 0:
            return
        self._order_ms = ms
        rc = self.rc
        race = self.session is not None and self.session.type == 3
        rows = []
        for car in self.cars.values():
            if not car.loaded or car.leg is None:
                continue
            d = rc.by_car(car.car_id)
            if d is None:
                continue
            p = car.state_at(ms)[0]
            spline = p - math.floor(p)
            recent = ms - car.last_cross < 1000
            rows.append((car, d, d.car.num_laps, spline, recent, p))
        if race and self.state != "waiting":
            rows.sort(key=lambda r: (-r[2], r[4], -r[3], r[0].car_id))
            moving = {r[1].guid for r in rows}
            order = [r[1].guid for r in rows] + [g for g in (rc.connected.order or []) if g not in moving]
            rc.connected.order = order
            for i, g in enumerate(order):
                if rc.connected.drivers[g].position != i + 1:
                    rc.connected.drivers[g].position = i + 1
        elif race:
            rows.sort(key=lambda r: -r[5])
        for i, r in enumerate(rows):
            car, d = r[0], r[1]
            if race:
                car.race_position = d.position if self.state != "waiting" else 0
                if i == 0:
                    car.gap = "00:00.000"
                else:
                    a = rows[i - 1]
                    if self.state == "waiting":
                        car.gap = acsm_duration(int((a[5] - r[5]) * car.target_lap_ms() * 1_000_000))
                    else:
                        # whole laps between the two cars: driver lap counts, less one when the car ahead
                        # has not yet reached our spline position on its current lap
                        nl = a[2] - r[2] - (1 if a[3] < r[3] else 0)
                        if nl >= 1:
                            car.gap = "1 lap" if nl == 1 else f"{nl} laps"
                        else:
                            diff = (a[3] - r[3]) % 1.0
                            car.gap = acsm_duration(int(diff * car.target_lap_ms() * 1_000_000))
                if self.state != "waiting":
                    d.split = car.gap
            else:
                car.race_position = d.position
                car.gap = d.split
        if len(rows) > 1:
            by_spline = sorted(rows, key=lambda r: r[3])
            n = len(by_spline)
            for i, r in enumerate(by_spline):
                behind = by_spline[i - 1]
                gapl = (r[3] - behind[3]) % 1.0
                r[1].blue = (
                    race and self.state == "running" and behind[5] > r[5] + 0.5 and gapl < 0.012 and n > 1
                )

    def _tick(self, ms: int, car_id: int, gen: int) -> None:
        car = self.cars[car_id]
        if gen != car.tick_gen or not car.ticking:
            return
        self._push(ms + self.interval_ms, self._tick, car_id, gen)
        if car.leg is None:
            return
        rc = self.rc
        d = rc.by_car(car_id)
        if d is None:
            return
        p, x, y, z, vx, vz, speed, kind = self._position(car, ms)
        pos = f'{{"X":{go_float32(x)},"Y":{go_float32(y)},"Z":{go_float32(z)}}}'
        vxs = go_float32(vx)
        vzs = go_float32(vz)
        vx32 = float(vxs)
        vz32 = float(vzs)
        kmh = math.sqrt(vx32 * vx32 + vz32 * vz32) * 3.6
        now = self.wall(ms)
        rc.on_car_update(d, now, (x, y, z), pos, kmh)
        spline = p - math.floor(p)
        if speed < 0.5:
            gear, rpm = 1, 900 + self.rng.randint(-15, 15) if self.v2 else 900
        else:
            cm = car.model
            top = 76.0
            gear = 2
            rpm = 0
            for g in range(1, 7):
                vmax_g = top * (g / 6.0) ** 0.85
                rpm = int(cm.redline * min(1.0, speed / vmax_g))
                gear = g + 1
                if rpm <= cm.redline * 0.93:
                    break
            rpm = max(rpm, 2500)
        spline_j = go_float32(spline)
        if self.connect_ms is None or ms < self.connect_ms:
            if self.v2:
                d.spline_json = spline_j
            return
        if not self.v2:
            self._out.append(
                (
                    ms,
                    (
                        f'{{"EventType":53,"Message":{{"CarID":{car_id},"Pos":{pos},'
                        f'"Velocity":{{"X":{vxs},"Y":0,"Z":{vzs}}},"Gear":{gear},'
                        f'"EngineRPM":{rpm},"NormalisedSplinePos":{spline_j}}}}}'
                    ),
                )
            )
            return
        self._refresh_order(ms)
        in_pits = kind == LINEAR or car.in_pits
        rnd = self.rng.random
        car.delta = max(-9999, min(9999, car.delta + int(rnd() * 121) - 60))
        car.ping = max(8, min(250, car.ping + int(rnd() * 7) - 3))
        curv = self.track.curvature[int(spline * self.track.n) % self.track.n]
        steer = max(0, min(255, 127 + int(curv * 900 * (1 if self.track.spec.clockwise else -1))))
        d.in_pits = in_pits
        d.spline_json = spline_j
        d.steer = steer
        d.status = 32 if self.session and "night" in self.rc.weather else 0
        d.delta_best = car.delta
        d.delta_self = car.delta // 2
        d.ping = car.ping
        heading = math.atan2(vx, vz) if speed > 0.1 else 0.0
        self._out.append(
            (
                ms,
                (
                    f'{{"EventType":53,"Message":{{"CarID":{car_id},"Pos":{pos},'
                    f'"Velocity":{{"X":{vxs},"Y":0,"Z":{vzs}}},'
                    f'"Rotation":{{"X":{go_float32(heading)},"Y":0,"Z":0}},"Gear":{gear},"EngineRPM":{rpm},'
                    f'"NormalisedSplinePos":{spline_j},"SteerAngle":{steer},"StatusBytes":{d.status},'
                    f'"RacePosition":{car.race_position},"Gap":"{car.gap}","DeltaToBest":{car.delta},'
                    f'"DeltaToSelf":{car.delta // 2},"BlueFlag":{"true" if d.blue else "false"},'
                    f'"IsInPits":{"true" if in_pits else "false"},"DRSActive":false,'
                    f'"HasCompletedSession":{"true" if d.completed else "false"},"Ping":{car.ping}}}}}'
                ),
            )
        )

    # ------------------------------------------------------------------ car events
    def _car_event(self, car: CarSim, ev: int, ms: int) -> None:
        rc = self.rc
        d = rc.by_car(car.car_id)
        if ev == EV_SPLIT0 or ev == EV_SPLIT1:
            split_ms = ms - car.split_start
            car.split_start = ms
            if self.v2 and d is not None:
                rc.on_split(d, 0 if ev == EV_SPLIT0 else 1, split_ms * 1_000_000, car.cur_cuts)
                if self.split_snapshots:
                    self._emit(ms, [rc.broadcast_200()])
        elif ev == EV_LAP:
            self._lap(car, d, ms)
        elif ev == EV_PIT_ENTRY:
            car.in_pits = True
            if d is not None:
                d.in_pits = True
        elif ev == EV_PIT_EXIT:
            car.in_pits = False
            if d is not None:
                d.in_pits = False
        elif ev == EV_BOX:
            self._box(car, d, ms)

    def _lap(self, car: CarSim, d: RCDriver | None, ms: int) -> None:
        rc = self.rc
        lap_ms = ms - car.lap_start
        split_ms = ms - car.split_start
        car.lap_start = car.split_start = ms
        car.last_cross = ms
        cuts = car.cur_cuts
        if d is None:
            return
        if self.v2:
            rc.on_split(d, 2, split_ms * 1_000_000, cuts)
        car.laps += 1
        car.stint_laps += 1
        car.records.append({"driver": d.guid, "lap_ms": lap_ms, "cuts": cuts, "at_ms": ms})
        if self.v2 and self.session is not None and self.session.type == 3:
            self._refresh_order(ms, force=True)
        frames = rc.on_lap(d, lap_ms * 1_000_000, cuts, self.wall(ms))
        s = self.session
        if s is not None and s.type == 3 and self.state == "running" and not car.finished:
            done = False
            if self.leader_done_ms:
                done = True
            elif s.laps and car.laps >= s.laps:
                done = True
            elif s.time_min and ms - self.green_ms >= s.time_min * 60_000:
                done = True
            if done:
                if not self.leader_done_ms:
                    self.leader_done_ms = ms
                    self._push(ms + 150_000, self._race_timeout, self.poll_gen)
                car.finished = True
                car.finish_ms = ms
                car.cool = True
                self.finish_order.append(car.car_id)
                d.completed = True
                d.cache = None
                self._check_race_end(ms)
        self._emit(ms, frames)

    def _check_race_end(self, ms: int) -> None:
        running = [
            c
            for c in self.cars.values()
            if c.loaded and not c.finished and c.leg is not None and not (c.leg[4] == HOLD and c.in_pits)
        ]
        if not running:
            self._push(ms + 25_000, self._auto_end, self.poll_gen)

    def _race_timeout(self, ms: int, gen: int) -> None:
        if gen == self.poll_gen:
            self._do_end_session(ms)

    def _box(self, car: CarSim, d: RCDriver | None, ms: int) -> None:
        plan = car.pending_plan
        car.pending_plan = None
        car.hold(ms, car.leg[3], self.pit_lat)
        car.in_pits = True
        if car.cool:
            return
        car.stops += 1
        car.stint_laps = 0
        if d is not None and self.v2:
            d.num_pits += 1
            d.last_pit_stop = d.total_laps
            if plan is not None and plan.stop_s > 40:
                d.num_long_pits += 1
            d.cache = None
        if plan is None:
            plan = PitPlan(car.laps)
        if plan.swap_to is not None:
            car.pending_swap_release = True
            self._push(ms + 4000, self._swap_out, car.car_id, plan)
            return
        if plan.tyres and self.v2:
            self._push(ms + 3000, self._tyres, car.car_id, plan.tyres)
        elif plan.tyres:
            car.tyres = plan.tyres
        self._push(ms + round(plan.stop_s * 1000), self._pit_release, car.car_id, car.leg_ver)

    def _tyres(self, ms: int, car_id: int, tyres: str) -> None:
        car = self.cars[car_id]
        car.tyres = tyres
        d = self.rc.by_car(car_id)
        if d is not None:
            self._emit(ms, self.rc.on_tyres(d, tyres))

    def _pit_release(self, ms: int, car_id: int, ver: int) -> None:
        car = self.cars[car_id]
        if car.leg is None or car.leg_ver != ver or not car.loaded:
            return
        p = car.leg[3]
        car.legs.clear()
        car.plan_lap(ms, p, "box")
        car.next_leg(ms)

    def _swap_out(self, ms: int, car_id: int, plan: PitPlan) -> None:
        self._do_disconnect(ms, car_id)
        expected = ms + round(plan.swap_s * 1000)
        self._push(ms + 7000, self._swap_in, car_id, plan, expected)

    def _swap_in(self, ms: int, car_id: int, plan: PitPlan, expected: int) -> None:
        car = self.cars[car_id]
        if plan.tyres:
            car.tyres = plan.tyres
        car.driver_idx = plan.swap_to or 0
        car.connected = True
        car.loaded = False
        rc = self.rc
        frames = rc.on_connect(*self._driver_args(car), self.wall(ms))
        d = rc.by_car(car_id)
        if d is not None and self.v2:
            d.swap = [True, self.wall(expected), False, 0]
            d.in_pits = True
            d.cache = None
            frames[-1] = rc.broadcast_200()
        self._emit(ms, frames)
        car.pending_swap_release = True
        self._push(ms + 10_500, self._swap_loaded, car_id, expected)

    def _swap_loaded(self, ms: int, car_id: int, expected: int) -> None:
        car = self.cars[car_id]
        car.loaded = True
        car.hold(ms, S_BOX + car.laps, self.pit_lat)
        car.in_pits = True
        self._emit(ms, self.rc.on_loaded(car_id, self.wall(ms)))
        self._start_ticks(car, ms)
        self._push(max(expected, ms + 2000), self._swap_release, car_id, car.leg_ver)

    def _swap_release(self, ms: int, car_id: int, ver: int) -> None:
        car = self.cars[car_id]
        car.pending_swap_release = False
        d = self.rc.by_car(car_id)
        if d is not None and d.swap is not None:
            d.swap = [False, d.swap[1], False, self.wall(ms)]
            d.cache = None
        if car.leg is None or car.leg_ver != ver:
            return
        p = car.leg[3]
        car.legs.clear()
        car.lap_start = car.split_start = ms
        car.plan_lap(ms, p, "box")
        car.next_leg(ms)

    # ------------------------------------------------------------------ running
    def frames(self) -> Iterator[tuple[float, str]]:
        """Run the simulation, yielding ``(t, frame_text)`` in time order (streaming)."""
        heap = self._heap
        out = self._out
        pop = heapq.heappop
        while heap:
            ms, _, fn, args = pop(heap)
            end = self.end_ms
            if end is not None and ms > end:
                break
            fn(ms, *args)
            if out:
                c = self.connect_ms or 0
                for fms, text in out:
                    self.frames_emitted += 1
                    yield (fms - c) / 1000.0, text
                out.clear()

    def progress_ms(self) -> int:
        """Simulation time of the next pending event (for progress reporting)."""
        return self._heap[0][0] if self._heap else (self.end_ms or 0)

    # ------------------------------------------------------------------ truth
    def truth(self) -> dict[str, Any]:
        """What a correct parser must show at the end of the capture (per car, order, session state)."""
        rc = self.rc
        s = self.session
        race = s is not None and s.type == 3
        entries: dict[int, list[tuple[str, RCDriver]]] = {}
        for where, dm in (("connected", rc.connected), ("disconnected", rc.disconnected)):
            for d in dm.drivers.values():
                entries.setdefault(d.car_id, []).append((where, d))
        cars = []
        for car_id in sorted(set(entries) | {c for c, car in self.cars.items() if car.records}):
            car = self.cars.get(car_id)
            recs = car.records if car else []
            laps = [r["lap_ms"] / 1000.0 for r in recs]
            valid = [r["lap_ms"] for r in recs if not r["cuts"]]
            ds = sorted(entries.get(car_id, []), key=lambda e: (e[1].connected or 0, e[1].guid))
            drivers = []
            for where, d in ds:
                c = d.cars.get(d.model)
                drivers.append(
                    {
                        "guid": d.guid,
                        "name": d.name,
                        "connected": where == "connected",
                        "laps": d.total_laps,
                        "best_lap": (c.best / 1e9) if c and c.best else None,
                        "last_lap": (c.last / 1e9) if c and c.last else None,
                        "pits": d.num_pits if self.v2 else None,
                    }
                )
            current = next(
                (d["guid"] for d in drivers if d["connected"]), drivers[-1]["guid"] if drivers else None
            )
            model = car.model if car else CAR_MODELS[ds[0][1].model]
            cars.append(
                {
                    "car_id": car_id,
                    "number": str(car.race_number if (car and self.v2) else car_id),
                    "race_number": (car.race_number if car else None) if self.v2 else None,
                    "car_model": model.model,
                    "car_name": model.name,
                    "class_id": (car.class_id if car else "") if self.v2 else None,
                    "drivers": drivers,
                    "current_driver": current,
                    "connected": any(d["connected"] for d in drivers),
                    "laps": len(recs),
                    "lap_times": laps,
                    "cut_laps": [i + 1 for i, r in enumerate(recs) if r["cuts"]],
                    "last_lap": laps[-1] if laps else None,
                    "best_lap": min(valid) / 1000.0 if valid else None,
                    "pits": (car.stops if car else 0) if self.v2 else None,
                    "finished": bool(car and car.finished),
                    "_last_cross": recs[-1]["at_ms"] if recs else 0,
                }
            )
        if race:
            cars.sort(key=lambda c: (-c["laps"], c["_last_cross"] if c["laps"] else 0, c["car_id"]))
        else:
            cars.sort(key=lambda c: (c["best_lap"] is None, c["best_lap"] or 0, -c["laps"], c["car_id"]))
        for i, c in enumerate(cars):
            c["position"] = i + 1
            del c["_last_cross"]
        flag = {"running": "green", "finished": "chequered"}.get(self.state, "none")
        acsm = {}
        for where, dm in (("connected", rc.connected), ("disconnected", rc.disconnected)):
            for g in sorted(dm.drivers):
                d = dm.drivers[g]
                c = d.cars.get(d.model)
                acsm[g] = {
                    "name": d.name,
                    "car_id": d.car_id,
                    "map": where,
                    "position": d.position,
                    "total_laps": d.total_laps,
                    "num_laps": c.num_laps if c else 0,
                    "best_lap_ns": c.best if c else 0,
                    "last_lap_ns": c.last if c else 0,
                }
        best = [c["best_lap"] for c in cars if c["best_lap"]]
        return {
            "flavour": self.flavour,
            "session": {
                "name": s.name if s else "",
                "type": s.type if s else 0,
                "track": self.rc.track.spec.folder if (s and self.rc.track) else "",
                "track_config": self.rc.track.spec.config if (s and self.rc.track) else "",
                "time_min": s.time_min if s else 0,
                "laps": s.laps if s else 0,
                "state": self.state,
                "flag": flag,
            },
            "order": [c["car_id"] for c in cars],
            "best_lap": min(best) if best else None,
            "cars": cars,
            "acsm_drivers": acsm,
        }

    def header(self) -> dict[str, Any]:
        """The capture header line (``started`` = manager clock at client connect, in UTC)."""
        c = self.connect_ms if self.connect_ms is not None else self.planned_connect_ms
        ns = self.base_ns + c * 1_000_000
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
        return {
            "capture": 1,
            "source": "emperor",
            "url": self.url,
            "started": dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        }


# =====================================================================================
# Ready-made scenario: a race with everything
# =====================================================================================

_DEMO_TRACK_FOR = {True: "ks_red_bull_ring/layout_gp", False: "ks_brands_hatch/indy"}


def build_race(
    flavour: str = "v2x",
    cars: int = 20,
    minutes: float | None = 25.0,
    laps: int | None = None,
    seed: int = 1,
    rate: float = 1.0,
    track: str | None = None,
    events: bool = True,
    split_snapshots: bool | None = None,
) -> EmperorSimulator:
    """A complete race weekend tail: drivers join, race ``50`` with grid wait, the race with pit stops,
    driver swaps (multi-driver cars), collisions, chat and weather, the chequered flag and session end.

    ``laps`` makes a lap race, otherwise ``minutes`` a timed race (leader finishes the lap after the
    time).  Positions come every ``1000 / rate`` ms per car.
    """
    if cars < 1 or cars > 254:
        raise ValueError("cars must be 1..254")
    rng = random.Random(seed * 31 + 7)
    long_race = (minutes or 0) >= 60 or (laps or 0) >= 40
    track = track or (
        "ks_red_bull_ring/layout_gp" if (minutes or 0) >= 20 or (laps or 0) >= 15 else "ks_brands_hatch/indy"
    )
    sim = EmperorSimulator(
        flavour,
        seed,
        track,
        server_name=f"Example League | {'Endurance' if long_race else 'Sprint'} Cup",
        interval_ms=max(50, round(1000 / rate)),
        split_snapshots=split_snapshots,
        start="2024-06-01T19:00:00",
    )
    tr = sim.track
    gt3 = [m for m in CAR_MODELS.values() if m.car_class == "GT3"]
    gt4 = [m for m in CAR_MODELS.values() if m.car_class == "GT4"]
    class_ids = {
        "GT3": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "GT4": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }
    n_drivers_per = [1] * cars
    for i in range(cars):
        if long_race:
            n_drivers_per[i] = rng.choice((2, 3, 3))
        elif cars >= 2 and (i == 1 or rng.random() < 0.15):
            n_drivers_per[i] = 2
    pool = _driver_pool(rng, sum(n_drivers_per))
    lap_s_guess = tr.spec.gt3_lap_s * 1.02
    if laps:
        race_laps = laps
    else:
        race_laps = int((minutes or 25) * 60 / lap_s_guess) + 1
    numbers = rng.sample(range(2, 100), min(cars, 98)) + list(range(100, 100 + max(0, cars - 98)))
    k = 0
    for i in range(cars):
        model = rng.choice(gt4) if (i >= cars * 0.7 and cars >= 6) else rng.choice(gt3)
        ds = pool[k : k + n_drivers_per[i]]
        k += n_drivers_per[i]
        base = 1.0 + abs(rng.gauss(0, 0.012))
        pace = [base + abs(rng.gauss(0, 0.006)) for _ in ds]
        sim.add_car(
            i,
            model.model,
            ds,
            race_number=numbers[i],
            class_id=class_ids[model.car_class],
            pace=pace,
            consistency=rng.uniform(0.003, 0.008),
            skin=model.skins[rng.randrange(len(model.skins))],
            tyres="S" if model.tyres != ("SM",) else "SM",
        )
        # pit strategy: one stop in a sprint, stints of about 55 minutes in longer races; cars with
        # several drivers hand over at (some of) their stops
        if events and race_laps >= 8:
            n_stints = max(2, round((minutes or race_laps * lap_s_guess / 60) / 55)) if long_race else 2
            stint = race_laps / n_stints
            driver = 0
            for stop_no in range(1, n_stints):
                lap = max(2, round(stop_no * stint) + rng.randint(-2, 2))
                if lap >= race_laps - 1:
                    break
                if len(ds) > 1 and (long_race or stop_no == 1):
                    driver = (driver + 1) % len(ds)
                    sim.driver_swap(i, lap, driver, tyres=rng.choice(("M", "S")))
                else:
                    sim.pit_stop(i, lap, stop_s=rng.uniform(20, 32), tyres=rng.choice(("M", "H", "S")))
    # timeline: previous session with everybody connected, then the race session
    quali = SessionSpec("Qualify", 2, 10, 0, 0, 21, 27, "3_clear", 1, 3, track)
    race = SessionSpec(
        "Race", 3, 0 if laps else int(minutes or 25), laps or 0, 60, 21, 28, "3_clear", 2, 3, track
    )
    sim.new_session(0.0, quali, auto_end=False)
    t = 2.0
    for i in range(cars):
        sim.connect(t, i, 0)
        sim.load(t + rng.uniform(6, 14), i, release_s=10_000)
        t += rng.uniform(0.3, 1.2)
    race_t = t + 20.0
    grid = sorted(sim.cars, key=lambda c: sim.cars[c].model.pace * sim.cars[c].pace[0] + rng.gauss(0, 0.002))
    sim.set_grid(grid)
    sim.end_session(race_t - 8.0)
    sim.new_session(race_t, race)
    sim.client_connect(race_t + 0.5)
    green = race_t + 60
    dur = (laps * lap_s_guess) if laps else (minutes or 25) * 60 + lap_s_guess
    if events:
        tt = race_t + rng.uniform(3, 10)
        sim.chat(tt, grid[-1], "good luck everyone")
        tt = green + rng.uniform(60, 150)
        while tt < green + dur:
            sim.chat(tt, rng.choice(list(sim.cars)), rng.choice(_CHAT_LINES))
            tt += rng.uniform(90, 260)
        tt = green + rng.uniform(20, 60)
        while tt < green + dur - 30:
            sim.collision(tt, rng.choice(list(sim.cars)), -1 if rng.random() < 0.7 else None)
            tt += rng.uniform(120, 400) if not long_race else rng.uniform(200, 900)
        tt = green + rng.uniform(300, 900)
        road = race.road
        while tt < green + dur:
            road += rng.choice((-1, 1))
            sim.weather(tt, road=road)
            tt += rng.uniform(600, 1800)
        sim.chat(green + dur + 90, grid[0], "gg all")
        if cars >= 10:
            leaver = grid[rng.randrange(cars // 2, cars)]
            sim.chat(green + dur * 0.6, leaver, "sorry, wheel broke, I'm out")
            sim.disconnect(green + dur * 0.6 + 2.0, leaver)
    sim.stop_after_end_ms = 8_000
    sim.expected_end_ms = round((green + dur + 120) * 1000)
    return sim


# =====================================================================================
# Capture files
# =====================================================================================


def capture_line(t: float, text: str) -> str:
    """One capture line: ``{"t": <seconds>, "data": "<frame text>"}`` plus newline."""
    return '{"t": ' + repr(t) + ', "data": ' + json.dumps(text) + "}\n"


class _ThreadedSink:
    """Writes byte chunks (gzip-compressed or plain) in a worker thread.

    zlib and file writes release the GIL, so compression runs in parallel with the simulation.
    """

    def __init__(self, path: str, compresslevel: int) -> None:
        self.raw = open(path, "wb")  # noqa: SIM115
        self.target: Any = self.raw
        self.gz: gzip.GzipFile | None = None
        if path.endswith(".gz"):
            self.gz = gzip.GzipFile(
                filename="", mode="wb", fileobj=self.raw, compresslevel=compresslevel, mtime=0
            )
            self.target = self.gz
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            chunk = self.queue.get()
            if chunk is None:
                return
            if self.error is None:
                try:
                    self.target.write(chunk)
                except BaseException as exc:  # reported by write()/close()
                    self.error = exc

    def write(self, chunk: bytes) -> None:
        """Queue a chunk (blocks when the writer is behind)."""
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        """Flush, close the files and re-raise a writer error."""
        self.queue.put(None)
        self.thread.join()
        try:
            if self.gz is not None:
                self.gz.close()
        finally:
            self.raw.close()
        if self.error is not None:
            raise self.error


def write_capture(
    frames: Iterable[tuple[float, str]],
    out: str | os.PathLike[str] | IO[str],
    header: dict[str, Any] | None = None,
    compresslevel: int = 6,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write a capture (header line, then one line per frame); gzip when the path ends in ``.gz``.

    Streams: frames are consumed one by one and written in chunks by a worker thread (paths) or
    directly (text streams such as ``sys.stdout``).  Returns ``(frames, characters written)``.
    Gzip output has a zero mtime and no file name, so equal input gives equal bytes.
    """
    sink: _ThreadedSink | None = None
    fh: IO[str] | None = None
    if isinstance(out, str | os.PathLike):
        sink = _ThreadedSink(os.fspath(out), compresslevel)
    else:
        fh = out

    def emit(text: str) -> None:
        if sink is not None:
            sink.write(text.encode("utf-8"))
        else:
            fh.write(text)  # type: ignore[union-attr]

    count = 0
    size = 0
    buf: list[str] = []
    dumps = json.dumps
    ok = False
    try:
        if header is not None:
            line = dumps(header) + "\n"
            emit(line)
            size += len(line)
        for t, text in frames:
            line = '{"t": ' + repr(t) + ', "data": ' + dumps(text) + "}\n"
            buf.append(line)
            size += len(line)
            count += 1
            if len(buf) >= 2048:
                emit("".join(buf))
                buf.clear()
                if progress is not None:
                    progress(count, size)
        if buf:
            emit("".join(buf))
        if progress is not None:
            progress(count, size)
        ok = True
    finally:
        if sink is not None:
            if ok:
                sink.close()
            else:
                try:
                    sink.close()
                except BaseException:  # the original exception matters more
                    pass
    return count, size


def read_capture(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the parsed lines of a capture file (``.gz`` aware), header included."""
    p = os.fspath(path)
    opener = gzip.open if p.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
