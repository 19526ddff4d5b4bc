"""Tests of the Emperor race-control simulator and of the capture fixtures it generated."""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from livetiming.service.plugins.carobama.sim import cli
from livetiming.service.plugins.carobama.sim.emperor import (
    GoClock,
    RaceControl,
    acsm_duration,
    build_race,
    capture_line,
    go_duration,
    go_float32,
    go_float64,
    go_str,
    write_capture,
)

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests" / "fixtures" / "captures"
DEMO = (
    ROOT
    / "src"
    / "livetiming"
    / "service"
    / "plugins"
    / "carobama"
    / "data"
    / "demo-emperor-race.capture.jsonl.gz"
)
FIXTURES = ["practice-v1", "race-v2x", "session-change-v1", "edge-cases"]
SIMULATED = ["practice-v1", "race-v2x", "session-change-v1"]

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_captures  # noqa: E402


def _lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _frames(name: str) -> list[tuple[float, Any]]:
    out = []
    for rec in _lines(CAPTURES / f"{name}.jsonl")[1:]:
        try:
            out.append((rec["t"], json.loads(rec["data"])))
        except ValueError:
            out.append((rec["t"], None))
    return out


def _truth(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / f"{name}.truth.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- Go encoders


def test_go_float_formatting() -> None:
    assert go_float32(51.404533) == "51.404533"
    assert go_float32(5.1435164e-14) == "5.1435164e-14"
    assert go_float32(1e-7) == "1e-7"
    assert go_float32(0.0) == "0"
    assert go_float32(12.5) == "12.5"
    assert go_float32(0.1) == "0.1"
    assert go_float64(63.7999956) == "63.7999956"
    assert go_float64(3.0) == "3"
    assert go_float64(1e21) == "1e+21"
    assert go_float64(0.000001) == "0.000001"


def test_go_duration_and_acsm_format() -> None:
    assert go_duration(15_662_000_000) == "15.662s"
    assert go_duration(283_000_000) == "283ms"
    assert go_duration(62_345_000_000) == "1m2.345s"
    assert go_duration(3_600_000_000_000) == "1h0m0s"
    assert go_duration(60_000_000_000) == "1m0s"
    assert go_duration(0) == "0s"
    assert go_duration(-150_000_000) == "-150ms"
    assert acsm_duration(1_234_000_000) == "00:01.234"
    assert acsm_duration(0) == "00:00.000"
    assert acsm_duration(3_723_004_000_000) == "01:02:03.004"


def test_go_time_and_strings() -> None:
    assert GoClock(60).format(1717263612018667196) == "2024-06-01T18:40:12.018667196+01:00"
    assert GoClock(0).format(1717263612500000000) == "2024-06-01T17:40:12.5Z"
    assert GoClock(0).format(0) == "0001-01-01T00:00:00Z"
    assert go_str("Fish & chips <3") == '"Fish \\u0026 chips \\u003c3"'
    assert go_str("Mäkinen") == '"Mäkinen"'


def test_idle_manager_snapshot() -> None:
    snap = json.loads(RaceControl("v1", GoClock(60), "", 1000).snapshot())
    msg = snap["Message"]
    assert msg["CurrentRealtimePosInterval"] == -1
    assert msg["SessionStartTime"] == "0001-01-01T00:00:00Z"
    assert msg["ChatMessages"] is None
    assert msg["ConnectedDrivers"] == {"Drivers": {}, "GUIDsInPositionalOrder": None}
    assert msg["TrackMapData"]["scale_factor"] == 0


# ----------------------------------------------------------------------------- capture format


@pytest.mark.parametrize("name", FIXTURES)
def test_capture_format(name: str) -> None:
    raw = (CAPTURES / f"{name}.jsonl").read_text(encoding="utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    header = json.loads(lines[0])
    assert header["capture"] == 1 and header["source"] == "emperor"
    assert header["url"].startswith(("ws://", "wss://")) and header["url"].endswith("/api/race-control")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", header["started"])
    last = 0.0
    for line in lines[1:]:
        rec = json.loads(line)
        assert list(rec) == ["t", "data"]
        assert isinstance(rec["t"], float) and isinstance(rec["data"], str)
        assert rec["t"] >= last
        last = rec["t"]
        # the line is exactly what json.dumps gives (as the example capture)
        assert line == json.dumps(rec)
        assert line + "\n" == capture_line(rec["t"], rec["data"])


@pytest.mark.parametrize("name", SIMULATED)
def test_frames_are_race_control_json(name: str) -> None:
    frames = _frames(name)
    flavour = _truth(name)["flavour"]
    kinds: Counter[int] = Counter()
    for t, msg in frames:
        assert isinstance(msg, dict), t
        assert list(msg) == ["EventType", "Message"]
        et = msg["EventType"]
        kinds[et] += 1
        assert et in {10, 11, 50, 51, 52, 53, 56, 57, 58, 101, 200}
        if et in (56, 58):
            assert isinstance(msg["Message"], int)
        if et == 53:
            m = msg["Message"]
            for key in ("CarID", "Pos", "Velocity", "Gear", "EngineRPM", "NormalisedSplinePos"):
                assert key in m
            assert 0 <= m["NormalisedSplinePos"] < 1
            v2_keys = {"RacePosition", "Gap", "IsInPits", "Rotation", "HasCompletedSession", "Ping"}
            assert v2_keys <= set(m) if flavour == "v2x" else not (v2_keys & set(m))
    assert kinds[200] >= 5 and kinds[53] > 100
    if flavour == "v1":
        assert kinds[101] == 0


@pytest.mark.parametrize("name", SIMULATED)
def test_flavour_specific_fields_and_times(name: str) -> None:
    flavour = _truth(name)["flavour"]
    text = (CAPTURES / f"{name}.jsonl").read_text(encoding="utf-8")
    times = re.findall(r'\\"(\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d))\\"', text)
    assert times
    zones = {t[-6:] if t[-6] in "+-" else "Z" for t in times if not t.startswith("0001-")}
    assert zones == ({"+01:00"} if flavour == "v1" else {"Z"})
    for t in times:
        # RFC 3339 with up to nanoseconds (Go trims trailing zeros); Python parses microseconds
        m = re.fullmatch(r"([0-9-]+T[0-9:]+)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", t)
        assert m, t
        frac = (m.group(2) or "0")[:6]
        assert not (m.group(2) or "").endswith("0")
        datetime.fromisoformat(f"{m.group(1)}.{frac.ljust(6, '0')}{m.group(3).replace('Z', '+00:00')}")
    for _, msg in _frames(name):
        if msg["EventType"] != 200:
            continue
        m = msg["Message"]
        if flavour == "v1":
            assert "ChatMessagesMutex" in m and "BestLap" not in m
            for dm in (m["ConnectedDrivers"], m["DisconnectedDrivers"]):
                for d in dm["Drivers"].values():
                    assert "NumPits" not in d and "Tyres" not in d["CarInfo"]
        else:
            assert "BestSplits" in m and "BestLap" in m and "padding" in m["TrackMapData"]


def test_go_map_keys_sorted_and_positions() -> None:
    for name in SIMULATED:
        for _, msg in _frames(name):
            if msg["EventType"] != 200:
                continue
            m = msg["Message"]
            assert list(m["CarIDToGUID"]) == sorted(m["CarIDToGUID"])
            for dm in (m["ConnectedDrivers"], m["DisconnectedDrivers"]):
                assert list(dm["Drivers"]) == sorted(dm["Drivers"])
                order = dm["GUIDsInPositionalOrder"]
                if order is None:
                    assert dm["Drivers"] == {}
                    continue
                assert sorted(order) == sorted(dm["Drivers"])
                positions = [dm["Drivers"][g]["Position"] for g in order]
                assert positions == list(range(1, len(order) + 1)) or set(positions) == {0}


@pytest.mark.parametrize("name", SIMULATED)
def test_positions_inside_the_map(name: str) -> None:
    track_map = None
    checked = 0
    for _, msg in _frames(name):
        m = msg["Message"]
        if msg["EventType"] == 200:
            track_map = m["TrackMapData"]
        elif msg["EventType"] in (53, 10, 11) and track_map:
            pos = m["Pos"] if msg["EventType"] == 53 else m["WorldPos"]
            px = (pos["X"] + track_map["offset_x"]) / track_map["scale_factor"]
            py = (pos["Z"] + track_map["offset_y"]) / track_map["scale_factor"]
            assert 0 <= px <= track_map["width"] and 0 <= py <= track_map["height"]
            checked += 1
    assert checked > 100


def test_edge_cases_file() -> None:
    raw = [json.loads(line)["data"] for line in (CAPTURES / "edge-cases.jsonl").read_text().splitlines()[1:]]
    truth = _truth("edge-cases")
    assert truth["frames"] == len(raw)
    assert raw[0] == "" and "502 Bad Gateway" in raw[2]
    for i in truth["invalid_json_frames"]:
        try:
            value = json.loads(raw[i])
        except ValueError:
            continue
        assert not isinstance(value, dict)
    assert truth["nonstandard_json_frames"]
    text = "\n".join(raw)
    for needle in (
        '"EventType":101',
        '"EventType":73',
        '"EventType":55',
        '"EventType":230',
        "NaN",
        "Infinity",
        '"Split":"1m2.345s"',
        '"Split":"01:02:03.004"',
        '"Split":"3 laps"',
        '"Split":"1234"',
        '"CurrentRealtimePosInterval":-1',
        '"ElapsedMilliseconds":-60000',
        '"CarID":17',
    ):
        assert needle in text


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", FIXTURES)
def test_fixtures_regenerate_identically(name: str, tmp_path: Path) -> None:
    make_captures.write_fixture(name, tmp_path)
    assert (tmp_path / f"{name}.jsonl").read_bytes() == (CAPTURES / f"{name}.jsonl").read_bytes()
    assert (tmp_path / f"{name}.truth.json").read_bytes() == (CAPTURES / f"{name}.truth.json").read_bytes()


@pytest.mark.parametrize("flavour", ["v1", "v2x"])
def test_same_seed_same_bytes(flavour: str, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        sim = build_race(flavour, cars=5, laps=9, seed=7)
        path = tmp_path / f"{i}.jsonl.gz"
        write_capture(sim.frames(), path, sim.header())
        outs.append(path.read_bytes())
        outs.append(json.dumps(sim.truth()))
    assert outs[0] == outs[2] and outs[1] == outs[3]
    other = build_race(flavour, cars=5, laps=9, seed=8)
    buf = io.StringIO()
    write_capture(other.frames(), buf, other.header())
    assert gzip.decompress(outs[0]).decode() != buf.getvalue()


# ----------------------------------------------------------------------------- truth vs frames


def _last_snapshot(name: str) -> dict[str, Any]:
    last = None
    for _, msg in _frames(name):
        if isinstance(msg, dict) and msg.get("EventType") == 200 and isinstance(msg.get("Message"), dict):
            last = msg["Message"]
    assert last is not None
    return last


def _all_drivers(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key in ("ConnectedDrivers", "DisconnectedDrivers"):
        dm = snap.get(key) or {}
        for g, d in (dm.get("Drivers") or {}).items():
            if isinstance(d, dict) and isinstance(d.get("CarInfo"), dict) and isinstance(d.get("Cars"), dict):
                out[g] = d
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_truth_matches_last_snapshot(name: str) -> None:
    truth = _truth(name)
    snap = _last_snapshot(name)
    drivers = _all_drivers(snap)
    assert snap["SessionInfo"]["Name"] == truth["session"]["name"]
    assert snap["SessionInfo"]["Track"] == truth["session"]["track"]
    assert [c["position"] for c in truth["cars"]] == list(range(1, len(truth["cars"]) + 1))
    assert truth["order"] == [c["car_id"] for c in truth["cars"]]
    for car in truth["cars"]:
        laps = 0
        best = []
        pits = 0
        last = (None, "")
        for td in car["drivers"]:
            d = drivers[td["guid"]]
            assert d["CarInfo"]["CarID"] == car["car_id"]
            cl = d["Cars"][d["CarInfo"]["CarModel"]]
            assert cl["NumLaps"] == td["laps"] == d["TotalNumLaps"]
            laps += cl["NumLaps"]
            if cl["BestLap"]:
                best.append(cl["BestLap"] / 1e9)
            pits += d.get("NumPits", 0)
            if cl["NumLaps"] and cl["LastLapCompletedTime"] > last[1]:
                last = (cl["LastLap"] / 1e9, cl["LastLapCompletedTime"])
        assert laps == car["laps"]
        assert (min(best) if best else None) == car["best_lap"]
        assert last[0] == car["last_lap"]
        if truth["flavour"] == "v2x" or truth["flavour"] == "mixed":
            assert pits == car["pits"]
        else:
            assert car["pits"] is None
        if car["lap_times"] is not None:
            assert len(car["lap_times"]) == car["laps"]
            total_ns = sum(
                drivers[td["guid"]]["Cars"][drivers[td["guid"]]["CarInfo"]["CarModel"]]["TotalLapTime"]
                for td in car["drivers"]
            )
            assert round(sum(car["lap_times"]) * 1000) * 1_000_000 == total_ns
            valid = [t for i, t in enumerate(car["lap_times"]) if i + 1 not in car["cut_laps"]]
            assert (min(valid) if valid else None) == car["best_lap"]


def test_race_truth_story() -> None:
    truth = _truth("race-v2x")
    assert truth["session"]["state"] == "finished" and truth["session"]["flag"] == "chequered"
    by_id = {c["car_id"]: c for c in truth["cars"]}
    assert len(by_id[2]["drivers"]) == 2 and by_id[2]["pits"] == 1 and by_id[0]["pits"] == 1
    assert all(c["finished"] for c in truth["cars"])
    frames = _frames("race-v2x")
    kinds = Counter(m["EventType"] for _, m in frames)
    assert kinds[10] == 1 and kinds[101] == 1 and kinds[51] == 1 and kinds[52] == 1 and kinds[58] == 1
    first = frames[0][1]["Message"]
    assert first["SessionInfo"]["ElapsedMilliseconds"] == -60000
    assert {d["Position"] for d in first["ConnectedDrivers"]["Drivers"].values()} == {0}
    swap = [
        m["Message"]
        for _, m in frames
        if m["EventType"] == 200
        and any(
            d.get("DriverSwap", {}).get("IsInDriverSwap")
            for d in m["Message"]["ConnectedDrivers"]["Drivers"].values()
        )
    ]
    assert swap
    assert any(m["Message"].get("HasCompletedSession") for _, m in frames if m["EventType"] == 53)


def test_practice_truth_story() -> None:
    truth = _truth("practice-v1")
    frames = _frames("practice-v1")
    assert frames[0][1]["EventType"] == 200 and frames[1][1]["EventType"] == 57
    kinds = [m["EventType"] for _, m in frames]
    assert kinds.count(50) == 1 and kinds.count(11) == 1 and kinds.count(52) == 1
    leave = next(m["Message"] for _, m in frames if m["EventType"] == 52)
    assert leave["DriverInitials"] == "" and leave["CarName"] == ""
    assert all("/help" not in json.dumps(m) for _, m in frames)
    assert truth["session"]["flag"] == "green"
    splits = {
        d["Split"]
        for _, m in frames
        if m["EventType"] == 200
        for d in m["Message"]["ConnectedDrivers"]["Drivers"].values()
    }
    assert any(re.fullmatch(r"\d+\.\d+s", s) for s in splits)


def test_session_change_story() -> None:
    frames = _frames("session-change-v1")
    kinds = [m["EventType"] for _, m in frames]
    stop = kinds.index(52)
    assert kinds[stop : stop + 4] == [52, 52, 52, 200]
    assert 56 in kinds and kinds.count(50) == 2
    race_reset = next(
        m["Message"]
        for _, m in frames
        if m["EventType"] == 200 and m["Message"]["SessionInfo"]["Name"] == "Race"
    )
    for d in race_reset["ConnectedDrivers"]["Drivers"].values():
        assert d["Position"] == 0 and d["LoadedTime"] == d["ConnectedTime"] == "0001-01-01T00:00:00Z"
    final = _last_snapshot("session-change-v1")
    assert final["SessionInfo"]["Track"] == "ks_vallelunga"
    assert len(final["CarIDToGUID"]) > len(final["ConnectedDrivers"]["Drivers"])


# ----------------------------------------------------------------------------- rate and size


@pytest.mark.parametrize("flavour,lo,hi", [("v1", 150, 260), ("v2x", 380, 520)])
def test_rate_and_sizes(flavour: str, lo: int, hi: int) -> None:
    sim = build_race(flavour, cars=4, laps=3, seed=3, rate=2.0, events=False)
    per_car: dict[int, list[float]] = {}
    sizes = []
    for t, text in sim.frames():
        if text.startswith('{"EventType":53'):
            cid = int(text.split('"CarID":', 1)[1].split(",", 1)[0])
            per_car.setdefault(cid, []).append(t)
            sizes.append(len(text))
    assert len(per_car) == 4
    for ts in per_car.values():
        gaps = [round(b - a, 3) for a, b in zip(ts, ts[1:], strict=False)]
        assert Counter(gaps).most_common(1)[0][0] == 0.5
    mean = sum(sizes) / len(sizes)
    assert lo <= mean <= hi
    assert sim.truth()["session"]["state"] == "finished"


def test_lap_times_are_plausible() -> None:
    for name in SIMULATED:
        for car in _truth(name)["cars"]:
            for lap in car["lap_times"]:
                assert 40 < lap < 200 and not math.isnan(lap)


# ----------------------------------------------------------------------------- CLI and demo


def test_cli_writes_gzip_capture_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "race.capture.jsonl.gz"
    truth = tmp_path / "race.truth.json"
    rc = cli.main(
        [
            "emperor",
            "--cars",
            "3",
            "--laps",
            "2",
            "--seed",
            "4",
            "--flavour",
            "v1",
            "--out",
            str(out),
            "--truth",
            str(truth),
            "--quiet",
        ]
    )
    assert rc == 0
    lines = _lines(out)
    assert lines[0]["source"] == "emperor" and len(lines) > 100
    t = json.loads(truth.read_text())
    assert t["flavour"] == "v1" and len(t["cars"]) == 3 and t["session"]["state"] == "finished"


def test_bundled_demo() -> None:
    assert DEMO.exists()
    assert DEMO.stat().st_size < 3_200_000
    lines = _lines(DEMO)
    assert lines[0]["capture"] == 1
    kinds: Counter[int] = Counter()
    cars = set()
    for rec in lines[1:]:
        msg = json.loads(rec["data"])
        kinds[msg["EventType"]] += 1
        if msg["EventType"] == 53:
            cars.add(msg["Message"]["CarID"])
    assert len(cars) >= 20
    assert lines[-1]["t"] >= 20 * 60
    for et in (10, 51, 52, 57, 58, 101, 200):
        assert kinds[et] >= 1, et
    assert kinds[53] / (lines[-1]["t"] * len(cars)) == pytest.approx(1.0, rel=0.1)
