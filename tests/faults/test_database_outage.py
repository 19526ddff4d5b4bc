"""Database outage (issue 9 part 5): PostgreSQL taken away mid-session, then brought back.

The service stores into a private PostgreSQL server (tests/support/postgres.py) that the test
stops with ``pg_ctl -m immediate`` (connections cut at once, like a crash) and starts again after
the outage. During the outage a standalone client keeps receiving states whose laps move on, and
the service's resident memory is sampled; after recovery the buffered rows are written and the
database equals the capture's truth: every lap, every raw frame once. The writer's buffer bound
(and its one log line when full) is unit-tested in tests/unit/test_store_writer.py
(``test_a_full_buffer_drops_new_items_and_says_so_once_per_kind``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store import schema as s
from tests.faults.rss import RssSampler, mib
from tests.integration.test_emperor_end_to_end import CAPTURES, Replay, wait_for_truth
from tests.integration.test_store_end_to_end import (  # noqa: F401  (started is a fixture)
    LapWatcher,
    lap_count,
    query,
    service,
    started,
    stop_cleanly,
    wait_until,
)
from tests.support.postgres import private_database
from tests.support.processes import BIN
from tests.support.stores import compare_with_truth, latest_session, stored_cars, truth_of
from tests.support.wsclient import StandaloneClient

RECOVERED = re.compile(r"available again after ([\d.]+) s: writing the buffered rows "
                       r"\((\d+) in the first batch, (\d+) more queued\)")
#: Growth of the service's RSS allowed during the outage: the writer's bound on buffered raw frames
#: (128 MiB of text) plus 64 MiB for the buffered operations and the interpreter's overhead.
RSS_ALLOWANCE = 192 * 1024 * 1024


def counts(url: str) -> tuple[int, int]:
    """(raw frames, laps) stored."""
    def read(conn: Any) -> tuple[int, int]:
        frames = conn.execute(select(func.count()).select_from(s.frames)).scalar_one()
        return frames, conn.execute(select(func.count()).select_from(s.laps)).scalar_one()

    return query(url, read)


class Outage:
    """Takes the private server away for ``seconds`` while a client watches the laps and the
    service's RSS is sampled; the figures common to both tests."""

    def __init__(self, pg: Any, proc: Any, url: str, client: StandaloneClient, seconds: float):
        watcher = LapWatcher(client, proc.uuid)
        watcher.most_laps(0.5)
        self.frames_before, self.laps_before = counts(url)
        with RssSampler(proc.proc.pid) as before:
            watcher.most_laps(1.0)
        with RssSampler(proc.proc.pid) as during:
            pg.stop("immediate")
            went = time.monotonic()
            proc.wait_for_line(r"Database \S+ unavailable", timeout=30)
            self.laps_seen = [watcher.most_laps(seconds / 3) for _ in range(3)]
            assert proc.proc.poll() is None
            pg.start()
            self.seconds = time.monotonic() - went
        self.rss_before, self.rss_during = before.max, during.max
        assert min(self.laps_seen) > 0, "publishing stopped while the database was down"
        assert during.max < before.max + RSS_ALLOWANCE, (mib(before.max), mib(during.max))
        self.recovered = RECOVERED.search(proc.wait_for_line(RECOVERED, timeout=60).string)

    def report(self, url: str, output: str, figures) -> None:
        """Checks on the service's log; figures."""
        assert len(re.findall(r"Database \S+ unavailable", output)) == 1, output[-3000:]
        assert "dropping" not in output
        frames_after, laps_after = counts(url)
        figures["outage_seconds"] = round(self.seconds, 1)
        figures["writer_reported_down_seconds"] = float(self.recovered.group(1))
        figures["rows_buffered_at_recovery"] = int(self.recovered.group(2)) + int(self.recovered.group(3))
        figures["frames_written_after_outage_began"] = frames_after - self.frames_before
        figures["laps_written_after_outage_began"] = laps_after - self.laps_before
        figures["laps_shown_during_outage"] = self.laps_seen
        figures["rss_before_mib"] = mib(self.rss_before)
        figures["rss_max_during_outage_mib"] = mib(self.rss_during)
        figures["laps_lost"] = 0
        figures["frames_lost"] = 0


@pytest.mark.timeout(600)
def test_postgres_outage_publishing_goes_on_memory_stays_bounded_and_rows_are_written(
        soak, service_env, started, figures):  # noqa: F811
    pg, url = private_database(started)
    name = "race-v2x"
    truth = truth_of(name)
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "3" if soak else "15")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", url)
    client = StandaloneClient(proc.url)
    wait_until(lambda: lap_count(url) >= 3, 90, "three stored laps")
    outage = Outage(pg, proc, url, client, 40.0 if soak else 6.0)
    seen = outage.laps_seen
    assert seen[-1] > seen[0] or seen[-1] == 6, f"timing did not move on: {seen}"
    client.close()
    client = StandaloneClient(proc.url)  # a new client is sent the manifest again
    wait_for_truth(client, proc.uuid, truth, timeout=120)
    client.close()
    wait_until(lambda: counts(url)[0] >= truth["frames"], 120, "every raw frame stored")
    stop_cleanly(proc)

    def check(conn: Any) -> None:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), name) == []
        count, last = conn.execute(select(func.count(), func.max(s.frames.c.seq))).one()
        assert count == last + 1 == truth["frames"], "a raw frame is missing or stored twice"

    query(url, check)
    outage.report(url, proc.output(), figures)


@pytest.mark.timeout(900)
def test_postgres_outage_under_a_40_car_race(soak, service_env, started, tmp_path, figures):  # noqa: F811
    """Soak: a simulated 40-car race (two car updates per car per second, 85 MB of frames, replayed
    3x) with the database away for 45 s: memory stays bounded while thousands of frames are buffered, and the
    stored laps equal the simulator's truth afterwards."""
    if not soak:
        pytest.skip("soak only (make soak)")
    capture, truth_file = tmp_path / "race-40.jsonl", tmp_path / "race-40.truth.json"
    subprocess.run([str(BIN / "carobama-simulate"), "emperor", "--cars", "40", "--minutes", "5",
                    "--rate", "2", "--seed", "11", "--out", str(capture), "--truth", str(truth_file),
                    "--quiet"], check=True, timeout=300)
    truth = json.loads(truth_file.read_text(encoding="utf-8"))
    frames = sum(1 for _ in read_capture(capture)[1])
    pg, url = private_database(started)
    replay = Replay(capture, "--speed", "3")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", url)
    client = StandaloneClient(proc.url)
    wait_until(lambda: lap_count(url) >= 1, 120, "a stored lap")
    outage = Outage(pg, proc, url, client, 45.0)
    client.close()
    wait_until(lambda: counts(url)[0] >= frames, 300, "every raw frame stored")
    stop_cleanly(proc)

    def laps_per_car(conn: Any) -> dict[str, int]:
        return {number: len(car["laps"]) for number, car in stored_cars(conn, latest_session(conn)).items()}

    stored = query(url, laps_per_car)
    assert {number: laps for number, laps in stored.items() if laps} == \
        {car["number"]: car["laps"] for car in truth["cars"] if car["laps"]}
    assert counts(url)[0] == frames
    outage.report(url, proc.output(), figures)
    figures["cars"] = 40
    figures["frames"] = frames
