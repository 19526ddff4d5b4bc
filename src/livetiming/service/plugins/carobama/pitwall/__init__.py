"""The pit wall: a live page in the browser, and the modern Timing71 (``t71://``) stream.

Where the page is served:

* **standalone mode** on this framework: on the standalone port itself, through the framework's
  optional ``getWebResource()`` hook (the service returns :meth:`PitWall.resource`); WebSocket
  upgrades on any other path still speak the legacy protocol;
* **WAMP mode**, or on the original framework (which has no such hook): on ``--web-port`` (default
  any free port). Either way one line on stderr says where:
  ``Pit wall page for uuid:<uuid> at http://<host>:<port>/``.

``--t71-port PORT`` also serves the modern JSON protocol of ``timing71-wire.md`` §9
(``MANIFEST_UPDATE``/``STATE_UPDATE`` on connect and on every change).

The page's own socket (``/pitwall/socket``) carries plain JSON objects, each with a ``type``:

=============  ===================================================================================
``hello``      ``uuid``, ``version``, ``teamTag`` — first message after connecting
``manifest``   ``manifest``: the service manifest (timing71-wire §3.1), on connect and on change
``state``      ``state`` (§3.2, uncompressed), ``team`` (numbers matching ``--team``), ``now``
``analysis``   ``key``, ``data``: analysis deltas, when the framework produces analysis
``map``        ``map`` (track, layout, image URL or null, transform parameters), ``outline``
               (``line`` in lap order and ``cloud`` of positions, for when there is no image)
``positions``  ``t``, ``cars``: ``[number, x, z, speed, "pit"|""]``, up to 5 times a second
``collision``  ``car``, ``other``, ``x``, ``z``, ``speed``, ``text``
``health``     ``upstream``: ``{state, lastFrameAgo, attempt}`` about once a second
``car``        ``car``, ``detail``: laps with sectors, stints and pit stops of the focused car
=============  ===================================================================================

The page sends ``{"type": "focus", "car": "<number>" | null}`` to choose the car it wants
``car`` messages for. Positions, outline and details come from the plugin's typed model
(``service.feed.model``); manifest and state from what the framework publishes, so the table works
for any data.
"""

from __future__ import annotations

import sys
import time
import zlib
from typing import Any

from twisted.internet import task
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from livetiming.service.plugins.carobama.pitwall import views
from livetiming.service.plugins.carobama.pitwall.sockets import (
    JsonClient,
    JsonServerFactory,
    QuietSite,
    UpgradeResource,
    encode,
)
from livetiming.service.plugins.carobama.pitwall.trackmap import TrackImageCache, agent_fetch, http_base
from livetiming.service.plugins.carobama.pitwall.web import PitWallResource

__all__ = ["PitWall"]

log = Logger(namespace="carobama.pitwall")

#: Seconds between position pushes (5 Hz).
POSITION_INTERVAL = 0.2
#: Seconds between health messages.
HEALTH_INTERVAL = 1.0
#: Minimum seconds between two outline updates sent to pages.
OUTLINE_INTERVAL = 2.0
CONTROL_CHANNEL = "livetiming.control"
SERVICE_REGISTRATION = 2


class PitWall:
    """Everything the pit wall serves, attached to one carobama ``Service``.

    It listens to what the service publishes (as a publisher of the framework, or by wrapping
    ``publish`` on the original framework) and to the feed's events (``service.feed_listeners``),
    and reads the model for positions and car details. Nothing happens in the constructor beyond
    wiring; :meth:`start` (once the reactor runs) opens the ports this mode needs.
    """

    def __init__(self, service: Any, clock: Any = None, fetch: Any = None):
        self.service = service
        self.options = service.options
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.page = JsonServerFactory("Pit wall", self._greet_page, self._page_message)
        self.t71 = JsonServerFactory("Timing71 stream", self._greet_t71)
        self.outline = views.TrackOutline()
        self.pit_log = views.PitLog()
        if fetch is None:
            fetch = agent_fetch(clock, f"carobama-pitwall ({self.options.source})")
        self.images = TrackImageCache(http_base(self.options.url), fetch, clock, self._image_ready)
        self.manifest: dict[str, Any] | None = None
        self.served_by_framework = False
        self.web_port: int | None = None
        self.t71_port: int | None = None
        self._resource: PitWallResource | None = None
        self._listening: list[Any] = []
        self._loop: task.LoopingCall | None = None
        self._focus: dict[JsonClient, tuple[str, tuple]] = {}
        self._positions_key: tuple | None = None
        self._outline_sent: tuple[int, float] = (-1, 0.0)
        self._map_sent: dict[str, Any] | None = None
        self._last_health = 0.0
        self._last_t71_state: bytes | None = None
        self._attach()

    # ----- wiring ----------------------------------------------------------------------------

    def _attach(self) -> None:
        add_publisher = getattr(self.service, "add_publisher", None)
        if add_publisher is not None:
            add_publisher(self)
        else:  # the original framework: observe publish() itself
            original = self.service.publish

            def publish(topic, message, options=None):
                original(topic, message, options)
                data = message.serialise() if hasattr(message, "serialise") else message
                self.publish(topic, data, False)

            self.service.publish = publish
        listeners = getattr(self.service, "feed_listeners", None)
        if listeners is not None:
            listeners.append(self.on_feed_events)

    def resource(self) -> PitWallResource:
        """The page's HTTP resource tree (served by the framework's standalone port when asked)."""
        if self._resource is None:
            self._resource = PitWallResource(self, UpgradeResource(self.page))
        return self._resource

    def framework_resource(self) -> PitWallResource:
        """The resource for the framework's ``getWebResource()`` hook; marks the page as served."""
        self.served_by_framework = True
        return self.resource()

    def start(self) -> None:
        """Open the web port (unless the framework serves the page) and the t71 port; start ticking."""
        reactor = self.clock
        interface = getattr(self.service.args, "listen", None) or "127.0.0.1"
        uuid = self.service.uuid
        if self.served_by_framework:
            self.web_port = getattr(self.service, "standalone_port", None)
        else:
            site = QuietSite(self.resource())
            site.noisy = False
            site.displayTracebacks = False
            listening = reactor.listenTCP(self.options.web_port, site, interface=interface)
            self._listening.append(listening)
            self.web_port = listening.getHost().port
        if self.web_port is not None:
            host = "127.0.0.1" if interface in ("0.0.0.0", "::", "") else interface
            print(f"Pit wall page for uuid:{uuid} at http://{host}:{self.web_port}/", file=sys.stderr,
                  flush=True)
            log.info("Pit wall page on {interface} port {port}", interface=interface, port=self.web_port)
        if self.options.t71_port is not None:
            listening = reactor.listenTCP(self.options.t71_port, self.t71, interface=interface)
            self._listening.append(listening)
            self.t71_port = listening.getHost().port
            print(f"Timing71 stream (t71) for uuid:{uuid} listening on port:{self.t71_port}",
                  file=sys.stderr, flush=True)
            log.info("Modern Timing71 stream on {interface} port {port}", interface=interface,
                     port=self.t71_port)
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(POSITION_INTERVAL, now=False)

    def stop(self) -> Any:
        """Stop ticking and listening (reactor shutdown)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        listening, self._listening = self._listening, []
        return DeferredList([maybeDeferred(port.stopListening) for port in listening])

    # ----- the framework's publications --------------------------------------------------------

    def publish(self, topic: str, message: Any, retain: bool = False) -> None:
        """Publisher interface: the framework published ``message`` on ``topic``."""
        if not isinstance(message, dict):
            return
        if topic == CONTROL_CHANNEL:
            if message.get("msgClass") == SERVICE_REGISTRATION and isinstance(message.get("payload"), dict):
                self._manifest_changed(message["payload"])
        elif topic.startswith("livetiming.service."):
            self._state_changed()
        elif topic.startswith("livetiming.analysis/"):
            key = topic.rsplit("/", 1)[-1]
            self.page.broadcast({"type": "analysis", "key": key, "data": message.get("payload")},
                                kind=f"analysis:{key}")

    def _current_manifest(self, greeting: JsonClient | None = None) -> dict[str, Any] | None:
        """The manifest in force (brought up to date first; ``greeting`` is greeted separately)."""
        self._sync_manifest(exclude=greeting)
        if self.manifest is None:
            try:
                self.manifest = self.service._createServiceRegistration()
            except Exception:
                return None
        return self.manifest

    def _manifest_changed(self, manifest: dict[str, Any], exclude: JsonClient | None = None) -> None:
        if manifest == self.manifest:
            return  # republished for a new legacy client: pages and t71 clients have it
        self.manifest = manifest
        self.page.broadcast({"type": "manifest", "manifest": manifest}, kind="manifest", exclude=exclude)
        self.t71.broadcast({"type": "MANIFEST_UPDATE", "manifest": views.modern_manifest(manifest)},
                           kind="manifest", exclude=exclude)

    def _state_message(self) -> dict[str, Any]:
        return {"type": "state", "state": self.service.state, "team": views.team_numbers(self._model()),
                "now": self.clock.seconds()}

    def _sync_manifest(self, exclude: JsonClient | None = None) -> None:
        """Send a new manifest before a state whose columns it does not describe yet.

        The framework publishes manifests up to a second late (coalesced); the page and the t71
        stream get the new column spec first, so rows always line up with their headings.
        """
        try:
            columns = [list(getattr(column, "value", column)) for column in self.service.getColumnSpec()]
        except Exception:
            return
        if self.manifest is not None and self.manifest.get("colSpec") == columns:
            return
        try:
            manifest = self.service._createServiceRegistration()
        except Exception:
            return
        self._manifest_changed(manifest, exclude)

    def _state_changed(self) -> None:
        if self.page.clients or self.t71.clients:
            self._sync_manifest()
        if self.page.clients:
            self.page.broadcast(self._state_message(), kind="state")
            self._push_details()
        if self.t71.clients:
            self._send_t71_state(None)

    def _send_t71_state(self, client: JsonClient | None) -> None:
        state = self.service.state
        key = encode({"cars": state.get("cars"), "session": state.get("session"),
                      "messages": state.get("messages"), "highlight": state.get("highlight")})
        if client is None and key == self._last_t71_state:
            return  # "on change": an unchanged republication is not sent again
        self._last_t71_state = key
        message = {"type": "STATE_UPDATE", "state": views.modern_state(state, time.time())}
        if client is None:
            self.t71.broadcast(message, kind="state")
        else:
            client.send_json(message, kind="state")

    # ----- the feed --------------------------------------------------------------------------

    def _model(self):
        return self.service.feed.model

    def on_feed_events(self, events: list, now: float) -> None:
        """Events of one upstream frame: collisions flash on the map, pit stops are logged."""
        model = self._model()
        changed = self.pit_log.observe(events, model)
        if changed:
            self._push_details(changed)
        if self.page.clients:
            for mark in views.collision_marks(events, model):
                self.page.broadcast({"type": "collision", **mark})

    # ----- the page --------------------------------------------------------------------------

    def _greet_page(self, client: JsonClient) -> None:
        client.send_json({"type": "hello", "uuid": self.service.uuid,
                          "version": getattr(self.service, "getVersion", lambda: "")(),
                          "teamTag": self.options.team})
        manifest = self._current_manifest(greeting=client)
        if manifest is not None:
            client.send_json({"type": "manifest", "manifest": manifest}, kind="manifest")
        client.send_json(self._state_message(), kind="state")
        analyser = getattr(self.service, "analyser", None)
        if analyser is not None:
            try:
                for key, data in (analyser.get_current_state() or {}).items():
                    client.send_json({"type": "analysis", "key": key, "data": data})
            except Exception:
                log.failure("Could not send the analysis to a new page")
        client.send_json(self._map_message(), kind="map")
        client.send_json(self._positions_message(), kind="positions")
        client.send_json(self._health_message(), kind="health")

    def _page_message(self, client: JsonClient, message: dict) -> None:
        if message.get("type") == "focus":
            car = message.get("car")
            if car is None:
                self._focus.pop(client, None)
                return
            number = str(car)[:16]
            self._focus[client] = (number, ())
            self._push_details({number}, only=client)

    def _push_details(self, cars: set[str] | None = None, only: JsonClient | None = None) -> None:
        """Send the focused car's detail to each client whose car changed."""
        if not self._focus:
            return
        model = self._model()
        for client, (number, sent) in list(self._focus.items()):
            if client not in self.page.clients:
                del self._focus[client]
                continue
            if only is not None and client is not only:
                continue
            if cars is not None and number not in cars and only is None:
                continue
            signature = views.detail_signature(model, number, self.pit_log)
            if signature == sent and only is None:
                continue
            self._focus[client] = (number, signature)
            client.send_json({"type": "car", "car": number,
                              "detail": views.car_detail(model, number, self.pit_log)}, kind="car")

    def track_image(self) -> bytes | None:
        """The cached map image of the current track (for ``/pitwall/track.png``)."""
        track_map = self._model().session.track_map
        return self.images.get(track_map.image if track_map is not None else None)

    def _image_ready(self, path: str) -> None:
        self._send_map(force=True)

    def _map_message(self) -> dict[str, Any]:
        model = self._model()
        track_map = model.session.track_map
        image_url = None
        if track_map is not None and track_map.image:
            self.images.want(track_map.image)
            if self.images.get(track_map.image) is not None:
                image_url = f"/pitwall/track.png?key={zlib.crc32(track_map.image.encode()):08x}"
        self._outline_sent = (self.outline.version, self.clock.seconds())
        return {"type": "map", "map": views.map_info(model, image_url), "outline": self.outline.view()}

    def _send_map(self, force: bool = False) -> None:
        if not self.page.clients:
            return
        message = self._map_message()
        if force or message["map"] != self._map_sent:
            self._map_sent = message["map"]
            self.page.broadcast(message, kind="map")

    def _positions_message(self) -> dict[str, Any]:
        return {"type": "positions", "t": self.clock.seconds(), "cars": views.positions(self._model())}

    def _health_message(self) -> dict[str, Any]:
        summary = getattr(self.service, "connection_summary", None)
        upstream = summary() if summary is not None else {"state": "connected", "lastFrameAgo": None}
        return {"type": "health", "upstream": upstream}

    def tick(self) -> None:
        """Every 0.2 s: learn the outline; with pages connected, push positions, map and health."""
        try:
            model = self._model()
            self.outline.observe(model)
            if not self.page.clients:
                return
            now = self.clock.seconds()
            key = tuple((e.number, e.x, e.z, e.connected, e.in_pits) for e in model.entries)
            if key != self._positions_key:
                self._positions_key = key
                self.page.broadcast(self._positions_message(), kind="positions")
            version, sent_at = self._outline_sent
            map_now = views.map_info(model, None)
            if (self._map_sent is None or map_now["key"] != self._map_sent.get("key")
                    or map_now["params"] != self._map_sent.get("params")):
                self._send_map(force=True)
            elif version != self.outline.version and now - sent_at >= OUTLINE_INTERVAL:
                self._send_map(force=True)
            if now - self._last_health >= HEALTH_INTERVAL:
                self._last_health = now
                self.page.broadcast(self._health_message(), kind="health")
        except Exception:
            log.failure("Pit wall tick failed")

    # ----- the modern Timing71 stream ----------------------------------------------------------

    def _greet_t71(self, client: JsonClient) -> None:
        manifest = self._current_manifest(greeting=client)
        if manifest is not None:
            client.send_json({"type": "MANIFEST_UPDATE", "manifest": views.modern_manifest(manifest)},
                             kind="manifest")
        self._send_t71_state(client)
