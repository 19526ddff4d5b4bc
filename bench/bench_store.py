"""Benchmark: the store (recorder on the reactor thread, writer thread, SQLite and PostgreSQL).

Method
------
A synthetic 40-car, 30-minute Emperor race (``carobama-simulate emperor --cars 40 --minutes 30``,
about 81 000 frames, 237 MB of frame text, 40 frames/s) is generated once into a temporary folder.

1. **Reactor-thread cost**: the feed alone, then feed + recorder + ``submit`` into a writer whose
   thread is not running (so only the enqueueing is timed): microseconds per frame.
2. **Write throughput**: everything the recorder produced for the whole race, written by
   ``flush_now`` in batches of 5 000 (10 000 frames recorded, then written, and so on): frames
   per second and MB of frame text per second; then operations per second with a model whose 40
   cars complete 250 laps each (10 000 laps). SQLite (file, WAL) and PostgreSQL (the server at
   ``$CAROBAMA_TEST_PG``, default 127.0.0.1:5432, in a throwaway database).
3. **Flush latency**: the writer thread with its default ``flush_interval`` (0.5 s); the race is
   played at 5× real time (200 frames/s) for 15 s while another connection polls ``max(seq)``
   every 10 ms; latency = time from ``submit`` until the frame is visible to that reader.

Run: ``.venv/bin/python bench/bench_store.py`` (from the repository root).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from livetiming.service.plugins.carobama.capture import read_capture  # noqa: E402
from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed  # noqa: E402
from livetiming.service.plugins.carobama.store import schema as s  # noqa: E402
from livetiming.service.plugins.carobama.store.db import make_engine, upgrade  # noqa: E402
from livetiming.service.plugins.carobama.store.recorder import Recorder  # noqa: E402
from livetiming.service.plugins.carobama.store.writer import StoreWriter  # noqa: E402
from tests.support.postgres import shared_database, shared_server_problem  # noqa: E402

T0 = 1_717_000_000.0


def capture(folder: Path) -> list[tuple[float, str]]:
    path = folder / "race40.jsonl.gz"
    subprocess.run([str(Path(sys.executable).parent / "carobama-simulate"), "emperor", "--cars", "40",
                    "--minutes", "30", "--seed", "3", "--out", str(path), "--quiet"], check=True)
    return list(read_capture(path)[1])


def reactor_cost(frames: list[tuple[float, str]], url: str) -> None:
    feed = EmperorFeed()
    started = time.perf_counter()
    for t, data in frames:
        feed.receive(data, T0 + t)
    feed_only = time.perf_counter() - started
    # The thread is not started: only the enqueueing is timed (and nothing may be dropped).
    writer = StoreWriter(make_engine(url), max_frame_bytes=1 << 40)
    feed = EmperorFeed()
    recorder = Recorder(writer.submit, writer.submit_frame, run="bench", source="emperor", host="h")
    recorder.start(T0)
    started = time.perf_counter()
    for t, data in frames:
        events = feed.receive(data, T0 + t)
        recorder.record(data, t, T0 + t, events, feed.model)
    both = time.perf_counter() - started
    rows, queued = writer.pending
    share = (both - feed_only) / len(frames) * 1e6
    print(f"reactor thread: feed {feed_only / len(frames) * 1e6:.1f} µs/frame, feed + recorder + submit "
          f"{both / len(frames) * 1e6:.1f} µs/frame (store share {share:.1f} µs/frame); {rows} operations "
          f"and {queued} frames queued")
    writer.engine.dispose()


def throughput(frames: list[tuple[float, str]], url: str, label: str, chunk: int = 10_000) -> None:
    writer = StoreWriter(make_engine(url))
    upgrade(writer.engine)
    feed = EmperorFeed()
    recorder = Recorder(writer.submit, writer.submit_frame, run="bench", source="emperor", host="h")
    recorder.start(T0)
    elapsed = 0.0
    rows = 0
    for first in range(0, len(frames), chunk):
        for t, data in frames[first:first + chunk]:
            recorder.record(data, t, T0 + t, feed.receive(data, T0 + t), feed.model)
        rows += writer.pending[0]
        started = time.perf_counter()
        assert writer.flush_now()
        elapsed += time.perf_counter() - started
    stats = writer.stats
    assert stats.frames_written == len(frames) and stats.frames_dropped == 0
    megabytes = sum(len(data) for _t, data in frames) / 1e6
    print(f"{label}: wrote {rows} operations + {len(frames)} frames ({megabytes:.0f} MB) in {elapsed:.1f} s: "
          f"{len(frames) / elapsed:,.0f} frames/s, {megabytes / elapsed:.1f} MB/s; {stats.batches} "
          f"transactions of up to 5 000 frames, longest {stats.max_commit_seconds * 1000:.0f} ms")


def lap_throughput(url: str, label: str, cars: int = 40, laps: int = 250) -> None:
    """Operations (mostly laps) per second: a model whose 40 cars each complete a lap per frame."""
    from livetiming.service.plugins.carobama.model import Entry, EventKind, FeedEvent, Lap, TimingModel

    writer = StoreWriter(make_engine(url))
    upgrade(writer.engine)
    recorder = Recorder(writer.submit, writer.submit_frame, run="laps", source="emperor", host="h")
    recorder.start(T0)
    model = TimingModel()
    model.session.generation, model.session.session_id = 1, "bench-laps"
    model.entries = [Entry(key=f"car{n}", number=str(n), driver=f"Driver {n}", drivers=[f"Driver {n}"],
                           position=n + 1) for n in range(cars)]
    for number in range(1, laps + 1):
        events = []
        for entry in model.entries:
            entry.laps.append(Lap(number=number, time=60.0 + entry.position / 10, driver=entry.driver,
                                  sectors=[20.0, 20.0, 20.0], position=entry.position))
            events.append(FeedEvent(EventKind.LAP, T0 + number, car_number=entry.number,
                                    data={"lap": number, "entry": entry.key}))
        recorder.record("{}", float(number), T0 + number, events, model)
    rows = writer.pending[0]
    started = time.perf_counter()
    assert writer.flush_now()
    elapsed = time.perf_counter() - started
    print(f"{label}: {rows} operations ({cars * laps} laps) in {elapsed:.1f} s: {rows / elapsed:,.0f} "
          f"operations/s")
    writer.engine.dispose()
    writer.engine.dispose()


def latency(frames: list[tuple[float, str]], url: str, label: str, speed: float = 5.0,
            seconds: float = 15.0) -> None:
    engine = make_engine(url)
    upgrade(engine)
    writer = StoreWriter(engine)
    feed = EmperorFeed()
    recorder = Recorder(writer.submit, writer.submit_frame, run=f"latency-{label}", source="emperor",
                        host="h")
    recorder.start(T0)
    writer.start()
    submitted: dict[int, float] = {}
    visible: dict[int, float] = {}
    stop = threading.Event()
    reader_engine = make_engine(url)

    def reader() -> None:
        seen = -1
        with reader_engine.connect() as conn:
            while not stop.is_set() or seen < len(submitted) - 1:
                conn.rollback()
                top = conn.execute(select(func.max(s.frames.c.seq))
                                   .join(s.runs, s.runs.c.id == s.frames.c.run_id)
                                   .where(s.runs.c.uid == f"latency-{label}")).scalar()
                now = time.perf_counter()
                if top is not None:
                    for seq in range(seen + 1, top + 1):
                        visible[seq] = now
                    seen = max(seen, top)
                if stop.is_set() and time.perf_counter() - stopped_at[0] > 10:
                    break
                time.sleep(0.01)

    stopped_at = [0.0]
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    start = time.perf_counter()
    first_t = frames[0][0]
    for seq, (t, data) in enumerate(frames):
        due = start + (t - first_t) / speed
        if due - start > seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted[seq] = time.perf_counter()
        recorder.record(data, t, T0 + t, feed.receive(data, T0 + t), feed.model)
    stopped_at[0] = time.perf_counter()
    stop.set()
    thread.join(30)
    writer.close()
    writer.join(30)
    reader_engine.dispose()
    delays = sorted(visible[seq] - submitted[seq] for seq in submitted if seq in visible)
    rate = len(submitted) / seconds
    print(f"{label} flush latency ({rate:.0f} frames/s for {seconds:.0f} s, flush_interval "
          f"{writer.flush_interval} s): p50 {statistics.median(delays) * 1000:.0f} ms, "
          f"p95 {delays[int(len(delays) * 0.95)] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms; "
          f"{len(delays)}/{len(submitted)} seen; {writer.stats.batches} transactions, longest "
          f"{writer.stats.max_commit_seconds * 1000:.0f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        frames = capture(Path(folder))
        print(f"capture: {len(frames)} frames, {frames[-1][0]:.0f} s, "
              f"{sum(len(d) for _t, d in frames) / 1e6:.0f} MB of frame text")
        reactor_cost(frames, f"sqlite:///{folder}/unused.sqlite")
        throughput(frames, f"sqlite:///{folder}/throughput.sqlite", "sqlite")
        lap_throughput(f"sqlite:///{folder}/laps.sqlite", "sqlite")
        latency(frames, f"sqlite:///{folder}/latency.sqlite", "sqlite")
        problem = shared_server_problem()
        if problem:
            print(f"postgresql: skipped ({problem})")
            return
        with shared_database("carobama_bench") as url:
            throughput(frames, url, "postgresql")
            lap_throughput(url, "postgresql")
        with shared_database("carobama_bench") as url:
            latency(frames, url, "postgresql")


if __name__ == "__main__":
    main()
