"""WAMP mode: the service joins realm ``timing`` on a router and publishes there.

On every join (including re-joins after the router restarts) the session
registers the service's procedures with force-reregister, subscribes to the
control channel, publishes the manifest and then the current state.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from livetiming import make_component
from livetiming.network import Channel, authenticatedService

#: Router errors that mean our credentials are wrong, not that the router is down.
AUTH_ERRORS = {
    "wamp.error.not_authorized",
    "wamp.error.authentication_failed",
    "wamp.error.authorization_failed",
    "wamp.error.no_auth_method",
    "wamp.error.no_such_principal",
}
#: Authentication refusals tolerated before the service gives up.
MAX_AUTH_FAILURES = 3


class WampPublisher:
    """Publisher interface over a joined WAMP session."""

    log = Logger()

    def __init__(self, session: ApplicationSession):
        self.session = session

    def publish(self, topic: str, message: dict, retain: bool = False) -> None:
        """Publish one wrapped message, retained when asked."""
        if not self.session.is_attached():
            return
        self.session.publish(topic, message, options=PublishOptions(retain=retain))


def create_service_session(service: Any) -> type:
    """An ApplicationSession class bound to ``service``."""

    @authenticatedService
    class ServiceSession(ApplicationSession):
        log = Logger()

        @inlineCallbacks
        def onJoin(self, details):
            service.log.info("Joined WAMP realm {realm} as {authid} (role {role})",
                             realm=details.realm, authid=details.authid, role=details.authrole)
            service.auth_failures = 0
            for procedure, handler in service.rpc_handlers().items():
                yield self.register(handler, procedure, options=RegisterOptions(force_reregister=True))
            yield self.subscribe(service.onControlMessage, Channel.CONTROL)
            self._publisher = WampPublisher(self)
            service.add_publisher(self._publisher)
            service._publishManifestNow()
            service._updateAndPublishRaceState()

        def onLeave(self, details):
            publisher = getattr(self, "_publisher", None)
            if publisher is not None:
                service.remove_publisher(publisher)
            if details.reason in AUTH_ERRORS:
                service.log.error("The WAMP router refused authentication as {authid}: {reason} "
                                  "({message}); check LIVETIMING_AUTH_ID and LIVETIMING_SHARED_SECRET",
                                  authid=_authid(), reason=details.reason, message=details.message or "")
            else:
                service.log.info("Left the WAMP router: {reason}", reason=details.reason)
            self.disconnect()

        def onDisconnect(self):
            publisher = getattr(self, "_publisher", None)
            if publisher is not None:
                service.remove_publisher(publisher)

    return ServiceSession


def _authid() -> str:
    import os

    return os.environ.get("LIVETIMING_AUTH_ID", "services")


def start_wamp(service: Any, reactor: Any) -> Any:
    """Connect ``service`` to ``LIVETIMING_ROUTER``; returns the component's Deferred.

    The component reconnects by itself when the router goes away; repeated
    authentication refusals are fatal (the Deferred fails).
    """
    service.auth_failures = 0

    def is_fatal(error: Exception) -> bool:
        if isinstance(error, ApplicationError) and error.error in AUTH_ERRORS:
            service.auth_failures += 1
            return service.auth_failures >= MAX_AUTH_FAILURES
        return False

    component = make_component(create_service_session(service), is_fatal=is_fatal)
    return component.start(reactor)
