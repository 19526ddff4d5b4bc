"""The router configuration in deploy/crossbar, exercised with real autobahn WAMP clients.

twisted.trial TestCases (pytest runs them and trial spins the reactor for Deferred-returning
tests); the routers come from the module-scoped fixtures in tests/conftest.py, injected by an
autouse fixture. Every wait has a deadline (WAIT seconds); there are no bare sleeps.
"""

from __future__ import annotations

import itertools
from urllib.parse import urlsplit

import pytest
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig, PublishOptions, RegisterOptions, SubscribeOptions
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from tests.support.crossbar import (
    SKIP_REASON,
    TEST_ITERATIONS,
    TEST_KEYLEN,
    TEST_SALT,
    CrossbarRouter,
    CrossbarStartError,
    find_crossbar,
)

WAIT = 15  # seconds for any single network step
REFUSED = {ApplicationError.NOT_AUTHORIZED, ApplicationError.AUTHENTICATION_FAILED}
_names = itertools.count()


def within(deferred, seconds=WAIT):
    """The deadline every network step waits with."""
    return deferred.addTimeout(seconds, reactor)


def unique(prefix: str) -> str:
    """Distinct URIs per test: the module-scoped routers are shared between tests."""
    return f"{prefix}{next(_names)}"


class JoinRefused(Exception):
    def __init__(self, reason, message):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class _Client(ApplicationSession):
    """A WAMP client that joins like livetiming-core's service session (or anonymously)."""

    def __init__(self, realm, authid, secret, use_salt, joined, disconnected):
        super().__init__(ComponentConfig(realm=realm))
        self._authid = authid
        self._secret = secret
        self._use_salt = use_salt
        self._joined = joined
        self._disconnected = disconnected
        self.challenge_extra = None

    def onConnect(self):
        if self._secret is None:
            self.join(self.config.realm, authmethods=["anonymous"])
        else:
            self.join(self.config.realm, authmethods=["wampcra", "anonymous"], authid=self._authid)

    def onChallenge(self, challenge):
        if challenge.method != "wampcra":
            raise Exception(f"unexpected authentication method {challenge.method}")
        self.challenge_extra = dict(challenge.extra)
        key = self._secret
        if self._use_salt and "salt" in challenge.extra:
            key = auth.derive_key(
                self._secret,
                challenge.extra["salt"],
                challenge.extra.get("iterations", 1000),
                challenge.extra.get("keylen", 32),
            )
        return auth.compute_wcs(key, challenge.extra["challenge"])

    def onJoin(self, details):
        self.join_details = details
        if not self._joined.called:
            self._joined.callback(self)

    def onLeave(self, details):
        if not self._joined.called:
            self._joined.errback(JoinRefused(details.reason, details.message))
        self.disconnect()

    def onDisconnect(self):
        if not self._joined.called:
            self._joined.errback(ConnectionError("connection closed before the session joined"))
        if not self._disconnected.called:
            self._disconnected.callback(None)


@defer.inlineCallbacks
def connect(url, *, authid=None, secret=None, use_salt=True, realm="timing"):
    """Open a WAMP session; anonymous unless a secret is given. Fails with JoinRefused."""
    joined, disconnected = defer.Deferred(), defer.Deferred()

    def make_session():
        return _Client(realm, authid, secret, use_salt, joined, disconnected)

    parts = urlsplit(url)
    factory = WampWebSocketClientFactory(make_session, url=url)
    # autobahn arms these through a batched timer whose reactor calls outlive a closed
    # connection, which trial reports as a dirty reactor; the WAIT deadlines replace them.
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port, timeout=WAIT)
    protocol = yield endpoint.connect(factory)
    try:
        session = yield joined.addTimeout(WAIT, reactor)
    except BaseException:
        # make sure nothing is left open when the join failed or timed out
        if not disconnected.called:
            protocol.transport.abortConnection()
        yield disconnected.addTimeout(WAIT, reactor)
        raise
    session.disconnected = disconnected
    return session


@defer.inlineCallbacks
def close(session):
    if not session.disconnected.called:
        if session.is_attached():
            session.leave()
        else:
            session.disconnect()
        yield session.disconnected.addTimeout(WAIT, reactor)


class RouterTestCase(unittest.TestCase):
    timeout = 120  # trial's own backstop; each step has its WAIT deadline

    router: CrossbarRouter

    @defer.inlineCallbacks
    def open(self, router=None, **kwargs):
        session = yield connect((router or self.router).url, **kwargs)
        self.addCleanup(close, session)
        return session

    def open_service(self, router=None, **kwargs):
        router = router or self.router
        kwargs.setdefault("authid", router.authid)
        kwargs.setdefault("secret", router.secret)
        return self.open(router, **kwargs)

    @defer.inlineCallbacks
    def assert_refused(self, deferred, errors=REFUSED):
        """Wait for a join/publish/register to fail and return the error URI."""
        try:
            yield within(deferred)
        except JoinRefused as exc:
            reason = exc.reason
        except ApplicationError as exc:
            reason = exc.error
        else:
            self.fail(f"expected a refusal with one of {sorted(errors)}, but it succeeded")
        self.assertIn(reason, errors, f"unexpected error {reason}")
        return reason


class ServiceAuthenticationTests(RouterTestCase):
    @pytest.fixture(autouse=True)
    def _routers(self, crossbar_router):
        self.router = crossbar_router

    @defer.inlineCallbacks
    def test_service_joins_with_unsalted_secret(self):
        session = yield self.open_service()
        details = session.join_details
        self.assertEqual(details.authrole, "services")
        self.assertEqual(details.authid, self.router.authid)
        self.assertEqual(details.authmethod, "wampcra")
        self.assertNotIn("salt", session.challenge_extra)

    @defer.inlineCallbacks
    def test_wrong_secret_is_refused(self):
        yield self.assert_refused(self.open_service(secret=self.router.secret + "x"))

    @defer.inlineCallbacks
    def test_unknown_authid_is_refused(self):
        yield self.assert_refused(self.open_service(authid="intruder"))

    @defer.inlineCallbacks
    def test_websocket_root_path_is_accepted_too(self):
        url = self.router.url.removesuffix("/ws") + "/"
        session = yield connect(url, authid=self.router.authid, secret=self.router.secret)
        self.addCleanup(close, session)
        self.assertEqual(session.join_details.authrole, "services")

    @defer.inlineCallbacks
    def test_secret_is_not_logged(self):
        yield self.open_service()
        yield self.assert_refused(self.open_service(secret="wrong-" + self.router.secret))
        self.assertNotIn(self.router.secret, self.router.log_text())


class SaltedServiceAuthenticationTests(RouterTestCase):
    @pytest.fixture(autouse=True)
    def _routers(self, crossbar_router_salted):
        self.router = crossbar_router_salted

    @defer.inlineCallbacks
    def test_service_joins_with_salted_secret(self):
        session = yield self.open_service()
        self.assertEqual(session.join_details.authrole, "services")
        self.assertEqual(
            {k: session.challenge_extra[k] for k in ("salt", "iterations", "keylen")},
            {"salt": TEST_SALT, "iterations": TEST_ITERATIONS, "keylen": TEST_KEYLEN},
        )

    @defer.inlineCallbacks
    def test_unsalted_signature_is_refused_by_salted_router(self):
        yield self.assert_refused(self.open_service(use_salt=False))

    @defer.inlineCallbacks
    def test_wrong_secret_is_refused(self):
        yield self.assert_refused(self.open_service(secret="not-" + self.router.secret))

    @defer.inlineCallbacks
    def test_salted_service_can_publish_and_register(self):
        service = yield self.open_service()
        uuid = unique("salted")
        yield within(service.register(lambda: True, f"livetiming.service.isAlive.{uuid}"))
        yield within(
            service.publish(
                f"livetiming.service.{uuid}",
                {"payload": 1},
                options=PublishOptions(acknowledge=True, retain=True),
            )
        )
        client = yield self.open()
        self.assertTrue((yield within(client.call(f"livetiming.service.isAlive.{uuid}"))))


class PermissionTests(RouterTestCase):
    @pytest.fixture(autouse=True)
    def _routers(self, crossbar_router):
        self.router = crossbar_router

    @defer.inlineCallbacks
    def subscribe(self, session, topic, get_retained=True):
        """Subscribe; returns (once subscribed) a one-element list holding a Deferred that fires
        with (args, kwargs) of the first event, with a deadline."""
        received = defer.Deferred()

        def on_event(*args, **kwargs):
            if not received.called:
                received.callback((args, kwargs))

        yield within(session.subscribe(on_event, topic, options=SubscribeOptions(get_retained=get_retained)))
        return [received.addTimeout(WAIT, reactor)]

    @defer.inlineCallbacks
    def first_retained(self, session, topic):
        [received] = yield self.subscribe(session, topic)
        args, _ = yield received
        return args

    @defer.inlineCallbacks
    def test_anonymous_gets_the_last_retained_state(self):
        service = yield self.open_service()
        topic = f"livetiming.service.{unique('svc')}"
        for n in (1, 2):
            message = {"msgClass": 8, "date": n, "payload": f"state {n}", "retain": True}
            yield within(
                service.publish(topic, message, options=PublishOptions(acknowledge=True, retain=True))
            )
        client = yield self.open()
        self.assertEqual(client.join_details.authrole, "anonymous")
        args = yield self.first_retained(client, topic)
        self.assertEqual(args[0]["payload"], "state 2")
        # still retained for later subscribers once the first one has gone
        yield close(client)
        late = yield self.open()
        args = yield self.first_retained(late, topic)
        self.assertEqual(args[0]["payload"], "state 2")

    @defer.inlineCallbacks
    def test_analysis_topics_are_retained_too(self):
        service = yield self.open_service()
        topic = f"livetiming.analysis/{unique('svc')}/session"
        yield within(
            service.publish(topic, {"msgClass": 7}, options=PublishOptions(acknowledge=True, retain=True))
        )
        client = yield self.open()
        args = yield self.first_retained(client, topic)
        self.assertEqual(args[0], {"msgClass": 7})

    @defer.inlineCallbacks
    def test_anonymous_receives_live_events(self):
        service = yield self.open_service()
        client = yield self.open()
        topic = f"livetiming.service.{unique('svc')}"
        [received] = yield self.subscribe(client, topic, get_retained=False)
        yield within(service.publish(topic, "live", options=PublishOptions(acknowledge=True)))
        args, _ = yield received
        self.assertEqual(args, ("live",))

    @defer.inlineCallbacks
    def test_anonymous_can_call_a_service_procedure(self):
        service = yield self.open_service()
        uuid = unique("svc")
        yield within(service.register(lambda: True, f"livetiming.service.isAlive.{uuid}"))
        yield within(service.register(lambda: {"cars": []}, f"livetiming.service.requestState.{uuid}"))
        client = yield self.open()
        self.assertIs((yield within(client.call(f"livetiming.service.isAlive.{uuid}"))), True)
        state = yield within(client.call(f"livetiming.service.requestState.{uuid}"))
        self.assertEqual(state, {"cars": []})

    @defer.inlineCallbacks
    def test_anonymous_cannot_publish(self):
        client = yield self.open()
        for topic in (f"livetiming.service.{unique('svc')}", "livetiming.control", "livetiming.directory"):
            yield self.assert_refused(
                client.publish(topic, "forged", options=PublishOptions(acknowledge=True, retain=True)),
                {ApplicationError.NOT_AUTHORIZED},
            )

    @defer.inlineCallbacks
    def test_anonymous_cannot_register(self):
        client = yield self.open()
        uuid = unique("svc")
        for procedure in (f"livetiming.service.isAlive.{uuid}", "livetiming.directory.listServices"):
            yield self.assert_refused(
                client.register(lambda: True, procedure), {ApplicationError.NOT_AUTHORIZED}
            )

    @defer.inlineCallbacks
    def test_anonymous_cannot_hijack_a_registered_procedure(self):
        service = yield self.open_service()
        procedure = f"livetiming.service.isAlive.{unique('svc')}"
        yield within(
            service.register(lambda: "genuine", procedure, options=RegisterOptions(force_reregister=True))
        )
        client = yield self.open()
        # Crossbar 26.10 checks "already registered" before acting on a refused authorization,
        # so a plain REGISTER of a taken URI reports procedure_already_exists (either way: no).
        yield self.assert_refused(
            client.register(lambda: "forged", procedure),
            {ApplicationError.NOT_AUTHORIZED, ApplicationError.PROCEDURE_ALREADY_EXISTS},
        )
        # force_reregister (what livetiming-core services use) must not kick the service out
        yield self.assert_refused(
            client.register(lambda: "forged", procedure, options=RegisterOptions(force_reregister=True)),
            {ApplicationError.NOT_AUTHORIZED},
        )
        self.assertEqual((yield within(client.call(procedure))), "genuine")

    @defer.inlineCallbacks
    def test_anonymous_is_confined_to_livetiming(self):
        client = yield self.open()
        yield self.assert_refused(client.call("wamp.session.list"), {ApplicationError.NOT_AUTHORIZED})
        yield self.assert_refused(
            client.subscribe(lambda *a: None, "other.topic"), {ApplicationError.NOT_AUTHORIZED}
        )

    @defer.inlineCallbacks
    def test_services_are_confined_to_livetiming(self):
        service = yield self.open_service()
        yield self.assert_refused(
            service.publish("other.topic", 1, options=PublishOptions(acknowledge=True)),
            {ApplicationError.NOT_AUTHORIZED},
        )
        yield self.assert_refused(
            service.register(lambda: 1, "other.procedure"), {ApplicationError.NOT_AUTHORIZED}
        )


class RouterLifecycleTests(RouterTestCase):
    @pytest.fixture(autouse=True)
    def _routers(self, fresh_crossbar_router):
        self.router = fresh_crossbar_router

    @defer.inlineCallbacks
    def test_restart_keeps_url_and_credentials(self):
        url, first_pid = self.router.url, self.router.pid
        service = yield self.open_service()
        # restart() blocks (subprocess + polling); run it in a thread so the reactor keeps
        # serving the connected client meanwhile, as a reconnecting service would need.
        yield within(threads.deferToThread(self.router.restart), 90)
        # the service noticed: the old node closed its connection
        yield within(service.disconnected)
        self.assertEqual(self.router.url, url)
        self.assertNotEqual(self.router.pid, first_pid)
        again = yield self.open_service()
        self.assertEqual(again.join_details.authrole, "services")


def test_router_refuses_to_start_without_a_secret():
    executable = find_crossbar()
    if executable is None:
        pytest.skip(SKIP_REASON)
    router = CrossbarRouter(executable=executable, secret="")
    try:
        with pytest.raises(CrossbarStartError, match="LIVETIMING_SHARED_SECRET is not set"):
            router.start()
    finally:
        router.close()
