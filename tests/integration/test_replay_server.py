"""Replay server and upstream client against each other over real loopback websockets.

Reactor-based tests use :class:`twisted.trial.unittest.TestCase` (pytest runs them; returned
Deferreds are awaited by trial) and wait on events with deadlines, never for fixed times. The
player's scheduling is also checked on a :class:`twisted.internet.task.Clock`, without sockets.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from livetiming.service.plugins.carobama.capture import CaptureWriter, read_capture
from livetiming.service.plugins.carobama.replay import (
    BATCH_FRAMES,
    ReplayServerFactory,
    content_site,
    load_replay_frames,
    parse_speed,
)
from livetiming.service.plugins.carobama.upstream import UpstreamConnection

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO.parent / "shared" / "examples" / "emperor-practice-v1.capture.jsonl"
if not EXAMPLE.exists():
    EXAMPLE = Path("/work/shared/examples/emperor-practice-v1.capture.jsonl")
LISTENING = re.compile(r"^carobama-replay listening on ws://127\.0\.0\.1:(\d+)/$")
DEADLINE = 30.0
BIG = 16 * 1024 * 1024 + 123


def example_frames() -> list[tuple[float, bytes]]:
    header, frames, skipped = load_replay_frames(EXAMPLE)
    assert skipped == {}
    return frames


class Recorder:
    """Collects what an UpstreamConnection reports and fires Deferreds when conditions hold."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, float]] = []
        self.statuses: list[dict] = []
        self._waiters: list[tuple[object, defer.Deferred]] = []

    def on_frame(self, text: str, t: float) -> None:
        self.frames.append((text, t))
        self._check()

    def on_status(self, status: dict) -> None:
        self.statuses.append(status)
        self._check()

    def states(self) -> list[str]:
        return [s["state"] for s in self.statuses]

    def until(self, predicate, timeout: float = DEADLINE) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if predicate():
            d.callback(None)
            return d
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    def _check(self) -> None:
        for item in list(self._waiters):
            predicate, d = item
            if not d.called and predicate():
                self._waiters.remove(item)
                d.callback(None)


class ServerEvents:
    """Hooks a ReplayServerFactory's connect/message callbacks and lets tests wait on them."""

    def __init__(self, factory: ReplayServerFactory) -> None:
        self.requests: list = []
        self.messages: list[tuple[object, bytes, bool]] = []
        self.recorder = Recorder()
        factory.on_client_connect = self._connect
        factory.on_client_message = self._message

    def _connect(self, request) -> None:
        self.requests.append(request)
        self.recorder._check()

    def _message(self, proto, payload: bytes, is_binary: bool) -> None:
        self.messages.append((proto, payload, is_binary))
        self.recorder._check()

    def until(self, predicate, timeout: float = DEADLINE) -> defer.Deferred:
        return self.recorder.until(predicate, timeout)


class LoopbackTestCase(unittest.TestCase):
    """Helpers that start servers and clients and clean them up whatever happens."""

    timeout = 120

    def serve(self, factory: ReplayServerFactory, port: int = 0):
        listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.addCleanup(self.shutdown_server, factory, listening)
        return listening

    @defer.inlineCallbacks
    def shutdown_server(self, factory, listening):
        yield defer.maybeDeferred(listening.stopListening)
        yield self.drop_all(factory)

    @defer.inlineCallbacks
    def drop_all(self, factory):
        """Abort every client of ``factory`` and wait until their connections are really gone."""
        closing = [p.is_closed for p in factory.connections]
        factory.drop_connections()
        yield defer.gatherResults(closing)
        # connectionLost runs one reactor turn after abortConnection
        while any(p.transport is not None and p.transport.connected for p in list(factory.connections)):
            yield deferLater(0)

    def client(self, url: str, recorder: Recorder, **kwargs) -> UpstreamConnection:
        kwargs.setdefault("initial_delay", 0.2)
        kwargs.setdefault("max_delay", 1.0)
        conn = UpstreamConnection(url, recorder.on_frame, recorder.on_status, **kwargs)
        self.addCleanup(conn.stop)
        conn.start()
        return conn


def deferLater(delay: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(delay, d.callback, None)
    return d


class ReplayOverLoopbackTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_every_frame_arrives_in_order(self):
        frames = example_frames()
        factory = ReplayServerFactory(frames, speed=math.inf)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/api/race-control", rec)
        yield rec.until(lambda: len(rec.frames) >= len(frames))
        assert [text.encode() for text, _ in rec.frames] == [data for _, data in frames]
        ts = [t for _, t in rec.frames]
        assert ts == sorted(ts) and 0.0 <= ts[0] < 5.0
        assert rec.states() == ["connecting", "connected"]

    @defer.inlineCallbacks
    def test_timed_playback_respects_offsets(self):
        frames = [(0.0, b"a"), (0.4, b"b"), (0.8, b"c")]
        factory = ReplayServerFactory(frames, speed=2.0)  # 0, 0.2 s, 0.4 s
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/", rec)
        yield rec.until(lambda: len(rec.frames) == 3)
        (_, t0), (_, t1), (_, t2) = rec.frames
        assert 0.15 <= t1 - t0 <= 0.35
        assert 0.35 <= t2 - t0 <= 0.6

    @defer.inlineCallbacks
    def test_client_reconnects_after_server_restart_on_same_port(self):
        frames = example_frames()
        factory = ReplayServerFactory(frames, speed=math.inf)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        port = listening.getHost().port
        rec = Recorder()
        conn = self.client(f"ws://127.0.0.1:{port}/api/race-control", rec)
        yield rec.until(lambda: len(rec.frames) >= len(frames))

        # the server dies: no more listening socket, every connection aborted
        yield defer.maybeDeferred(listening.stopListening)
        yield self.drop_all(factory)
        yield rec.until(lambda: rec.states().count("reconnecting") >= 1)
        # ... and its first reconnect attempt is refused while the server is down
        yield rec.until(lambda: rec.states().count("reconnecting") >= 2)
        assert "refused" in rec.statuses[-1]["reason"].lower()

        factory2 = ReplayServerFactory(frames, speed=math.inf)
        self.serve(factory2, port=port)
        yield rec.until(lambda: len(rec.frames) >= 2 * len(frames))
        assert [t.encode() for t, _ in rec.frames[len(frames) :]] == [d for _, d in frames]
        assert conn.connections_opened == 2
        times = [t for _, t in rec.frames]
        assert times == sorted(times)  # t keeps counting from the first connection
        assert rec.states()[-1] == "connected"

    @defer.inlineCallbacks
    def test_large_frame_and_unicode_pass(self):
        big = ("{\"EventType\":200,\"Message\":\"" + "\u00e9\U0001f3c1" * (BIG // 6) + "\"}").encode()
        assert len(big) > 16 * 1024 * 1024
        frames = [(0.0, b"small"), (0.0, big), (0.0, "after \u2028 \U00010348".encode())]
        factory = ReplayServerFactory(frames, speed=math.inf)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/", rec)
        yield rec.until(lambda: len(rec.frames) == 3)
        assert rec.frames[1][0].encode() == big
        assert rec.frames[2][0] == "after \u2028 \U00010348"

    @defer.inlineCallbacks
    def test_origin_and_host_headers_arrive_as_expected(self):
        factory = ReplayServerFactory([(0.0, b"x")], speed=math.inf)
        events = ServerEvents(factory)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/api/race-control?server=0", rec)
        yield rec.until(lambda: len(rec.frames) == 1)
        (request,) = events.requests
        assert request.headers["origin"] == f"http://127.0.0.1:{port}"
        assert request.headers["host"] == f"127.0.0.1:{port}"
        assert request.path == "/api/race-control"
        assert request.params == {"server": ["0"]}
        assert "sec-websocket-extensions" not in request.headers

    @defer.inlineCallbacks
    def test_cross_origin_is_refused_like_the_manager(self):
        factory = ReplayServerFactory([(0.0, b"x")], speed=math.inf)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        conn = self.client(f"ws://127.0.0.1:{port}/", rec, origin="https://elsewhere.example")
        yield rec.until(lambda: "reconnecting" in rec.states())
        assert "403" in rec.statuses[-1]["reason"]
        assert rec.frames == []
        yield conn.stop()

    @defer.inlineCallbacks
    def test_handshake_arrives_after_each_reconnect(self):
        factory = ReplayServerFactory([(0.0, b"{}")], speed=math.inf)
        events = ServerEvents(factory)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/", rec, handshake="START -1@venue")
        yield events.until(lambda: len(events.messages) == 1)
        yield rec.until(lambda: len(rec.frames) == 1)
        yield self.drop_all(factory)  # the connection breaks; the server stays up
        yield events.until(lambda: len(events.messages) == 2)
        assert [(m, b) for _, m, b in events.messages] == [(b"START -1@venue", False)] * 2
        assert events.messages[0][0] is not events.messages[1][0]  # one per connection
        yield rec.until(lambda: len(rec.frames) == 2)

    @defer.inlineCallbacks
    def test_silent_server_is_detected_stale_and_reconnected(self):
        factory = ReplayServerFactory([(0.0, b"only one")], speed=1.0)  # then silence
        port = self.serve(factory).getHost().port
        rec = Recorder()
        self.client(f"ws://127.0.0.1:{port}/", rec, stale_after=0.5)
        yield rec.until(lambda: len(rec.frames) == 2)  # replayed again on the new connection
        assert "stale" in rec.states()
        stale = next(s for s in rec.statuses if s["state"] == "stale")
        assert stale["reason"] == "stale: no frame for 0.5 s"

    @defer.inlineCallbacks
    def test_loop_replays_capture_again(self):
        factory = ReplayServerFactory([(0.0, b"a"), (0.0, b"b")], speed=math.inf, loop=True)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        conn = self.client(f"ws://127.0.0.1:{port}/", rec)
        yield rec.until(lambda: len(rec.frames) >= 7)
        yield conn.stop()
        assert [t for t, _ in rec.frames[:7]] == ["a", "b"] * 3 + ["a"]

    @defer.inlineCallbacks
    def test_stop_closes_cleanly_and_does_not_reconnect(self):
        factory = ReplayServerFactory([(0.0, b"a")], speed=math.inf)
        events = ServerEvents(factory)
        port = self.serve(factory).getHost().port
        rec = Recorder()
        conn = self.client(f"ws://127.0.0.1:{port}/", rec)
        yield rec.until(lambda: len(rec.frames) == 1)
        yield conn.stop()
        assert rec.states() == ["connecting", "connected", "stopped"]
        yield events.until(lambda: not factory.connections)
        assert len(events.requests) == 1


def self_signed_localhost() -> tuple[bytes, bytes]:
    """A throw-away key and certificate (PEM) for ``localhost`` with a subjectAltName."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class ReplayOverTlsTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_wss_with_origin_over_tls(self):
        from twisted.internet import ssl

        key_pem, cert_pem = self_signed_localhost()
        server_cert = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem)
        factory = ReplayServerFactory([(0.0, "secure \U0001f512".encode())], speed=math.inf)
        events = ServerEvents(factory)
        listening = reactor.listenSSL(0, factory, server_cert.options(), interface="127.0.0.1")
        self.addCleanup(self.shutdown_server, factory, listening)
        port = listening.getHost().port
        rec = Recorder()
        tls = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem))
        self.client(f"wss://localhost:{port}/api/race-control", rec, tls_options=tls)
        yield rec.until(lambda: len(rec.frames) == 1)
        assert rec.frames[0][0] == "secure \U0001f512"
        assert events.requests[0].headers["origin"] == f"https://localhost:{port}"


class ReplayContentTests(LoopbackTestCase):
    """``--content``: the manager's content folder over HTTP on the websocket's port."""

    @defer.inlineCallbacks
    def test_files_and_the_websocket_share_the_port(self):
        from twisted.web.client import Agent, readBody

        scratch = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, scratch)
        content = Path(scratch) / "content"
        (content / "tracks" / "ks_vallelunga" / "club").mkdir(parents=True)
        image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        (content / "tracks" / "ks_vallelunga" / "club" / "map.png").write_bytes(image)
        (content.parent / "secret.txt").write_text("not served")
        factory = ReplayServerFactory(example_frames(), speed=math.inf)
        listening = reactor.listenTCP(0, content_site(factory, content), interface="127.0.0.1")
        self.addCleanup(self.shutdown_server, factory, listening)
        base = f"http://127.0.0.1:{listening.getHost().port}"
        agent = Agent(reactor)

        def get(path: str) -> defer.Deferred:
            request = agent.request(b"GET", (base + path).encode("ascii"))
            return request.addCallback(lambda r: readBody(r).addCallback(lambda body: (r, body)))

        response, body = yield get("/content/tracks/ks_vallelunga/club/map.png")
        assert response.code == 200 and body == image
        assert response.headers.getRawHeaders(b"content-type") == [b"image/png"]
        for missing in ("/", "/content/tracks/", "/content/tracks/nowhere/map.png", "/map.png",
                        "/content/../secret.txt", "/content/%2e%2e/secret.txt"):
            response, body = yield get(missing)
            assert response.code == 404, (missing, response.code)
            assert b"not served" not in body

        # WebSocket upgrades on any path still play the whole capture, flow-controlled.
        rec = Recorder()
        conn = self.client(base.replace("http", "ws") + "/api/race-control", rec)
        yield rec.until(lambda: len(rec.frames) >= 489)
        assert [text.encode() for text, _ in rec.frames] == [data for _, data in example_frames()]
        yield conn.stop()


class ReplaySubprocessTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_console_script_serves_the_capture(self):
        proc = _ReplayProcess()
        argv = [
            sys.executable, "-m", "livetiming.service.plugins.carobama.replay",
            str(EXAMPLE), "--port", "0", "--speed", "inf",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        transport = reactor.spawnProcess(proc, sys.executable, argv, env=env)

        @defer.inlineCallbacks
        def kill():
            if not proc.ended.called:
                transport.signalProcess("TERM")
            yield proc.ended

        self.addCleanup(kill)
        line = yield proc.first_line.addTimeout(DEADLINE, reactor)
        assert line is not None, proc.stderr
        match = LISTENING.match(line)
        assert match, line
        port = int(match.group(1))

        rec = Recorder()
        conn = self.client(f"ws://127.0.0.1:{port}/api/race-control", rec)
        yield rec.until(lambda: len(rec.frames) >= 489)
        _, expected = read_capture(EXAMPLE)
        assert [t for t, _ in rec.frames] == [d for _, d in expected]
        yield conn.stop()
        transport.signalProcess("TERM")
        yield proc.ended
        assert proc.stdout.decode().splitlines() == [line]  # exactly one line on stdout
        assert "489 frames" in proc.stderr.decode()

    @defer.inlineCallbacks
    def test_missing_capture_exits_with_error(self):
        proc = _ReplayProcess()
        argv = [sys.executable, "-m", "livetiming.service.plugins.carobama.replay", "/nonexistent.jsonl"]
        reactor.spawnProcess(proc, sys.executable, argv, env=dict(os.environ))
        reason = yield proc.ended.addTimeout(DEADLINE, reactor)
        assert reason.exitCode == 2
        assert proc.stdout == b""
        assert b"cannot read" in proc.stderr


class _ReplayProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.first_line: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        if not self.first_line.called and b"\n" in self.stdout:
            self.first_line.callback(self.stdout.split(b"\n", 1)[0].decode())

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason) -> None:
        if not self.first_line.called:
            self.first_line.callback(None)  # exited before printing anything
        self.ended.callback(reason.value)  # ProcessDone / ProcessTerminated, as a value


# ------------------------------------------------------------------------------------------------
# The player's schedule on a fake clock (no sockets).

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def parse_server_frames(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        n = data[i + 1] & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        out.append(data[i : i + n])
        i += n
    return out


def masked_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    body = bytes(c ^ mask[k % 4] for k, c in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class LenientTransport(StringTransport):
    """StringTransport that, like real TCP/TLS transports, allows unregistering no producer."""

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None


def run_one(clock: Clock) -> None:
    """Run only the earliest due call of ``clock`` (Clock.advance would also run those it adds)."""
    call = clock.getDelayedCalls()[0]
    assert call.getTime() <= clock.seconds()
    clock.calls.remove(call)
    call.called = 1
    call.func(*call.args, **call.kw)


class FakeClient:
    """Drives one ReplayServerProtocol over a StringTransport through the opening handshake."""

    def __init__(
        self, factory: ReplayServerFactory, origin: str | None = None, host: str = "127.0.0.1:9"
    ) -> None:
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = LenientTransport()
        self.proto.makeConnection(self.transport)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET /any/path?x=1 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Origin: {origin}\r\n" if origin else "")
            + "\r\n"
        )
        self.proto.dataReceived(request.encode())
        head, _, rest = self.transport.value().partition(b"\r\n\r\n")
        self.response = head.decode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.accepted = self.response.startswith("HTTP/1.1 101") and accept in self.response
        self.transport.clear()
        self.received: list[bytes] = parse_server_frames(rest) if self.accepted else []

    def poll(self) -> list[bytes]:
        self.received += parse_server_frames(self.transport.value())
        self.transport.clear()
        return self.received


class PlayerScheduleTests(unittest.SynchronousTestCase):
    def test_frames_follow_offsets_scaled_by_speed(self):
        clock = Clock()
        frames = [(0.0, b"a"), (1.0, b"b"), (3.0, "c\U0001f3c1"), (2.0, b"d")]
        factory = ReplayServerFactory(frames, 2.0, False, clock)
        client = FakeClient(factory)
        assert client.accepted
        assert client.poll() == []
        clock.advance(0)
        assert client.poll() == [b"a"]
        clock.advance(0.49)
        assert client.poll() == [b"a"]
        clock.advance(0.01)
        assert client.poll() == [b"a", b"b"]
        clock.advance(1.0)
        # "d" has an earlier t than "c": it follows right after it
        assert client.poll() == [b"a", b"b", "c\U0001f3c1".encode(), b"d"]
        assert clock.getDelayedCalls() == []  # no loop: idle and silent

    def test_each_connection_starts_from_the_beginning_and_shares_frames(self):
        clock = Clock()
        frames = [(0.0, b"a"), (10.0, b"b")]
        factory = ReplayServerFactory(frames, 1.0, False, clock)
        assert factory.frames is frames  # shared, not copied
        first = FakeClient(factory)
        clock.advance(5)
        second = FakeClient(factory)
        clock.advance(0)
        assert first.poll() == [b"a"] and second.poll() == [b"a"]
        clock.advance(5)
        assert first.poll() == [b"a", b"b"] and second.poll() == [b"a"]
        clock.advance(5)
        assert second.poll() == [b"a", b"b"]

    def test_start_at_skips_earlier_frames(self):
        clock = Clock()
        frames = [(0.0, b"a"), (5.0, b"b"), (7.0, b"c")]
        factory = ReplayServerFactory(frames, 1.0, False, clock, start_at=5.0)
        client = FakeClient(factory)
        clock.advance(0)
        assert client.poll() == [b"b"]
        clock.advance(2)
        assert client.poll() == [b"b", b"c"]

    def test_loop_restarts_after_a_gap(self):
        clock = Clock()
        factory = ReplayServerFactory([(0.0, b"a"), (2.0, b"b")], 1.0, True, clock)
        client = FakeClient(factory)
        clock.advance(0)
        clock.advance(2)
        assert client.poll() == [b"a", b"b"]
        clock.advance(0.99)
        assert client.poll() == [b"a", b"b"]
        clock.advance(0.01)
        assert client.poll() == [b"a", b"b", b"a"]
        clock.advance(2)
        assert client.poll() == [b"a", b"b", b"a", b"b"]

    def test_as_fast_as_possible_yields_between_batches(self):
        clock = Clock()
        frames = [(float(i), str(i).encode()) for i in range(BATCH_FRAMES * 2 + 5)]
        factory = ReplayServerFactory(frames, math.inf, False, clock)
        client = FakeClient(factory)
        run_one(clock)
        assert len(client.poll()) == BATCH_FRAMES
        assert [c.getTime() for c in clock.getDelayedCalls()] == [0]  # the rest comes next turn
        run_one(clock)
        assert len(client.poll()) == 2 * BATCH_FRAMES
        run_one(clock)
        assert client.poll() == [d for _, d in frames]
        assert clock.getDelayedCalls() == []

    def test_paused_producer_sends_nothing_and_resumes_on_schedule(self):
        clock = Clock()
        factory = ReplayServerFactory([(0.0, b"a"), (1.0, b"b"), (2.0, b"c")], 1.0, False, clock)
        client = FakeClient(factory)
        player = client.proto.player
        assert client.transport.producer is player  # flow control is wired up
        clock.advance(0)
        player.pauseProducing()
        clock.advance(5)
        assert client.poll() == [b"a"]
        player.resumeProducing()
        clock.advance(0)
        assert client.poll() == [b"a"]  # the 5 s pause shifted the schedule
        clock.advance(1)
        assert client.poll() == [b"a", b"b"]

    def test_client_messages_are_ignored(self):
        clock = Clock()
        factory = ReplayServerFactory([(0.0, b"a")], 1.0, False, clock)
        got = []
        factory.on_client_message = lambda proto, payload, is_binary: got.append(payload)
        client = FakeClient(factory)
        client.proto.dataReceived(masked_client_frame(b"START -1@venue"))
        clock.advance(0)
        assert got == [b"START -1@venue"]
        assert client.poll() == [b"a"]

    def test_same_origin_rule(self):
        factory = ReplayServerFactory([(0.0, b"a")], 1.0, False, Clock())
        assert FakeClient(factory, origin=None).accepted
        assert FakeClient(factory, origin="http://127.0.0.1:9").accepted
        assert FakeClient(factory, origin="HTTPS://127.0.0.1:9").accepted
        refused = FakeClient(factory, origin="http://other.example")
        assert not refused.accepted and refused.response.startswith("HTTP/1.1 403")
        assert not FakeClient(factory, origin="null").accepted
        lax = ReplayServerFactory([(0.0, b"a")], 1.0, False, Clock(), same_origin=False)
        assert FakeClient(lax, origin="http://other.example").accepted

    def test_empty_capture_and_start_beyond_end_send_nothing(self):
        for factory in (
            ReplayServerFactory([], math.inf, True, Clock()),
            ReplayServerFactory([(0.0, b"a")], math.inf, True, Clock(), start_at=10),
        ):
            client = FakeClient(factory)
            factory.clock.advance(0)
            assert client.poll() == []
            assert factory.clock.getDelayedCalls() == []

    def test_speed_parsing(self):
        assert parse_speed("0") == math.inf
        assert parse_speed("inf") == math.inf
        assert parse_speed("2.5") == 2.5
        for bad in ("-1", "nan", "fast"):
            with self.assertRaises(argparse.ArgumentTypeError):
                parse_speed(bad)

    def test_load_replay_frames_from_a_written_capture(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, "bmi.capture.jsonl")
        with CaptureWriter(path, "bmi", "ws://k.example/") as w:
            w.write('{"N":"[HEAT] 33 - Carrera XL","D":[{"N":"leiño"}]}', 0.0)
            w.write("{}", 1.0)
        header, frames, skipped = load_replay_frames(path)
        assert header["source"] == "bmi" and skipped == {}
        assert frames == [(0.0, '{"N":"[HEAT] 33 - Carrera XL","D":[{"N":"leiño"}]}'.encode()), (1.0, b"{}")]
        assert json.loads(frames[0][1])["D"][0]["N"] == "leiño"
