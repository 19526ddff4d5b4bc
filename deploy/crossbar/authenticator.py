"""Router-side helpers for the carobama Crossbar node (see README.md in this directory).

Loaded by the Crossbar router worker (``"pythonpath": ["."]`` in config.json makes this
directory importable). Two things live here because Crossbar's static configuration cannot
express them:

* ``create_authenticator`` -- a WAMP-CRA "function" authenticator. It reads the service
  credentials from the environment (``LIVETIMING_AUTH_ID``, ``LIVETIMING_SHARED_SECRET`` and the
  optional ``LIVETIMING_SHARED_SECRET_SALT`` / ``_ITERATIONS`` / ``_KEYLEN``), so the secret is
  never written into config.json, the authid can be chosen freely and salting is optional.
* ``EnvTransportStarter`` -- a router component that starts the WebSocket transport described
  in its ``extra.transport`` with the port and interface taken from the environment
  (``LIVETIMING_ROUTER_PORT``, default 8080; ``LIVETIMING_ROUTER_INTERFACE``, default
  127.0.0.1). Crossbar only reads a listening port from the environment when the variable is
  set (no default) and never reads the interface from it.

This module runs inside Crossbar's own virtualenv: it must only import what Crossbar ships
(autobahn, twisted) and nothing from the carobama packages.
"""

import copy
import os
from dataclasses import dataclass

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import inlineCallbacks

SERVICES_ROLE = "services"

DEFAULT_AUTH_ID = "services"
DEFAULT_ITERATIONS = 1000
DEFAULT_KEYLEN = 32
DEFAULT_PORT = 8080
DEFAULT_INTERFACE = "127.0.0.1"


class ConfigurationError(Exception):
    """The router environment is incomplete or invalid."""


@dataclass(frozen=True)
class ServiceCredentials:
    authid: str
    secret: str
    salt: str | None = None
    iterations: int = DEFAULT_ITERATIONS
    keylen: int = DEFAULT_KEYLEN

    def principal(self):
        """The principal handed to Crossbar's WAMP-CRA implementation.

        ``secret`` is the plain shared secret; when a salt is configured Crossbar derives the
        PBKDF2 key itself and sends salt/iterations/keylen in the CHALLENGE so that the client
        derives the same key from the same plain secret.
        """
        principal = {"secret": self.secret, "role": SERVICES_ROLE}
        if self.salt is not None:
            principal.update(salt=self.salt, iterations=self.iterations, keylen=self.keylen)
        return principal


def _positive_int(environ, name, default):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


def credentials_from_env(environ=None):
    """Read and validate the service credentials; raise ConfigurationError when unusable."""
    environ = os.environ if environ is None else environ
    secret = environ.get("LIVETIMING_SHARED_SECRET", "")
    if not secret:
        raise ConfigurationError(
            "LIVETIMING_SHARED_SECRET is not set: services could not authenticate. "
            "Set it in the router's environment (it is never read from config.json)."
        )
    authid = environ.get("LIVETIMING_AUTH_ID", "").strip() or DEFAULT_AUTH_ID
    salt = environ.get("LIVETIMING_SHARED_SECRET_SALT", "") or None
    return ServiceCredentials(
        authid=authid,
        secret=secret,
        salt=salt,
        iterations=_positive_int(environ, "LIVETIMING_SHARED_SECRET_ITERATIONS", DEFAULT_ITERATIONS),
        keylen=_positive_int(environ, "LIVETIMING_SHARED_SECRET_KEYLEN", DEFAULT_KEYLEN),
    )


def create_authenticator(config, controller):
    """Factory for the ``"type": "function"`` WAMP-CRA authenticator (called once per worker)."""
    credentials = credentials_from_env()

    def authenticate(realm, authid, details):
        if authid != credentials.authid:
            raise ApplicationError(
                ApplicationError.NOT_AUTHORIZED, f"no service principal with authid {authid!r}"
            )
        return credentials.principal()

    return authenticate


def transport_from_env(template, port_env, interface_env, environ=None):
    """Return a copy of the transport config with endpoint port/interface from the environment."""
    environ = os.environ if environ is None else environ
    transport = copy.deepcopy(template)
    endpoint = transport["endpoint"]
    raw_port = environ.get(port_env, "").strip()
    if raw_port:
        try:
            port = int(raw_port)
        except ValueError:
            raise ConfigurationError(f"{port_env} must be a TCP port number, got {raw_port!r}") from None
        if not 0 < port < 65536:
            raise ConfigurationError(f"{port_env} must be between 1 and 65535, got {port}")
        endpoint["port"] = port
    else:
        endpoint.setdefault("port", DEFAULT_PORT)
    interface = environ.get(interface_env, "").strip()
    if interface:
        endpoint["interface"] = interface
    else:
        endpoint.setdefault("interface", DEFAULT_INTERFACE)
    return transport


class EnvTransportStarter(ApplicationSession):
    """Router component: starts the listening transport once the realm and roles exist.

    Crossbar starts router components before the transports of the static configuration and
    waits for this session's onJoin to finish. Crossbar only logs exceptions raised in onJoin
    and carries on, which would leave a node running without a transport; so on any failure
    (missing secret, bad or busy port, node not started with the edge personality) this stops
    the router worker, and the node shuts down with the reason in its log.
    """

    @inlineCallbacks
    def onJoin(self, details):
        try:
            yield self._start_transport()
        except Exception as exc:
            self.log.error(
                "carobama: cannot start the router transport, shutting the node down: {exc}",
                exc=f"{type(exc).__name__}: {exc}",
            )
            from twisted.internet import reactor

            reactor.callLater(0, reactor.stop)

    @inlineCallbacks
    def _start_transport(self):
        extra = self.config.extra
        controller = self.config.controller
        if controller is None:
            raise ConfigurationError(
                "the router component has no controller: start the node with "
                "`crossbar edge start --cbdir <dir>` (the default standalone personality ignores "
                'the worker option "expose_controller")'
            )
        credentials = credentials_from_env()
        transport = transport_from_env(extra["transport"], extra["port_env"], extra["interface_env"])
        endpoint = transport["endpoint"]
        self.log.info(
            "carobama: starting transport {tid} on {iface}:{port}; services authenticate as "
            "authid {authid} ({salting})",
            tid=extra["transport_id"],
            iface=endpoint["interface"],
            port=endpoint["port"],
            authid=credentials.authid,
            salting="salted PBKDF2 secret" if credentials.salt is not None else "unsalted secret",
        )
        yield controller.start_router_transport(extra["transport_id"], transport)
