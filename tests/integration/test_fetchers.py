"""Fetchers against a real HTTP server on loopback (trial: the reactor runs the test)."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from livetiming.service import Fetcher, JSONFetcher, MultiLineFetcher


class Flaky(resource.Resource):
    isLeaf = True

    def __init__(self, failures: int, body: bytes):
        super().__init__()
        self.failures = failures
        self.body = body
        self.requests = []

    def render_GET(self, request):
        self.requests.append(request.getHeader(b"user-agent"))
        if len(self.requests) <= self.failures:
            request.setResponseCode(503)
            return b"busy"
        return self.body


class FetcherTests(unittest.TestCase):
    def serve(self, failures=0, body=b'{"a": [1, 2]}'):
        self.resource = Flaky(failures, body)
        port = reactor.listenTCP(0, server.Site(self.resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/data"

    def fetch_once(self, cls, url, interval=60):
        got = defer.Deferred()
        fetcher = cls(url, lambda value: got.called or got.callback(value), interval)
        self.addCleanup(fetcher.stop)
        fetcher.start()
        got.addTimeout(15, reactor)
        return got

    @defer.inlineCallbacks
    def test_json_fetcher_parses_and_sends_a_user_agent(self):
        url = self.serve()
        value = yield self.fetch_once(JSONFetcher, url)
        self.assertEqual(value, {"a": [1, 2]})
        self.assertIn(b"livetiming", self.resource.requests[0])

    @defer.inlineCallbacks
    def test_multiline_fetcher_splits_lines(self):
        url = self.serve(body="one\ntwo\nthr\u00e9e\n".encode())
        value = yield self.fetch_once(MultiLineFetcher, url)
        self.assertEqual(value, ["one", "two", "thr\u00e9e"])

    @defer.inlineCallbacks
    def test_failures_are_retried_with_backoff_then_delivered(self):
        url = self.serve(failures=2, body=b"ok")
        value = yield self.fetch_once(Fetcher, url, interval=30)
        self.assertEqual(value, b"ok")
        self.assertEqual(len(self.resource.requests), 3)

    @defer.inlineCallbacks
    def test_callable_url(self):
        url = self.serve(body=b"[]")
        value = yield self.fetch_once(JSONFetcher, lambda: url)
        self.assertEqual(value, [])
