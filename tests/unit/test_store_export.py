"""carobama-export: sessions, laps, stints, pit stops and captures read back from the store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store.db import make_engine
from livetiming.service.plugins.carobama.store.export import (
    capture_lines,
    laps,
    main,
    pit_stops,
    resolve_session,
    sessions,
    stints,
)
from tests.support.stores import (
    BACKENDS,
    BMI_CAPTURES,
    EMPEROR_CAPTURES,
    T0,
    database_url,
    frames_of,
    latest_session,
    make_feed,
    source_of,
    store_capture,
)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """An empty store on each backend."""
    yield from database_url(request.param, tmp_path)


def summary(model) -> dict[str, tuple]:
    return {entry.number: (entry.lap_count, entry.last_lap, entry.best_lap, entry.pit_count)
            for entry in model.entries}


@pytest.mark.parametrize("name", EMPEROR_CAPTURES + BMI_CAPTURES)
def test_a_sessions_exported_capture_replays_to_the_same_final_timing(store_url, name, tmp_path):
    player = store_capture(store_url, name)
    engine = make_engine(store_url)
    path = tmp_path / "export.jsonl"
    with engine.connect() as conn:
        path.write_bytes(b"".join(capture_lines(conn, latest_session(conn))))
    engine.dispose()
    header, exported = read_capture(path)
    exported = list(exported)
    assert header["capture"] == 1 and header["source"] == source_of(name)
    original = frames_of(name)
    assert [data for _t, data in exported] == [data for _t, data in original[-len(exported):]]
    times = [t for t, _data in exported]
    assert times[0] == 0.0 and times == sorted(times)
    feed = make_feed(source_of(name))
    for t, data in exported:
        feed.receive(data, T0 + t)
    assert summary(feed.model) == summary(player.feed.model)


def test_laps_stints_and_pit_stops_of_a_race(store_url):
    store_capture(store_url, "race-v2x")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        session_id = resolve_session(conn, "latest")
        assert [row["name"] for row in sessions(conn)] == ["Race"]
        rows = laps(conn, session_id)
        got_stints = stints(conn, session_id)
        stops = pit_stops(conn, session_id)
    engine.dispose()
    assert len(rows) == 18
    first = rows[0]
    assert (first["number"], first["lap"], first["time"], first["driver"]) == ("23", 1, 57.047,
                                                                              "Oskar Lindqvist-YORK")
    assert first["timestamp"].endswith("Z") and isinstance(first["sectors"], list)
    by_car = {(s_["number"], s_["stint"]): (s_["first_lap"], s_["last_lap"], s_["drivers"], s_["ended_by"])
              for s_ in got_stints}
    assert by_car == {
        ("23", 1): (1, 6, "Oskar Lindqvist-YORK", "pit"),
        ("48", 1): (1, 3, "Kenji Tanaka", "pit"),
        ("48", 2): (4, 6, "Lena Vogel-YORK", "end"),
        ("7", 1): (1, 4, "Ines Duarte", "pit"),
        ("7", 2): (5, 6, "Ines Duarte", "end"),
    }
    assert [(stop["number"], stop["stop"], stop["counted"], stop["duration"]) for stop in stops] == [
        ("23", None, False, None), ("48", 1, True, 44.0), ("7", 1, True, 17.0)]


def test_bmi_stints_split_after_the_lap_that_held_the_stop(store_url):
    store_capture(store_url, "bmi-endurance")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        session_id = resolve_session(conn, "latest")
        got = stints(conn, session_id)
        stops = pit_stops(conn, session_id)
    engine.dispose()
    for stop in stops:
        car_stints = [s_ for s_ in got if s_["number"] == stop["number"]]
        assert any(s_["last_lap"] == stop["in_lap"] and s_["ended_by"] == "pit" for s_ in car_stints)
        assert any(s_["first_lap"] == stop["in_lap"] + 1 for s_ in car_stints)
    assert all(stop["inferred"] is True and stop["counted"] for stop in stops)


# ----- the command ---------------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store_capture(url, "race-v2x")
    return url


def test_the_command_lists_sessions_as_csv_and_json(sqlite_store, capsys):
    assert main(["--database", sqlite_store, "sessions"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["id"], row["name"], row["laps"], row["pit_stops"]) for row in rows] == [
        ("1", "Race", "18", "3")]
    assert main(["--database", sqlite_store, "sessions", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["track"] == "Brands Hatch Indy"


def test_the_command_writes_laps_stints_pits_and_captures_to_files(sqlite_store, tmp_path, capsys):
    for command in ("laps", "stints", "pits"):
        out = tmp_path / f"{command}.json"
        assert main(["--database", sqlite_store, command, "1", "--format", "json", "-o", str(out)]) == 0
        assert json.loads(out.read_text(encoding="utf-8"))
    laps_csv = tmp_path / "laps.csv"
    assert main(["--database", sqlite_store, "laps", "latest", "-o", str(laps_csv)]) == 0
    assert len(list(csv.DictReader(laps_csv.open(encoding="utf-8")))) == 18
    capture = tmp_path / "race.jsonl"
    assert main(["--database", sqlite_store, "capture", "latest", "-o", str(capture)]) == 0
    assert "1403 frames of session 1" in capsys.readouterr().err
    assert len(list(read_capture(capture)[1])) == 1403


def test_the_command_reads_the_default_store_from_the_environment(sqlite_store, monkeypatch, capsys):
    monkeypatch.setenv("CAROBAMA_DATABASE", sqlite_store)
    assert main(["pits", "latest"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("number,entry_key,stop,")
    monkeypatch.delenv("CAROBAMA_DATABASE")
    monkeypatch.setenv("LIVETIMING_DATA_DIR", str(Path(sqlite_store.removeprefix("sqlite:///")).parent))
    (Path(sqlite_store.removeprefix("sqlite:///")).parent / "carobama.sqlite").write_bytes(
        Path(sqlite_store.removeprefix("sqlite:///")).read_bytes())
    assert main(["sessions"]) == 0


@pytest.mark.parametrize("argv,status,needle", [
    (["--database", "sqlite:////nonexistent/folder/x.sqlite", "sessions"], 1, "no store at"),
    (["--database", "mysql://u@h/db", "sessions"], 2, "only sqlite and postgresql"),
    (["--database", "not a url", "sessions"], 2, "SQLAlchemy URL"),
    (["--database", "none", "sessions"], 1, "no store"),
])
def test_the_command_fails_with_one_line(argv, status, needle, capsys):
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_an_unknown_session_is_one_line(sqlite_store, capsys):
    assert main(["--database", sqlite_store, "laps", "99"]) == 1
    assert "no session 99" in capsys.readouterr().err
    assert main(["--database", sqlite_store, "laps", "first"]) == 1
    assert "session id or 'latest'" in capsys.readouterr().err
