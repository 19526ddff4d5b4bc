"""Capture (raw upstream journal) write/read round trips and damage tolerance."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetiming.service.plugins.carobama.capture import (
    CaptureWriter,
    read_capture,
    redact_url,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "emperor-practice-v1.capture.jsonl"
if not EXAMPLE.exists():  # the work tree may sit next to shared/ or one level deeper
    EXAMPLE = Path("/work/shared/examples/emperor-practice-v1.capture.jsonl")


class FakeMonotonic:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def read_all(path):
    header, frames = read_capture(path)
    items = list(frames)
    return header, items, frames.skipped


def test_new_file_gets_header_and_frames(tmp_path):
    path = tmp_path / "a.capture.jsonl"
    started = datetime(2024, 6, 1, 17, 0, 0, tzinfo=UTC)
    with CaptureWriter(path, "emperor", "wss://x.example/api/race-control", started=started) as w:
        w.write('{"EventType":200}', 0.0)
        w.write('{"EventType":53}', 0.5)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    header = json.loads(lines[0])
    assert header == {
        "capture": 1,
        "source": "emperor",
        "url": "wss://x.example/api/race-control",
        "started": "2024-06-01T17:00:00Z",
    }
    assert json.loads(lines[1]) == {"t": 0.0, "data": '{"EventType":200}'}
    h, items, skipped = read_all(path)
    assert h == header
    assert items == [(0.0, '{"EventType":200}'), (0.5, '{"EventType":53}')]
    assert not skipped


def test_append_never_truncates_and_writes_no_second_header(tmp_path):
    path = tmp_path / "a.jsonl"
    with CaptureWriter(path, "bmi", "ws://k.example/") as w:
        w.write("one", 0.0)
        w.write("two", 2.0)
    with CaptureWriter(path, "bmi", "ws://k.example/") as w:
        # a new process: its t restarts at 0 and continues after the file's last t
        assert w.write("three", 0.0) == 2.0
        assert w.write("four", 1.5) == 3.5
    text = path.read_text("utf-8")
    assert text.count('"capture"') == 1
    h, items, skipped = read_all(path)
    assert h["source"] == "bmi"
    assert items == [(0.0, "one"), (2.0, "two"), (2.0, "three"), (3.5, "four")]
    assert not skipped


def test_existing_file_without_header_gets_none_added(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"t": 1.0, "data": "x"}\n', "utf-8")
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("y", 0.25)
    h, items, _ = read_all(path)
    assert h is None
    assert items == [(1.0, "x"), (1.25, "y")]


def test_empty_existing_file_gets_header(tmp_path):
    path = tmp_path / "a.jsonl"
    path.touch()
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("y", 0.0)
    h, items, _ = read_all(path)
    assert h is not None and h["capture"] == 1
    assert items == [(0.0, "y")]


def test_start_connection_keeps_t_monotonic_and_reproduces_gap(tmp_path):
    path = tmp_path / "a.jsonl"
    mono = FakeMonotonic()
    with CaptureWriter(path, "emperor", "ws://h/", monotonic=mono) as w:
        w.start_connection()
        w.write("a", 0.0)
        mono.now += 5.0
        w.write("b", 5.0)
        mono.now += 12.0  # 12 s outage before the reconnect delivered its first frame
        w.start_connection()
        assert w.write("c", 0.0) == 17.0
        mono.now += 1.0
        assert w.write("d", 1.0) == 18.0
    _, items, _ = read_all(path)
    assert [t for t, _ in items] == [0.0, 5.0, 17.0, 18.0]


def test_t_never_goes_backwards(tmp_path):
    path = tmp_path / "a.jsonl"
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("a", 3.0)
        assert w.write("b", 1.0) == 3.0
        assert w.clamped == 1
    _, items, _ = read_all(path)
    assert items == [(3.0, "a"), (3.0, "b")]


def test_write_rejects_bad_arguments(tmp_path):
    with CaptureWriter(tmp_path / "a.jsonl", "emperor", "ws://h/") as w:
        with pytest.raises(TypeError):
            w.write(b"bytes", 0.0)  # type: ignore[arg-type]
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError):
                w.write("x", bad)
    with pytest.raises(ValueError):
        w.write("x", 0.0)
    assert w.closed


def test_each_line_is_flushed_immediately(tmp_path):
    path = tmp_path / "a.jsonl"
    w = CaptureWriter(path, "emperor", "ws://h/")
    w.write("first", 0.0)
    # another reader sees the line while the writer is still open (as after a SIGKILL)
    _, items, _ = read_all(path)
    assert items == [(0.0, "first")]
    w.close()


def test_invalid_json_and_odd_text_kept_exactly(tmp_path):
    path = tmp_path / "a.jsonl"
    frames = [
        '{"EventType":53,"Message":{"CarID":1,',  # cut-off JSON
        "",  # the v1 empty first frame
        "not json at all \x00 \x1f",
        "line\nbreaks\r\nand\ttabs",
        "unicode separators \u2028 \u2029 \x85 \x1c \x1d \x1e \x0b \x0c",
        "non-BMP \U0001f3ce\U0001f3c1 \U00010348 and accents leiño",
        '"quoted" \\ backslash \\u0041',
        "lone surrogate \ud83d here",
        " leading and trailing spaces ",
    ]
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        for i, f in enumerate(frames):
            w.write(f, float(i))
    raw = path.read_bytes()
    assert raw.count(b"\n") == len(frames) + 1  # no frame introduced a raw newline
    assert "\U0001f3ce".encode() in raw  # non-ASCII stored as UTF-8, not escapes
    _, items, skipped = read_all(path)
    assert [d for _, d in items] == frames
    assert not skipped


def test_large_frame_round_trip(tmp_path):
    path = tmp_path / "a.jsonl"
    big = '{"EventType":200,"Message":"' + ("\u00e9x\U0001f3c1" * (17 * 1024 * 1024 // 7)) + '"}'
    assert len(big.encode()) > 16 * 1024 * 1024
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("small", 0.0)
        w.write(big, 1.0)
        w.write("after", 2.0)
    _, items, skipped = read_all(path)
    assert len(items) == 3
    assert items[1][1] == big
    assert items[2] == (2.0, "after")
    assert not skipped


def test_truncated_last_line_is_tolerated_and_append_repairs_it(tmp_path):
    path = tmp_path / "a.jsonl"
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("one", 0.0)
        w.write("two", 1.0)
    with open(path, "ab") as fh:  # a SIGKILL in the middle of a line
        fh.write(b'{"t": 2.0, "data": "thr')
    h, items, skipped = read_all(path)
    assert h is not None
    assert items == [(0.0, "one"), (1.0, "two")]
    assert skipped == {"truncated_last_line": 1}

    with CaptureWriter(path, "emperor", "ws://h/") as w:
        assert w.write("four", 0.5) == 1.5  # continues after the last *valid* t
    _, items, skipped = read_all(path)
    assert items == [(0.0, "one"), (1.0, "two"), (1.5, "four")]
    assert skipped == {"invalid_json": 1}


def test_truncated_multibyte_utf8_last_line(tmp_path):
    path = tmp_path / "a.jsonl"
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        w.write("ok", 0.0)
    line = json.dumps({"t": 1.0, "data": "\U0001f3c1"}, ensure_ascii=False).encode()
    with open(path, "ab") as fh:
        fh.write(line[: line.index(b"\xf0") + 2])
    _, items, skipped = read_all(path)
    assert items == [(0.0, "ok")]
    assert skipped == {"truncated_last_line": 1}


def test_last_line_without_newline_but_complete_is_accepted(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"t": 0.0, "data": "a"}\n{"t": 1.0, "data": "b"}')
    _, items, skipped = read_all(path)
    assert items == [(0.0, "a"), (1.0, "b")]
    assert not skipped


def test_invalid_lines_are_skipped_with_reasons(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        b'{"capture": 1, "source": "emperor", "url": "ws://h/", "started": "2024-01-01T00:00:00Z"}',
        b'{"t": 0.0, "data": "good"}',
        b"",
        b"   ",
        b"garbage",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"t": "1", "data": "x"}',
        b'{"t": true, "data": "x"}',
        b'{"t": -1, "data": "x"}',
        b'{"data": "x"}',
        b'{"t": 1.0, "data": 5}',
        b'{"t": 1.0}',
        b'{"capture": 1, "source": "bmi"}',
        b'{"t": 2, "data": "also good", "extra": 1}',
        b'{"t": 3.0, "data": "crlf"}\r',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    h, items, skipped = read_all(path)
    assert h is not None and h["source"] == "emperor"
    assert items == [(0.0, "good"), (2.0, "also good"), (3.0, "crlf")]
    assert skipped == {
        "blank": 2,
        "invalid_json": 1,
        "invalid_utf8": 1,
        "not_an_object": 1,
        "bad_t": 4,
        "bad_data": 2,
        "misplaced_header": 1,
    }


def test_gzip_capture_is_read(tmp_path):
    plain = tmp_path / "a.jsonl"
    with CaptureWriter(plain, "emperor", "ws://h/") as w:
        for i in range(100):
            w.write(f"frame {i} \U0001f3ce", i / 10)
    gz = tmp_path / "a.jsonl.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_all(gz) == read_all(plain)
    # the gzip format is detected by content, not by the file name
    renamed = tmp_path / "b.jsonl"
    shutil.copy(gz, renamed)
    assert read_all(renamed) == read_all(plain)


def test_truncated_gzip_is_tolerated(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    body = b"".join(
        json.dumps({"t": float(i), "data": f"frame {i} " + "x" * 500}).encode() + b"\n" for i in range(2000)
    )
    gz.write_bytes(gzip.compress(body)[: -4096])
    _, items, skipped = read_all(gz)
    assert skipped["truncated_gzip"] == 1
    assert 0 < len(items) < 2000
    assert items == [(float(i), f"frame {i} " + "x" * 500) for i in range(len(items))]


def test_cannot_append_to_gzip(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"t": 0.0, "data": "a"}\n'))
    with pytest.raises(ValueError):
        CaptureWriter(gz, "emperor", "ws://h/")


def test_empty_file_reads_as_nothing(tmp_path):
    path = tmp_path / "a.jsonl"
    path.touch()
    h, items, skipped = read_all(path)
    assert (h, items, dict(skipped)) == (None, [], {})


def test_reader_closes_file_when_exhausted_or_closed(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"t": 0.0, "data": "a"}\n{"t": 1.0, "data": "b"}\n')
    _, frames = read_capture(path)
    with frames:
        assert next(frames) == (0.0, "a")
    assert frames._fh is None
    assert list(frames) == []


def test_example_capture_reads_cleanly():
    h, items, skipped = read_all(EXAMPLE)
    assert h is None  # the shared example has no header line
    assert len(items) == 489
    assert not skipped
    ts = [t for t, _ in items]
    assert ts == sorted(ts)
    assert all(isinstance(json.loads(d)["EventType"], int) for _, d in items)


def test_redact_url():
    assert redact_url("wss://user:secret@x.example:8443/api/race-control?server=1&token=abc#frag") == (
        "wss://x.example:8443/api/race-control?server=1&token=***"
    )
    assert redact_url("ws://[::1]:9000/p") == "ws://[::1]:9000/p"
    assert redact_url("ws://h:notaport/") == "<unparseable url>"


def test_header_url_is_redacted(tmp_path):
    path = tmp_path / "a.jsonl"
    CaptureWriter(path, "bmi", "wss://u:p@h.example/?key=s3cret").close()
    h, _, _ = read_all(path)
    assert h["url"] == "wss://h.example/?key=***"
    assert b"s3cret" not in path.read_bytes() and b"u:p" not in path.read_bytes()


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.tuples(st.floats(0, 1e6), st.text()), max_size=20))
def test_round_trip_property(tmp_path_factory, frames):
    path = tmp_path_factory.mktemp("prop") / "a.jsonl"
    with CaptureWriter(path, "emperor", "ws://h/") as w:
        written = [w.write(d, t) for t, d in frames]
    _, items, skipped = read_all(path)
    assert not skipped
    assert [d for _, d in items] == [d for _, d in frames]
    assert [t for t, _ in items] == pytest.approx(written, abs=1e-6)
    assert all(b >= a for a, b in zip([t for t, _ in items], [t for t, _ in items][1:], strict=False))
    os.remove(path)
