"""A one-shot WAMP client for tests, run as a subprocess: connect, do one thing, print JSON, exit.

    python -m tests.support.wamp_probe URL subscribe TOPIC [--get-retained] [--count N]
    python -m tests.support.wamp_probe URL call PROCEDURE [JSON]   (JSON: a list of arguments
                                                              or {"args": [...], "kwargs": {...}})
    python -m tests.support.wamp_probe URL publish TOPIC JSON [--authid A --secret S]
    python -m tests.support.wamp_probe URL register PROCEDURE [--authid A --secret S]

Each received event or result is printed as one JSON line ``{"event": ...}`` /
``{"result": ...}``; failures as ``{"error": "<wamp error uri>"}``. Exits 0 on
success, 1 on failure, 3 on the deadline.
"""

from __future__ import annotations

import argparse
import json
import sys

from autobahn.twisted.component import Component
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet import defer, reactor, task


def emit(**record):
    print(json.dumps(record), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("action", choices=("subscribe", "call", "publish", "register"))
    parser.add_argument("target")
    parser.add_argument("payload", nargs="?")
    parser.add_argument("--get-retained", action="store_true")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20)
    parser.add_argument("--authid")
    parser.add_argument("--secret")
    args = parser.parse_args(argv)

    authentication = {}
    if args.secret:
        authentication = {"wampcra": {"authid": args.authid or "services", "secret": args.secret}}
    component = Component(
        transports=[{"url": args.url, "max_retries": 0}], realm="timing",
        authentication=authentication,
    )
    status = {"code": 3}

    def finish(code):
        if status.get("done"):
            return
        status["done"] = True
        status["code"] = code
        if reactor.running:
            reactor.stop()

    @component.on_join
    @defer.inlineCallbacks
    def joined(session, details):
        try:
            if args.action == "call":
                call_args = json.loads(args.payload) if args.payload else []
                if isinstance(call_args, dict):
                    result = yield session.call(args.target, *call_args.get("args", []),
                                                **call_args.get("kwargs", {}))
                else:
                    result = yield session.call(args.target, *call_args)
                emit(result=result)
                finish(0)
            elif args.action == "publish":
                yield session.publish(args.target, json.loads(args.payload or "null"),
                                      options=PublishOptions(acknowledge=True))
                emit(result="published")
                finish(0)
            elif args.action == "register":
                yield session.register(lambda *a, **k: "probe", args.target)
                emit(result="registered")
                finish(0)
            else:
                received = []

                def on_event(*event_args, **kwargs):
                    received.append(event_args[0] if event_args else None)
                    emit(event=received[-1])
                    if len(received) >= args.count:
                        finish(0)

                yield session.subscribe(on_event, args.target,
                                        options=SubscribeOptions(get_retained=args.get_retained))
                emit(subscribed=args.target)
        except ApplicationError as error:
            emit(error=error.error)
            finish(1)

    @component.on_leave
    def left(session, details):
        # a refused join (e.g. a wrong WAMP-CRA secret) ends here with the router's reason
        if not status.get("done"):
            emit(error=details.reason)
            finish(1)

    def failed(failure):
        if not status.get("done"):
            emit(error=str(failure.value))
        finish(1)

    component.start(reactor).addErrback(failed)
    task.deferLater(reactor, args.timeout, lambda: None).addCallback(lambda _: finish(3))
    reactor.run()
    sys.exit(status["code"])


if __name__ == "__main__":
    main()
