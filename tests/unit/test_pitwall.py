"""Pit wall: pure views, the track image cache, HTTP routing and the modern stream's shapes.

No sockets, no sleeps: ``task.Clock`` and twisted.web's ``DummyRequest``.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer, task
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from livetiming.service.plugins.carobama.model import (
    CarState,
    Entry,
    EventKind,
    FeedEvent,
    Lap,
    TimingModel,
    TrackMap,
)
from livetiming.service.plugins.carobama.options import parse_options
from livetiming.service.plugins.carobama.pitwall import views
from livetiming.service.plugins.carobama.pitwall.trackmap import PNG_MAGIC, TrackImageCache, http_base
from livetiming.service.plugins.carobama.pitwall.web import PitWallResource, web_root

# ----- modern Timing71 stream (wire §9) ----------------------------------------------------------


def test_modern_manifest_uses_laptime_tuples_and_keeps_the_rest():
    manifest = {"uuid": "u", "colSpec": [["Num", "text", "Car number"], ["Last", "time", "Last lap time"],
                                         ["Best", "time", "Best lap time"], ["S1", "time", "Sector 1 time"]]}
    modern = views.modern_manifest(manifest)
    assert modern["colSpec"] == [["Num", "text", "Car number"], ["Last", "laptime", "Last lap time"],
                                 ["Best", "laptime", "Best lap time"], ["S1", "time", "Sector 1 time"]]
    assert manifest["colSpec"][1] == ["Last", "time", "Last lap time"], "the input is not changed"
    assert modern["uuid"] == "u"


def test_modern_state_has_millisecond_message_timestamps_and_last_updated():
    state = {"cars": [["7"]], "session": {"flagState": "green"}, "highlight": ["7"],
             "messages": [[1700000000, "Pits", "#7 in", "pit", "7"], [1700000000123, "Track", "x", None]]}
    modern = views.modern_state(state, 1700000001.5)
    assert modern["messages"][0] == [1700000000000, "Pits", "#7 in", "pit", "7"]
    assert modern["messages"][1][0] == 1700000000123, "already in ms: unchanged"
    assert modern["lastUpdated"] == 1700000001500
    assert set(modern) == {"cars", "session", "messages", "highlight", "lastUpdated"}
    assert state["messages"][0][0] == 1700000000


# ----- model views ---------------------------------------------------------------------------------


def _model() -> TimingModel:
    model = TimingModel()
    model.session.track_id, model.session.layout_id = "ks_brands_hatch", "indy"
    model.session.track_map = TrackMap(width=800, height=600, scale=2.0, offset_x=100.0, offset_z=50.0,
                                       image="/content/tracks/ks_brands_hatch/indy/map.png")
    a = Entry(key="a", number="7", driver="Ann", connected=True, x=10.0, z=20.0, speed=150.4, spline=0.5,
              is_team=True)
    b = Entry(key="b", number="23", driver="Bob", connected=True, x=-5.0, z=2.0, speed=60, in_pits=True,
              state=CarState.PIT)
    c = Entry(key="c", number="48", driver="Cy", connected=False, x=1.0, z=1.0)
    d = Entry(key="d", number="9", driver="Di", connected=True)  # no position yet
    model.entries = [a, b, c, d]
    return model


def test_positions_only_connected_cars_with_a_position_and_pit_cars_marked():
    cars = views.positions(_model())
    assert cars == [["7", 10.0, 20.0, 150, ""], ["23", -5.0, 2.0, 60, "pit"]]


def test_map_info_has_the_transform_and_only_the_services_own_image_url():
    info = views.map_info(_model(), "/pitwall/track.png?key=1")
    assert info["params"] == {"width": 800, "height": 600, "scale": 2.0, "offsetX": 100.0, "offsetZ": 50.0}
    assert info["image"] == "/pitwall/track.png?key=1"
    assert views.map_info(TimingModel(), "/x")["image"] is None, "no map parameters, no image"


def test_team_numbers():
    assert views.team_numbers(_model()) == ["7"]


def test_outline_learns_in_lap_order_ignores_pit_cars_and_resets_on_a_new_track():
    model = _model()
    outline = views.TrackOutline(bins=10)
    outline.observe(model)
    view = outline.view()
    assert view["line"][5] == [10.0, 20.0]
    assert sum(point is not None for point in view["line"]) == 1, "the car in the pits is ignored"
    model.entries[0].x, model.entries[0].z = 12.0, 22.0
    before = outline.version
    outline.observe(model)
    assert outline.view()["line"][5] == [11.0, 21.0], "running mean"
    assert outline.version == before, "refinements do not count as new outline"
    outline.add(3.0, 4.0, None)
    assert outline.view()["cloud"] == [[3.0, 4.0]]
    model.session.track_id = "spa"
    outline.observe(model)
    assert outline.view()["cloud"] == []


def _pit_events():
    return [
        FeedEvent(EventKind.PIT_IN, 100.0, "7", data={"lap": 2, "tyre": "S"}),
        FeedEvent(EventKind.PIT_OUT, 125.5, "7", data={"lap": 2, "tyre": "M"}),
    ]


def test_pit_log_and_car_detail_with_stints_split_at_the_stop():
    model = _model()
    entry = model.entries[0]
    entry.laps = [Lap(1, 60.0, "Ann", [20.0, 20.0, 20.0], "S"), Lap(2, 80.0, "Ann", [], "S"),
                  Lap(3, 59.0, "Ann", [19.0, 20.0, 20.0], "M"), Lap(4, 58.5, "Ann", [], "M")]
    entry.best_lap, model.best_lap, model.sector_count, entry.pit_count = 58.5, 58.5, 3, 1
    pit_log = views.PitLog()
    assert pit_log.observe(_pit_events(), model) == {"7"}
    detail = views.car_detail(model, "7", pit_log)
    assert [lap["lap"] for lap in detail["laps"]] == [1, 2, 3, 4]
    assert detail["laps"][3]["sb"] and detail["laps"][3]["pb"]
    assert detail["laps"][0]["sectors"] == [20.0, 20.0, 20.0]
    assert detail["pits"] == [{"lap": 2, "in": 100.0, "out": 125.5, "duration": 25.5, "tyreIn": "S",
                               "tyreOut": "M"}]
    assert [(s["start"], s["end"], s["tyre"], s["best"]) for s in detail["stints"]] == [
        (1, 2, "S", 60.0), (3, 4, "M", 58.5)]
    assert detail["stints"][-1]["inProgress"]
    json.dumps(detail)  # JSON-able
    assert views.car_detail(model, "nope", pit_log) is None


def test_pit_log_resets_on_a_new_session_and_signature_tracks_changes():
    model = _model()
    pit_log = views.PitLog()
    before = views.detail_signature(model, "7", pit_log)
    pit_log.observe(_pit_events(), model)
    assert views.detail_signature(model, "7", pit_log) != before
    model.session.generation += 1
    pit_log.observe([], model)
    assert pit_log.of("7") == []


def test_a_driver_change_starts_a_stint():
    model = _model()
    model.entries[0].laps = [Lap(1, 60.0, "Ann"), Lap(2, 61.0, "Ann"), Lap(3, 62.0, "Bea")]
    detail = views.car_detail(model, "7", views.PitLog())
    assert [(s["driver"], s["laps"]) for s in detail["stints"]] == [("Ann", 2), ("Bea", 1)]


def test_collision_marks_use_world_position_else_the_cars():
    model = _model()
    events = [
        FeedEvent(EventKind.COLLISION, 1.0, "7", "#7 contact", {"world_pos": {"x": 1.5, "y": 0, "z": 2.5},
                                                               "other_car": "23", "speed": 40.0}),
        FeedEvent(EventKind.COLLISION, 1.0, "23", "#23 wall", {"world_pos": None}),
        FeedEvent(EventKind.COLLISION, 1.0, None, "unknown car", {}),
        FeedEvent(EventKind.CHAT, 1.0, "7", "hi"),
    ]
    marks = views.collision_marks(events, model)
    assert [(m["car"], m["x"], m["z"], m["other"]) for m in marks] == [("7", 1.5, 2.5, "23"),
                                                                         ("23", -5.0, 2.0, None)]


# ----- options -------------------------------------------------------------------------------------


def test_web_and_t71_port_options():
    options = parse_options(["--url", "ws://h/api/race-control"], environ={})
    assert options.web_port == 0 and options.t71_port is None
    options = parse_options(["--url", "ws://h/", "--web-port", "8080", "--t71-port", "24771"], environ={})
    assert options.web_port == 8080 and options.t71_port == 24771
    options = parse_options(["--url", "ws://h/"], environ={"CAROBAMA_T71_PORT": "24771"})
    assert options.t71_port == 24771
    with pytest.raises(SystemExit) as exited:
        parse_options(["--url", "ws://h/", "--t71-port", "http"], environ={})
    assert exited.value.code == 2


# ----- track image cache ---------------------------------------------------------------------------


def test_http_base_from_the_upstream_url():
    assert http_base("wss://user:pw@x.example:8443/api/race-control") == "https://x.example:8443"
    assert http_base("ws://127.0.0.1:9/api") == "http://127.0.0.1:9"
    assert http_base("ws:///nohost") is None


class FakeFetch:
    def __init__(self):
        self.requests: list[tuple[str, defer.Deferred]] = []

    def __call__(self, url: str) -> defer.Deferred:
        d = defer.Deferred()
        self.requests.append((url, d))
        return d


def test_image_cache_fetches_once_checks_png_and_retries_after_a_while():
    clock, fetch, ready = task.Clock(), FakeFetch(), []
    cache = TrackImageCache("https://x.example", fetch, clock, ready.append, retry_after=60)
    path = "/content/tracks/ks_brands_hatch/indy/map.png"
    cache.want(path)
    cache.want(path)
    assert [url for url, _d in fetch.requests] == ["https://x.example" + path], "one request in flight"
    fetch.requests[0][1].callback((200, b"<html>status page</html>"))
    assert cache.get(path) is None, "HTML is not an image"
    cache.want(path)
    assert len(fetch.requests) == 1, "no retry before retry_after"
    clock.advance(61)
    cache.want(path)
    fetch.requests[1][1].callback((200, PNG_MAGIC + b"rest"))
    assert cache.get(path) == PNG_MAGIC + b"rest"
    assert ready == [path]
    cache.want(path)
    assert len(fetch.requests) == 2, "cached: never fetched again"


def test_image_cache_failures_are_remembered():
    clock, fetch = task.Clock(), FakeFetch()
    cache = TrackImageCache("http://h", fetch, clock, retry_after=60)
    cache.want("/content/tracks/a b/map.png")
    assert fetch.requests[0][0] == "http://h/content/tracks/a%20b/map.png"
    fetch.requests[0][1].errback(ConnectionRefusedError("refused"))
    cache.want("/content/tracks/a b/map.png")
    assert len(fetch.requests) == 1
    fetch_404 = TrackImageCache("http://h", fetch, clock)
    fetch_404.want("/x.png")
    fetch.requests[-1][1].callback((404, PNG_MAGIC))
    assert fetch_404.get("/x.png") is None


# ----- HTTP resources --------------------------------------------------------------------------------


class FakeHub:
    image = None

    def track_image(self):
        return self.image


def _render(resource, path: bytes, headers: dict | None = None) -> DummyRequest:
    from twisted.web.server import Site

    site = Site(resource)
    segments = path.lstrip(b"/").split(b"/")
    request = DummyRequest(segments)
    request.path = path
    request.uri = path
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    child = site.getResourceFor(request)
    body = child.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return request


def test_static_files_are_served_with_types_and_a_content_security_policy():
    root = PitWallResource(FakeHub(), Resource())
    index = _render(root, b"/")
    assert b"<!doctype html>" in b"".join(index.written).lower()
    assert index.responseHeaders.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    csp = index.responseHeaders.getRawHeaders(b"content-security-policy")[0]
    assert b"script-src 'self'" in csp and b"frame-ancestors 'none'" in csp
    app = _render(root, b"/js/app.js")
    assert app.responseHeaders.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    for bad in (b"/../pyproject.toml", b"/.hidden", b"/js/", b"/nope.py", b"/js/../index.html"):
        assert _render(root, bad).responseCode == 404, bad


def test_track_image_is_404_until_the_service_has_one():
    hub = FakeHub()
    root = PitWallResource(hub, Resource())
    assert _render(root, b"/pitwall/track.png").responseCode == 404
    hub.image = PNG_MAGIC + b"x"
    request = _render(root, b"/pitwall/track.png")
    assert b"".join(request.written) == PNG_MAGIC + b"x"
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"image/png"]


def test_only_the_page_socket_path_is_claimed():
    root = PitWallResource(FakeHub(), Resource())
    assert root.isWebSocketPath(b"/pitwall/socket")
    assert not root.isWebSocketPath(b"/")
    assert not root.isWebSocketPath(b"/pitwall/socket/extra")


def test_web_folder_is_package_data():
    files = {path.relative_to(web_root()).as_posix() for path in web_root().rglob("*") if path.is_file()}
    assert {"index.html", "pitwall.css", "js/app.js", "js/table.js", "js/map.js", "js/focus.js",
            "js/format.js", "js/dom.js"} <= files


def test_page_never_uses_html_parsing_sinks():
    """Feed text reaches the page only through textContent (XSS): no innerHTML and friends."""
    for path in web_root().rglob("*.js"):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function"):
            assert sink not in source, f"{path.name} uses {sink}"


# ----- the framework's standalone router (core hook) ------------------------------------------------


def test_standalone_root_routes_upgrades_to_the_legacy_protocol_and_the_rest_to_the_service():
    from livetiming.service.standalone import StandaloneRoot, StandaloneServerFactory, UpgradeResource

    factory = StandaloneServerFactory(on_client_open=lambda client: None, clock=task.Clock())
    web = PitWallResource(FakeHub(), Resource())
    root = StandaloneRoot(factory, web)

    def route(path: bytes, upgrade: bool):
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.path = path
        if upgrade:
            request.requestHeaders.setRawHeaders(b"upgrade", [b"WebSocket"])
        return getChildForRequest(root, request)

    assert isinstance(route(b"/anything/at/all", True), UpgradeResource)
    assert isinstance(route(b"/", True), UpgradeResource)
    assert not isinstance(route(b"/", False), UpgradeResource)
    claimed = route(b"/pitwall/socket", True)
    assert not isinstance(claimed, UpgradeResource), "the page's own socket goes to the service"
    assert claimed is web.children[b"pitwall"].children[b"socket"]


def test_outline_ignores_out_laps_and_positions_far_from_a_settled_slice():
    outline = views.TrackOutline(bins=10, settled=3, outlier=10.0)
    for _ in range(3):
        outline.add(100.0, 100.0, 0.05)
    outline.add(300.0, 300.0, 0.05)  # off the track
    assert outline.view()["line"][0] == [100.0, 100.0]
    model = _model()
    model.entries[0].state = CarState.OUT
    outline.observe(model)
    assert outline.view()["line"] == [], "nothing learned from the out-lap car"


def test_json_client_coalesces_while_congested_and_drops_a_client_that_never_reads():
    from livetiming.service.plugins.carobama.pitwall.sockets import JsonClient, JsonServerFactory

    factory = JsonServerFactory("test", on_open=lambda client: None, max_backlog=100)
    client = JsonClient()
    client.factory = factory
    client.peer_label = "tcp4:127.0.0.1:1"
    sent: list[bytes] = []
    dropped: list[bool] = []
    client.sendMessage = lambda data, isBinary=False: sent.append(data)
    client.registerProducer = lambda producer, streaming: None
    client.dropConnection = lambda abort=False: dropped.append(abort)
    client.onOpen()
    assert factory.clients == [client]
    client.send_frame(b"s0", "state")
    client.pauseProducing()
    for frame, kind in ((b"s1", "state"), (b"c1", None), (b"s2", "state"), (b"p1", "positions")):
        client.send_frame(frame, kind)
    assert sent == [b"s0"]
    client.resumeProducing()
    assert sent == [b"s0", b"c1", b"s2", b"p1"], "only the newest state; events all kept, in order"
    client.pauseProducing()
    client.send_frame(b"x" * 200)
    assert dropped == [True] and factory.clients == []
