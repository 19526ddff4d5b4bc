"""The update-cycle benchmark runs and reports its rows (figures only; speed is judged in bench/)."""

from __future__ import annotations

import json
import os

from bench import bench_cycle
from bench.states import COLUMNS, EnduranceRace, race_states


def test_race_states_are_deterministic_and_shaped_like_the_columns():
    states = race_states(120, cars=40)
    assert states == race_states(120, cars=40)
    last = states[-1]
    assert len(last["cars"]) == 40
    assert all(len(row) == len(COLUMNS) for row in last["cars"])
    assert sorted(row[0] for row in last["cars"]) == sorted(str(n) for n in range(1, 41))
    assert last["session"] == {"flagState": "green", "timeElapsed": 119, "timeRemain": 7081}
    assert EnduranceRace(3, seed=2).state(0)["cars"] != EnduranceRace(3, seed=1).state(200)["cars"]


def test_benchmark_reports_every_configuration(tmp_path, monkeypatch):
    kinds = ("STATE", "ANALYSIS", "LOG", "RECORDINGS", "DATA")
    for kind in kinds:
        monkeypatch.delenv(f"LIVETIMING_{kind}_DIR", raising=False)
    results = tmp_path / "cycle.json"
    status = bench_cycle.main(["--cycles", "12", "--warmup", "3", "--carobama-minutes", "3",
                               "--no-append", "--results", str(results)])
    rows = json.loads(results.read_text())
    assert status in (0, 1)  # 1 only when a target is missed: not judged here
    # Three rows per configuration, the Python-compressor row, three for the carobama service.
    assert len(rows) == 3 * len(bench_cycle.CONFIGURATIONS) + 1 + 3
    medians = [row for row in rows if row["figure"].endswith("median") and row["target"]]
    assert len(medians) == len(bench_cycle.CONFIGURATIONS) + 1
    assert all(row["ok"] is not None for row in medians)
    assert all(row["value"] > 0 for row in rows)
    carobama = [row for row in rows if "carobama" in row["figure"]]
    assert carobama[-1]["unit"] == "cycles" and carobama[-1]["value"] > 100
    for kind in kinds:  # the benchmark restored the environment
        assert f"LIVETIMING_{kind}_DIR" not in os.environ
