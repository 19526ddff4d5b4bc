"""The benchmarks' load generator (bench/load.py): the load it promises, and lap marks that hold."""

from __future__ import annotations

import collections
import json

import pytest

from bench.load import BmiLoad, EmperorLoad, lap_frames


def test_emperor_load_has_n_cars_at_r_hz_and_a_snapshot_per_lap_and_sector():
    load = EmperorLoad(cars=4, hz=2.0, minutes=3.0, seed=5, track="ks_vallelunga/club_circuit")
    frames = list(load.frames())
    assert frames == list(load.frames())  # deterministic
    racing = [(t, json.loads(text)) for t, text in frames if 90 <= t < 150]
    positions = collections.Counter(msg["Message"]["CarID"] for _t, msg in racing if msg["EventType"] == 53)
    assert len(positions) == 4
    assert all(100 <= count <= 140 for count in positions.values()), positions  # 2 Hz x 60 s
    marks = lap_frames(frames)
    snapshots = sum(1 for _t, text in frames if text.startswith('{"EventType":200,'))
    laps = sum(len(found) for found in marks.by_frame.values())
    assert laps >= 4 * 3  # 44 s laps over 3 minutes
    assert snapshots >= 3 * laps  # one per sector split and one per lap (v2x)
    assert all(text.startswith('{"EventType":200,') for i, (_t, text) in enumerate(frames)
               if i in marks.by_frame)
    assert marks.laps_column > 0


def test_bmi_load_is_an_endurance_heat_and_refuses_more_karts_than_teams():
    frames = list(BmiLoad(karts=6, minutes=5, seed=2).frames())
    assert len(frames) > 100 and all(isinstance(text, str) for _t, text in frames)
    with pytest.raises(ValueError, match="team karts"):
        list(BmiLoad(karts=11).frames())
