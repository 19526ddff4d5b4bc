"""The track-map image end to end: replay server (``--content``) → service → page in Chromium.

The replay server plays an Emperor capture whose snapshot carries map parameters for
``ks_brands_hatch/indy`` and, like the real manager, serves its content folder over HTTP on the
same port. The service fetches ``/content/tracks/ks_brands_hatch/indy/map.png`` from there, the
page shows it as the map's background, and the browser itself never contacts the upstream host
(every request it makes goes to the service). Every wait has a deadline.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from tests.integration.test_pitwall_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    browser,
    page,
    started,
)
from tests.support.pitwall import CAPTURES, PitWallService, Replay

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need /usr/bin/chromium")

MAP_PATH = "/content/tracks/ks_brands_hatch/indy/map.png"


def tiny_png(width: int, height: int, rgb: tuple[int, int, int] = (30, 110, 60)) -> bytes:
    """A valid, single-colour RGB PNG of the given size (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))


def test_service_fetches_the_map_image_from_the_upstream_and_the_page_shows_it(
        page, started, service_env, tmp_path):  # noqa: F811
    image = tiny_png(799, 592)  # the size the capture's TrackMapData gives
    content = tmp_path / "content"
    target = content / Path(MAP_PATH.removeprefix("/content/"))
    target.parent.mkdir(parents=True)
    target.write_bytes(image)
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "2", "--content", str(content))
    started.append(replay)
    service = PitWallService(replay.url, env=service_env)
    started.append(service)

    requests: list[str] = []
    responses: dict[str, int] = {}
    page.on("request", lambda request: requests.append(request.url))
    page.on("websocket", lambda socket: requests.append(socket.url))
    page.on("response", lambda response: responses.__setitem__(response.url, response.status))
    page.goto(service.page_url)
    try:
        page.wait_for_selector('#map[data-mode="image"] .background image', state="attached", timeout=30_000)
    except Exception as error:
        raise AssertionError(f"the page never showed the map image\nreplay:\n{replay.output()[-3000:]}\n"
                             f"service:\n{service.output()[-3000:]}") from error
    href = page.get_attribute("#map .background image", "href")
    assert href is not None and href.startswith("/pitwall/track.png")
    size = page.eval_on_selector("#map .background image",
                                 "i => [i.getAttribute('width'), i.getAttribute('height')]")
    assert size == ["799", "592"]
    # The browser loaded the image from the service, and got the upstream's bytes.
    image_url = service.page_url.rstrip("/") + href
    page.wait_for_function("(url) => performance.getEntriesByName(url).length > 0", arg=image_url,
                           timeout=10_000)
    assert responses.get(image_url) == 200
    with urlopen(image_url, timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read() == image
    # The service fetched it from the replay server (logged there)...
    replay.wait_for_line(re.escape(f"replay HTTP GET {MAP_PATH}"), stream="stderr", timeout=10)
    # ...and the browser only ever talked to the service.
    page_host = urlsplit(service.page_url).netloc
    hosts = {urlsplit(url).netloc for url in requests if not url.startswith("data:")}
    assert hosts == {page_host}, f"the page contacted {hosts - {page_host}}"
    assert not any(f":{replay.port}" in url for url in requests)
    assert not page.problems.errors and not page.problems.dialogs
