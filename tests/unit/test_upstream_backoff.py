"""UpstreamConnection state machine on a fake reactor and clock: backoff, staleness, handshake.

The real autobahn client protocol runs over an in-memory transport; the test plays the server
side of the opening handshake and writes raw websocket frames, so nothing here touches a socket
or sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python.failure import Failure

from livetiming.service.plugins.carobama.upstream import (
    UpstreamConnection,
    parse_upstream_url,
)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
URL = "ws://timing.example:8080/api/race-control?server=0"


class FixedRandom:
    """rng stub: always returns the same value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class ListObserver:
    """Collects log events."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked, final server->client frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def parse_client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode masked client->server frames."""
    out = []
    i = 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        i += 2
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        mask = data[i : i + 4]
        i += 4
        payload = bytes(c ^ mask[k % 4] for k, c in enumerate(data[i : i + n]))
        i += n
        out.append((b0 & 0x0F, payload))
    return out


class LenientTransport(StringTransport):
    """StringTransport that, like real TCP/TLS transports, allows unregistering no producer."""

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None


class Harness:
    """An UpstreamConnection wired to a MemoryReactorClock, plus a scripted server side."""

    def __init__(self, url: str = URL, rng_value: float = 0.0, **kwargs) -> None:
        self.reactor = MemoryReactorClock()
        self.frames: list[tuple[str, float]] = []
        self.statuses: list[dict] = []
        self.observer = ListObserver()
        kwargs.setdefault("rng", FixedRandom(rng_value))
        self.conn = UpstreamConnection(
            url,
            lambda text, t: self.frames.append((text, t)),
            self.statuses.append,
            clock=self.reactor,
            reactor=self.reactor,
            log=Logger(namespace="test.upstream", observer=self.observer),
            **kwargs,
        )
        self.protos: list = []

    # --- client side bookkeeping
    @property
    def attempts(self) -> list:
        return self.reactor.tcpClients + self.reactor.sslClients

    def factory(self, index: int = -1):
        return self.attempts[index][2]

    def states(self) -> list[str]:
        return [s["state"] for s in self.statuses]

    # --- scripted server
    def accept(self, status: str = "101 Switching Protocols"):
        """TCP-connect the latest attempt and answer its opening handshake."""
        factory = self.factory()
        proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 8080))
        transport = LenientTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 8080))
        proto.makeConnection(transport)
        request = transport.value()
        transport.clear()
        headers = {}
        for line in request.split(b"\r\n")[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode()] = v.strip().decode()
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        response = (
            f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        proto.dataReceived(response.encode())
        self.protos.append(proto)
        return proto, transport, request, headers

    def send(self, proto, text: str | bytes, opcode: int = 0x1) -> None:
        payload = text.encode("utf-8") if isinstance(text, str) else text
        proto.dataReceived(server_frame(payload, opcode))

    def lose(self, proto, factory=None, reason: Exception | None = None) -> None:
        failure = Failure(reason or ConnectionLost("peer went away"))
        proto.connectionLost(failure)
        (factory or proto.factory).clientConnectionLost(None, failure)

    def refuse(self, index: int = -1) -> None:
        self.factory(index).clientConnectionFailed(None, Failure(ConnectionRefusedError()))


def retry_delay(h: Harness) -> float:
    """Delay of the single pending reconnect call."""
    calls = [c for c in h.reactor.getDelayedCalls() if c.func == h.conn._connect]
    assert len(calls) == 1
    return calls[0].getTime() - h.reactor.seconds()


# ------------------------------------------------------------------------------------------------


def test_backoff_sequence_doubles_to_cap_without_jitter():
    h = Harness(rng_value=0.0)
    h.conn.start()
    delays = []
    for n in range(9):
        assert len(h.attempts) == n + 1
        h.refuse()
        d = retry_delay(h)
        delays.append(d)
        h.reactor.advance(d)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert [s["attempt"] for s in h.statuses if s["state"] == "connecting"] == list(range(1, 11))


def test_backoff_jitter_stays_within_bounds():
    h = Harness(rng=random.Random(1234))
    h.conn.start()
    bases = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30]
    seen = []
    for base in bases:
        h.refuse()
        d = retry_delay(h)
        assert base * 0.75 <= d <= base
        seen.append(d)
        h.reactor.advance(d)
    assert len({round(d / b, 6) for d, b in zip(seen, bases, strict=True)}) > 1  # actually jittered


def test_backoff_delay_formula_extremes():
    h = Harness(rng_value=0.999999)
    assert h.conn.backoff_delay(1) == pytest.approx(0.75, abs=1e-5)
    assert h.conn.backoff_delay(6) == pytest.approx(22.5, abs=1e-4)
    assert h.conn.backoff_delay(10_000) <= 30.0
    h0 = Harness(rng_value=0.0, initial_delay=0.5, max_delay=4.0, jitter=0.0)
    assert [h0.conn.backoff_delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]


def test_backoff_resets_after_good_connection():
    h = Harness()
    h.conn.start()
    for _ in range(4):  # 1 + 2 + 4 + 8
        h.refuse()
        h.reactor.advance(retry_delay(h))
    proto, *_ = h.accept()
    h.send(proto, '{"EventType":200}')
    h.lose(proto)
    assert retry_delay(h) == 1.0
    assert h.statuses[-1]["attempt"] == 1
    h.reactor.advance(1.0)
    h.refuse()
    assert retry_delay(h) == 2.0


def test_open_without_data_does_not_reset_backoff():
    h = Harness()
    h.conn.start()
    h.refuse()
    h.reactor.advance(retry_delay(h))  # 1
    proto, *_ = h.accept()  # opens, then closes before any frame
    h.lose(proto, reason=ConnectionDone())
    assert retry_delay(h) == 2.0


def test_frames_delivered_with_time_since_first_connection():
    h = Harness()
    h.reactor.advance(500.0)
    h.conn.start()
    h.reactor.advance(0.25)
    proto, *_ = h.accept()
    h.send(proto, "a")
    h.reactor.advance(1.5)
    h.send(proto, "b \U0001f3c1")
    h.lose(proto)
    h.reactor.advance(retry_delay(h))
    proto2, *_ = h.accept()
    h.reactor.advance(0.5)
    h.send(proto2, "c")
    assert h.frames == [("a", 0.0), ("b \U0001f3c1", 1.5), ("c", 3.0)]
    assert h.conn.status["last_frame_at"] == 503.25
    assert h.conn.frames_received == 3


def test_binary_and_invalid_utf8_frames_decoded_with_replacement():
    h = Harness()
    h.conn.start()
    proto, *_ = h.accept()
    h.send(proto, b"bin \xff ok", opcode=0x2)
    h.send(proto, b"text \xc3( bad", opcode=0x1)
    h.send(proto, b"")
    assert [f for f, _ in h.frames] == ["bin \ufffd ok", "text \ufffd( bad", ""]
    assert h.conn.state == "connected"


def test_large_frame_accepted():
    h = Harness()
    h.conn.start()
    proto, *_ = h.accept()
    big = "x" * (17 * 1024 * 1024)
    h.send(proto, big)
    assert len(h.frames) == 1 and h.frames[0][0] == big
    assert h.conn.state == "connected"


def test_stale_connection_is_dropped_and_reconnected():
    h = Harness(stale_after=30.0)
    h.conn.start()
    proto, transport, *_ = h.accept()
    h.send(proto, "a")
    for _ in range(5):  # frames keep it alive well past stale_after in total
        h.reactor.advance(20.0)
        h.send(proto, "x")
    assert h.conn.state == "connected"
    h.reactor.advance(29.9)
    assert h.conn.state == "connected"
    h.reactor.advance(0.2)
    assert h.states()[-2:] == ["stale", "reconnecting"]
    assert h.statuses[-2]["reason"] == "stale: no frame for 30 s"
    assert transport.disconnecting  # aborted
    assert retry_delay(h) == 1.0  # it had delivered data: backoff was reset
    # the dropped connection's late callbacks are ignored
    h.send(proto, "late")
    h.lose(proto)
    assert [f for f, _ in h.frames].count("late") == 0
    h.reactor.advance(1.0)
    assert len(h.attempts) == 2
    assert h.statuses[-1]["state"] == "connecting"


def test_connected_but_silent_is_stale_and_backs_off():
    h = Harness(stale_after=10.0)
    h.conn.start()
    h.accept()
    h.reactor.advance(10.0)
    assert "stale" in h.states()
    assert retry_delay(h) == 1.0
    h.reactor.advance(1.0)
    h.accept()
    h.reactor.advance(10.0)
    assert retry_delay(h) == 2.0  # never delivered data: no reset


def test_hung_connect_is_bounded_by_watchdog():
    h = Harness(stale_after=15.0)
    h.conn.start()
    h.reactor.advance(15.0)
    assert h.statuses[-2]["state"] == "stale"
    assert h.statuses[-2]["reason"] == "stale: no connection for 15 s"
    assert h.reactor.connectors[0]._disconnected
    h.reactor.advance(retry_delay(h))
    assert len(h.attempts) == 2


def test_server_pings_do_not_count_as_data_but_are_answered():
    h = Harness(stale_after=30.0)
    h.conn.start()
    proto, transport, *_ = h.accept()
    h.send(proto, "a")
    for _ in range(3):
        h.reactor.advance(9.0)
        transport.clear()
        h.send(proto, b"ping!", opcode=0x9)
        assert parse_client_frames(transport.value()) == [(0xA, b"ping!")]  # the pong
    h.reactor.advance(3.0)  # 30 s after the last data frame
    assert h.states()[-2:] == ["stale", "reconnecting"]
    assert len(h.frames) == 1


def test_handshake_sent_after_each_connect():
    h = Harness(handshake="START -1@venue")
    h.conn.start()
    proto, transport, *_ = h.accept()
    assert parse_client_frames(transport.value()) == [(0x1, b"START -1@venue")]
    h.send(proto, "{}")
    h.lose(proto)
    h.reactor.advance(retry_delay(h))
    proto2, transport2, *_ = h.accept()
    assert parse_client_frames(transport2.value()) == [(0x1, b"START -1@venue")]


def test_no_handshake_means_client_sends_nothing():
    h = Harness()
    h.conn.start()
    proto, transport, *_ = h.accept()
    h.send(proto, "a")
    assert transport.value() == b""


def test_request_headers_origin_host_and_no_deflate():
    h = Harness()
    h.conn.start()
    host, port, *_ = h.attempts[0]
    assert (host, port) == ("timing.example", 8080)
    _, _, request, headers = h.accept()
    assert request.startswith(b"GET /api/race-control?server=0 HTTP/1.1\r\n")
    assert headers["host"] == "timing.example:8080"
    assert headers["origin"] == "http://timing.example:8080"
    assert "sec-websocket-extensions" not in headers
    assert "sec-websocket-protocol" not in headers


def test_wss_default_port_is_browser_style_and_uses_tls():
    h = Harness(url="wss://Name.EmperorServers.example/api/race-control", tls_options=object())
    h.conn.start()
    assert h.reactor.tcpClients == []
    host, port, _factory, tls, *_ = h.reactor.sslClients[0]
    assert (host, port) == ("name.emperorservers.example", 443)
    _, _, _, headers = h.accept()
    assert headers["host"] == "name.emperorservers.example"
    assert headers["origin"] == "https://name.emperorservers.example"


def test_origin_override_and_suppression():
    h = Harness(origin="https://pitwall.example")
    h.conn.start()
    assert h.accept()[3]["origin"] == "https://pitwall.example"
    h2 = Harness(origin="")
    h2.conn.start()
    assert "origin" not in h2.accept()[3]


def test_userinfo_becomes_basic_auth_and_is_never_logged():
    h = Harness(url="ws://bob:s3cret@timing.example/api/race-control?token=tok123&server=1")
    h.conn.start()
    _, _, request, headers = h.accept()
    assert headers["authorization"] == "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert b"token=tok123" in request  # the real query is sent
    h.refuse()
    text = "\n".join(h.observer.lines()) + repr(h.statuses)
    assert "s3cret" not in text and "tok123" not in text and "bob" not in text
    assert "ws://timing.example/api/race-control?token=***&server=1" in text


def test_status_shape_and_sequence():
    h = Harness()
    h.reactor.advance(10.0)
    h.conn.start()
    proto, *_ = h.accept()
    h.reactor.advance(2.0)
    h.send(proto, "a")
    h.reactor.advance(1.0)
    h.lose(proto)
    assert h.states() == ["connecting", "connected", "reconnecting"]
    for s in h.statuses:
        assert set(s) == {"state", "since", "last_frame_at", "attempt", "reason"}
    assert h.statuses[0] == {
        "state": "connecting",
        "since": 10.0,
        "last_frame_at": None,
        "attempt": 1,
        "reason": "start",
    }
    assert h.statuses[1]["since"] == 10.0
    last = h.statuses[2]
    assert last["since"] == 13.0 and last["last_frame_at"] == 12.0 and last["attempt"] == 1
    assert last["reason"].startswith("connection lost: ") and "peer went away" in last["reason"]


def test_server_close_frame_and_http_refusal_reasons():
    h = Harness()
    h.conn.start()
    proto, *_ = h.accept()
    proto.dataReceived(server_frame(struct.pack("!H", 1001) + b"bye", opcode=0x8))
    h.lose(proto, reason=ConnectionDone())
    assert h.statuses[-1]["reason"] == "connection lost: server closed (code=1001, reason='bye')"
    h.reactor.advance(retry_delay(h))
    proto, *_ = h.accept(status="403 Forbidden")
    h.lose(proto, reason=ConnectionDone())
    assert "403" in h.statuses[-1]["reason"]
    assert retry_delay(h) == 2.0


def test_one_log_line_per_connect_drop_and_reconnect():
    h = Harness()
    h.conn.start()
    h.refuse()
    h.reactor.advance(retry_delay(h))
    proto, *_ = h.accept()
    h.send(proto, "x")
    h.lose(proto)
    h.conn.stop()
    kinds = [e.get("upstream_event") for e in h.observer.events]
    assert kinds == ["start", "dropped", "connected", "dropped", "stop"]
    for e in h.observer.events:
        assert e["log_level"] == LogLevel.info
        assert "\n" not in formatEvent(e)
    dropped = h.observer.events[1]
    assert dropped["delay"] == 1.0 and dropped["attempt"] == 2
    assert "reconnecting in 1.00 s (attempt 2)" in formatEvent(dropped)


def test_on_frame_exception_is_logged_and_connection_survives():
    h = Harness()

    def boom(text, t):
        raise RuntimeError("consumer bug")

    h.conn._on_frame = boom
    h.conn.start()
    proto, *_ = h.accept()
    h.send(proto, "a")
    h.send(proto, "b")
    assert h.conn.state == "connected"
    assert sum(1 for e in h.observer.events if e.get("upstream_event") == "callback_error") == 2


def test_stop_cancels_pending_reconnect():
    h = Harness()
    h.conn.start()
    h.refuse()
    assert h.conn.state == "reconnecting"
    d = h.conn.stop()
    assert d.called
    assert h.states()[-1] == "stopped"
    assert h.reactor.getDelayedCalls() == []
    h.reactor.advance(100)
    assert len(h.attempts) == 1


def test_stop_closes_open_connection_cleanly():
    h = Harness()
    h.conn.start()
    proto, transport, *_ = h.accept()
    h.send(proto, "a")
    d = h.conn.stop()
    assert not d.called
    assert parse_client_frames(transport.value())[0][0] == 0x8  # a Close frame
    # the server answers the close and drops the TCP connection
    proto.dataReceived(server_frame(struct.pack("!H", 1000), opcode=0x8))
    h.lose(proto, reason=ConnectionDone())
    assert d.called
    assert h.states()[-1] == "stopped"
    assert h.reactor.getDelayedCalls() == []
    h.reactor.advance(100)
    assert len(h.attempts) == 1


def test_stop_while_connecting_and_restart():
    h = Harness()
    h.conn.start()
    d = h.conn.stop()
    assert h.reactor.connectors[0]._disconnected
    h.refuse()  # the connector reports the aborted attempt
    assert d.called
    assert h.states() == ["connecting", "stopped"]
    h.conn.start()
    assert len(h.attempts) == 2
    assert h.states()[-1] == "connecting"


def test_start_twice_is_noop_and_stop_when_idle_is_noop():
    h = Harness()
    assert h.conn.stop().called
    h.conn.start()
    h.conn.start()
    assert len(h.attempts) == 1


def test_invalid_urls_rejected_without_leaking_secrets():
    for bad in ("http://h/", "ws:///nohost", "wss://u:pw@h/#frag", "tcp://u:pw@h"):
        with pytest.raises(ValueError) as info:
            parse_upstream_url(bad)
        assert "pw" not in str(info.value)


def test_ipv6_target():
    t = parse_upstream_url("ws://[::1]:9000/x")
    assert (t.host, t.port, t.host_header, t.origin) == ("::1", 9000, "[::1]:9000", "http://[::1]:9000")


def test_stop_when_peer_never_answers_close_hangs_up_after_timeout():
    h = Harness()
    h.conn.start()
    proto, transport, *_ = h.accept()
    h.send(proto, "a")
    d = h.conn.stop()
    again = h.conn.stop()  # a second stop waits for the same close
    assert not d.called and not again.called
    h.reactor.advance(h.conn.close_timeout - 0.01)
    assert not transport.disconnecting
    h.reactor.advance(0.01)
    assert transport.disconnecting  # aborted: the manager never reads our Close
    h.lose(proto)
    assert d.called and again.called
    assert h.reactor.getDelayedCalls() == []


@pytest.mark.parametrize("when", ["connecting", "connected", "reconnecting", "stale"])
def test_stop_from_inside_on_status_leaves_nothing_scheduled(when):
    h = Harness(stale_after=5.0)
    stopped = []

    def on_status(status):
        h.statuses.append(status)
        if status["state"] == when and not stopped:
            stopped.append(h.conn.stop())

    h.conn._on_status = on_status
    h.conn.start()
    if when != "connecting":
        proto, *_ = h.accept()
        if when == "reconnecting":
            h.lose(proto)
        elif when == "stale":
            h.reactor.advance(5.0)
    assert stopped and h.conn.state == "stopped"
    assert h.states()[-1] == "stopped"
    assert [c for c in h.reactor.getDelayedCalls() if c.func != h.conn._hang_up] == []
    h.reactor.advance(100)
    assert len(h.attempts) == (0 if when == "connecting" else 1)  # stopped before connecting


def test_synchronous_connect_error_is_retried_not_fatal():
    h = Harness()
    calls = []

    def broken_connect(*args, **kwargs):
        calls.append(args)
        raise OSError("no route")

    h.reactor.connectTCP = broken_connect
    h.conn.start()
    assert h.states() == ["connecting", "reconnecting"]
    assert h.statuses[-1]["reason"] == "connect failed: OSError: no route"
    h.reactor.advance(retry_delay(h))
    assert len(calls) == 2
