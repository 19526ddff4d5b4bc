"""A timing client that notes when each published state arrives (for the latency benchmark).

    python bench/listener.py standalone ws://127.0.0.1:PORT/ --out FILE
    python bench/listener.py wamp ws://127.0.0.1:PORT/ws --uuid UUID --out FILE

It connects like a Timing71 client (the standalone server's legacy protocol, or a WAMP
subscriber of ``livetiming.service.<uuid>`` through the router, with ``get_retained``), and
writes one JSON line ``{"t": unix_time, "payload": "<LZString state>"}`` per state message, the
arrival time taken before anything else is done with it. Decoding is left to the benchmark, so
the client stays cheap. It prints ``listening`` once connected (subscribed) and runs until
killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO, Any

STATE_CLASS = 8  # SERVICE_DATA_COMPRESSED


def _writer(out: IO[str]):
    """A callback writing each state message with its arrival time (now, unless given)."""
    def write(message: Any, arrived: float | None = None) -> None:
        arrived = time.time() if arrived is None else arrived
        if isinstance(message, dict) and message.get("msgClass") == STATE_CLASS:
            out.write(json.dumps({"t": arrived, "payload": message["payload"]}) + "\n")
            out.flush()
    return write


def run_standalone(url: str, out: IO[str]) -> None:
    """Read the standalone server's ``[channel, message]`` frames."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
    from twisted.internet import reactor

    write = _writer(out)

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:
            print("listening", flush=True)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            arrived = time.time()
            channel, message = json.loads(payload)
            if channel.startswith("livetiming.service."):
                write(message, arrived)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            if reactor.running:
                reactor.stop()

    factory = WebSocketClientFactory(url)
    factory.protocol = Client
    connectWS(factory)
    reactor.run()


def run_wamp(url: str, uuid: str, out: IO[str]) -> None:
    """Subscribe to the service's state topic through the router."""
    from autobahn.twisted.component import Component
    from autobahn.wamp.types import SubscribeOptions
    from twisted.internet import defer

    component = Component(transports=[{"url": url, "max_retries": 0}], realm="timing")
    write = _writer(out)

    @component.on_join
    @defer.inlineCallbacks
    def joined(session: Any, details: Any) -> Any:
        try:
            yield session.subscribe(write, f"livetiming.service.{uuid}",
                                    options=SubscribeOptions(get_retained=True))
        except Exception as error:  # refused: say so and stop
            print(f"subscribe failed: {error}", file=sys.stderr, flush=True)
            yield session.leave()
            return
        print("listening", flush=True)

    from twisted.internet import reactor

    def failed(failure: Any) -> None:
        print(f"WAMP connection failed: {failure.value}", file=sys.stderr, flush=True)
        if reactor.running:
            reactor.stop()

    component.start(reactor).addErrback(failed)
    reactor.run()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and listen until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=("standalone", "wamp"))
    parser.add_argument("url")
    parser.add_argument("--uuid", help="wamp: the service's uuid")
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as out:
        if args.mode == "standalone":
            run_standalone(args.url, out)
        else:
            if not args.uuid:
                parser.error("wamp mode needs --uuid")
            run_wamp(args.url, args.uuid, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
