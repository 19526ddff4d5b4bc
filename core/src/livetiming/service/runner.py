"""Running a service: choose standalone or WAMP, start updates, run the reactor."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="livetiming.service")


def start_standalone(service: Any, reactor: Any) -> int:
    """Listen for standalone clients and announce the port on stderr; returns the port."""
    from livetiming.service.standalone import (
        StandalonePublisher,
        StandaloneServerFactory,
        make_standalone_site,
    )

    limits = {}
    if os.environ.get("LIVETIMING_STANDALONE_MAX_BACKLOG"):
        limits["max_backlog"] = int(os.environ["LIVETIMING_STANDALONE_MAX_BACKLOG"])
    if os.environ.get("LIVETIMING_STANDALONE_MAX_STALL"):
        limits["max_stall"] = float(os.environ["LIVETIMING_STANDALONE_MAX_STALL"])
    factory = StandaloneServerFactory(
        on_client_open=lambda client: service.onClientConnected(), clock=reactor, **limits)
    port = int(os.environ.get("LIVETIMING_STANDALONE_PORT") or 0)
    interface = getattr(service.args, "listen", None) or "127.0.0.1"
    web_resource = _web_resource(service)
    if web_resource is None:
        listening = reactor.listenTCP(port, factory, interface=interface)
    else:
        listening = reactor.listenTCP(port, make_standalone_site(factory, web_resource),
                                      interface=interface)
    actual = listening.getHost().port
    service.add_publisher(StandalonePublisher(factory))
    service.standalone_factory = factory
    service.standalone_port = actual
    log.info("Standalone server for {uuid} listening on {interface}:{port}", uuid=service.uuid,
             interface=interface, port=actual)
    print(f"Standalone server for uuid:{service.uuid} listening on port:{actual}",
          file=sys.stderr, flush=True)
    if getattr(service.args, "upnp", False):
        _open_upnp(actual)
    return actual


def _web_resource(service: Any) -> Any:
    """The service's optional web pages (``getWebResource()``), or None.

    An extension of this framework: services written for the original have no such method and keep
    a WebSocket-only standalone port. A failing hook is logged and ignored.
    """
    hook = getattr(service, "getWebResource", None)
    if hook is None:
        return None
    try:
        return hook()
    except Exception:
        log.failure("getWebResource() failed; serving the standalone protocol only")
        return None


def _open_upnp(port: int) -> None:
    try:
        import upnpy  # noqa: F401
    except ImportError:
        log.error("--upnp needs the 'upnp' extra (pip install 'livetiming-core[upnp]'); skipped")
        return
    log.warn("UPnP port mapping is not supported by this build; forward port {port} by hand", port=port)


def run_service(service: Any, reactor: Any = None) -> None:
    """Start ``service`` in the mode its arguments and environment ask for and run the reactor."""
    if reactor is None:
        from twisted.internet import reactor
    args = service.args
    router = os.environ.get("LIVETIMING_ROUTER")
    standalone = bool(getattr(args, "standalone", False)) or not router
    if not router and not getattr(args, "standalone", False):
        log.info("LIVETIMING_ROUTER not set, forcing standalone mode")
    service.exit_status = 0
    reactor.addSystemEventTrigger("before", "shutdown", service.shutdown)

    if standalone:
        start_standalone(service, reactor)
    else:
        from livetiming.service.wamp import start_wamp

        def failed(failure):
            log.error("Giving up on the WAMP router {router}: {error}", router=router,
                      error=failure.getErrorMessage())
            service.exit_status = 1
            if reactor.running:
                reactor.stop()

        def finished(_):
            if reactor.running:
                reactor.stop()

        reactor.callWhenRunning(lambda: start_wamp(service, reactor).addCallbacks(finished, failed))

    reactor.callWhenRunning(service._startUpdates)
    reactor.run()
    if service.exit_status:
        raise SystemExit(service.exit_status)
