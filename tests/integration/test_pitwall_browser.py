"""The pit-wall page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Against the replay of Emperor captures (and the BMI demo for the screenshot of another feed): the
table matches the capture's truth, the map has one moving marker per car, focusing a car shows its
lap chart, the banner follows the upstream and the page's own socket, and HTML in names is text.
Screenshots go to ``docs/screenshots/latest/`` (not committed; ``docs/screenshots/`` keeps the one
the README shows). Every wait has a deadline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetiming.service.plugins.carobama.demo import demo_capture
from tests.support.pitwall import (
    CAPTURES,
    XSS_CHAT,
    XSS_NAME,
    PitWallService,
    Replay,
    expected_table,
    make_xss_capture,
    truth_of,
)
from tests.support.processes import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOTS = REPO / "docs" / "screenshots" / "latest"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium; "
           ".ci/run installs it)",
)

# The rows of the table as [car, Pos, Laps, Last, Best, Driver, Pits] texts.
ROWS_JS = """() => [...document.querySelectorAll('#table tbody tr')].map(row => {
  const cell = (title) => {
    const td = row.querySelector(`td[data-col="${title}"]`);
    return td ? td.textContent : null;
  };
  return [row.dataset.car, ...['Pos', 'Laps', 'Last', 'Best', 'Driver', 'Pits'].map(cell)];
})"""
MARKERS_JS = """() => [...document.querySelectorAll('#map g.car')].map(
  g => [g.dataset.car, Number(g.dataset.x), Number(g.dataset.y), g.classList.contains('pit')])"""


def lap_time(seconds: float | None) -> str:
    """A lap time as the page shows it (Timing71's format; zero as 0)."""
    if seconds is None:
        return ""
    if seconds == 0:
        return "0"
    if seconds < 60:
        return f"{seconds:.3f}"
    minutes = int(seconds // 60)
    return f"{minutes}:{seconds - minutes * 60:06.3f}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageProblems:
    """Script errors and dialogs seen by a page (none are expected)."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    tab = context.new_page()
    tab.problems = PageProblems(tab)
    # Count collision flashes as they are added (each lasts only 3 s).
    tab.add_init_script("""
      window.__collisions = 0;
      new MutationObserver(records => { for (const r of records) for (const n of r.addedNodes)
        if (n.classList && n.classList.contains('collision')) window.__collisions += 1; })
        .observe(document, {subtree: true, childList: true});
    """)
    yield tab
    context.close()


@pytest.fixture
def started():
    processes = []
    yield processes
    for proc in reversed(processes):
        proc.stop()


def run(started, service_env, capture, *service_args, speed="0", port=0):
    replay = Replay(capture, "--speed", speed, port=port)
    started.append(replay)
    service = PitWallService(replay.url, *service_args, env=service_env)
    started.append(service)
    return replay, service


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_table_shows_every_car_with_the_right_laps_and_best_laps(page, started, service_env):
    truth = truth_of("race-v2x")
    _replay, service = run(started, service_env, CAPTURES / "race-v2x.jsonl", "--team", "YORK")
    page.goto(service.page_url)
    expected = [[row["Num"], str(position), str(row["Laps"]), lap_time(row["Last"]), lap_time(row["Best"]),
                 row["Driver"]] for position, row in enumerate(expected_table(truth), start=1)]
    try:
        page.wait_for_function(f"""(expected) => JSON.stringify(({ROWS_JS})().map(r => r.slice(0, 6)))
                                   === JSON.stringify(expected)""", arg=expected, timeout=40_000)
    except Exception as error:
        raise AssertionError(f"table never matched the truth:\nexpected {expected}\n"
                             f"shown {page.evaluate(ROWS_JS)}\n{service.output()[-6000:]}") from error
    rows = page.evaluate(ROWS_JS)
    pits = {car["number"]: car["pits"] for car in truth["cars"]}
    assert [row[6] for row in rows] == [str(pits[row[0]] or 0) for row in rows], "0 pits shows as 0"
    assert page.text_content("#series") == "York FS League | Sunday Cup"
    assert page.get_attribute("#header", "data-flag") == "chequered"
    headings = page.eval_on_selector_all("#table thead th", "ths => ths.map(th => th.textContent)")
    assert headings[:3] == ["Pos", "Num", "State"] and "Best" in headings
    team_rows = page.eval_on_selector_all("#table tbody tr.team", "rows => rows.map(r => r.dataset.car)")
    assert set(team_rows) == {car["number"] for car in truth["cars"]
                              if any(d["name"].endswith("-YORK") for d in car["drivers"]
                                     if d["guid"] == car["current_driver"])}
    best = min(row["Best"] for row in expected_table(truth))
    sb_cells = page.eval_on_selector_all('#table td[data-col="Best"].flag-sb',
                                         "tds => tds.map(t => t.textContent)")
    assert sb_cells == [lap_time(best)]
    messages = page.eval_on_selector_all("#messages li .text", "spans => spans.map(s => s.textContent)")
    assert any("contact with" in text for text in messages)
    assert not page.problems.errors and not page.problems.dialogs


def test_map_markers_move_focus_shows_the_lap_chart_and_collisions_flash(page, started, service_env):
    _replay, service = run(started, service_env, Path(demo_capture("emperor")), "--team", "YORK",
                           speed="20")
    page.goto(service.page_url)
    # One marker per car on track: at the start of the demo every entry is on the grid.
    page.wait_for_function("""() => {
      const rows = [...document.querySelectorAll('#table tbody tr')].map(r => r.dataset.car).sort();
      const cars = [...document.querySelectorAll('#map g.car')].map(g => g.dataset.car).sort();
      return rows.length === 20 && JSON.stringify(rows) === JSON.stringify(cars);
    }""", timeout=40_000)
    before = {car: (x, y) for car, x, y, _pit in page.evaluate(MARKERS_JS)}
    assert len(before) == 20
    page.wait_for_function(f"""(before) => {{
      const moved = ({MARKERS_JS})().filter(([car, x, y]) => before[car]
        && Math.hypot(x - before[car][0], y - before[car][1]) > 1);
      return moved.length >= 10;
    }}""", arg={car: list(xy) for car, xy in before.items()}, timeout=30_000)
    # No image from the replay server: the outline learned from the cars is drawn instead.
    page.wait_for_selector('#map[data-mode="outline"] .outline path.track', timeout=30_000)
    team = page.eval_on_selector_all("#map g.car.team", "gs => gs.map(g => g.dataset.car)")
    team_rows = page.eval_on_selector_all("#table tbody tr.team", "rows => rows.map(r => r.dataset.car)")
    assert team and set(team) <= set(team_rows)

    # Focus the leader once it has laps: lap chart, laps table and intervals.
    page.wait_for_function("""() => {
      const laps = document.querySelector('#table tbody tr td[data-col="Laps"]');
      return laps && Number(laps.textContent) >= 3;
    }""", timeout=90_000)
    leader = page.get_attribute("#table tbody tr:first-child", "data-car")
    page.click("#table tbody tr:first-child")
    page.wait_for_selector("#focus:not([hidden])", timeout=5_000)
    page.wait_for_function("() => document.querySelectorAll('#lapchart circle.lap').length >= 3",
                           timeout=20_000)
    chart = page.eval_on_selector_all("#lapchart circle.lap", "cs => cs.map(c => Number(c.dataset.lap))")
    laps = page.eval_on_selector_all("#focus-laps tbody tr", "rs => rs.map(r => Number(r.dataset.lap))")
    assert sorted(chart) == sorted(laps) and chart == sorted(chart)
    assert page.get_attribute("#focus", "data-car") == leader
    assert page.text_content("#focus-ahead") == "leader"
    assert page.text_content("#focus-behind-car").startswith("#")
    focused = "node => node.classList.contains('focused')"
    assert page.eval_on_selector(f'#table tbody tr[data-car="{leader}"]', focused)
    assert page.eval_on_selector(f'#map g.car[data-car="{leader}"]', focused)
    page.wait_for_function("() => window.__collisions >= 1", timeout=60_000)
    screenshot(page, "pitwall-emperor")
    page.click("#focus-close")
    page.wait_for_selector("#focus[hidden]", state="attached", timeout=5_000)
    assert not page.problems.errors and not page.problems.dialogs


def test_banner_follows_the_upstream_and_the_pages_own_socket(page, started, service_env):
    replay, service = run(started, service_env, CAPTURES / "race-v2x.jsonl", speed="2")
    page.goto(service.page_url)
    page.wait_for_selector("#table tbody tr", timeout=30_000)
    assert page.is_hidden("#banner")

    replay.kill()
    page.wait_for_selector('#banner[data-kind="upstream"]:not([hidden])', timeout=20_000)
    assert "Timing feed" in page.text_content("#banner")
    started.append(Replay(CAPTURES / "race-v2x.jsonl", "--speed", "2", port=replay.port))
    page.wait_for_selector("#banner[hidden]", state="attached", timeout=20_000)

    # The service goes away: the page says so and reconnects by itself when it is back.
    port = service.port
    service.stop()
    page.wait_for_selector('#banner[data-kind="socket"]:not([hidden])', timeout=15_000)
    assert "reconnecting" in page.text_content("#banner")
    again = PitWallService(replay_url(started), env={**service_env, "LIVETIMING_STANDALONE_PORT": str(port)})
    started.append(again)
    page.wait_for_selector("#banner[hidden]", state="attached", timeout=20_000)
    page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length === 3", timeout=20_000)
    assert not page.problems.dialogs


def replay_url(started) -> str:
    """URL of the newest replay server in ``started``."""
    return [proc for proc in started if isinstance(proc, Replay)][-1].url


def test_html_in_names_and_messages_is_shown_as_text(page, started, service_env, tmp_path):
    capture = make_xss_capture(tmp_path / "xss.jsonl")
    _replay, service = run(started, service_env, capture, speed="4")
    page.goto(service.page_url)
    page.wait_for_function(f"""() => [...document.querySelectorAll('#table td[data-col="Driver"]')]
                               .some(td => td.textContent === {json.dumps(XSS_NAME)})""", timeout=30_000)
    page.wait_for_function(f"""() => [...document.querySelectorAll('#messages .text')]
                               .some(s => s.textContent.includes({json.dumps(XSS_CHAT)}))""", timeout=30_000)
    assert page.text_content("#series") == "<i>Hostile</i> League"
    page.click('#table tbody tr:has(td[data-col="Driver"]:text-is("<img src=x onerror=alert(1)>"))')
    page.wait_for_selector("#focus:not([hidden])", timeout=5_000)
    assert XSS_NAME in page.text_content("#focus-title")
    injected = page.evaluate("""() => ({
      img: document.querySelectorAll('img').length,
      script: document.querySelectorAll('body script').length,
      bold: document.querySelectorAll('b, i').length,
    })""")
    assert injected == {"img": 0, "script": 0, "bold": 0}
    screenshot(page, "pitwall-xss")
    assert page.problems.dialogs == []
    assert not page.problems.errors


def test_bmi_demo_table_from_its_own_columns(page, started, service_env):
    """Another feed, other columns: the table follows the manifest (screenshot of the BMI demo)."""
    capture = Path(demo_capture("bmi")) if "bmi" in _demos() else None
    if capture is None:
        pytest.skip("this version has no BMI demo capture")
    replay = Replay(capture, "--speed", "20", path="")
    started.append(replay)
    service = PitWallService(replay.url, "--source", "bmi", "--venue", "Demo Karting", env=service_env)
    started.append(service)
    page.goto(service.page_url)
    page.wait_for_function("() => document.querySelectorAll('#table tbody tr').length >= 3", timeout=60_000)
    headings = page.eval_on_selector_all("#table thead th", "ths => ths.map(th => th.textContent)")
    assert headings[0] == "Pos" and "Num" in headings
    page.wait_for_function("""() => [...document.querySelectorAll('#table td[data-col="Laps"]')]
                              .some(td => Number(td.textContent) >= 2)""", timeout=60_000)
    assert page.text_content("#series") == "Demo Karting"
    screenshot(page, "pitwall-bmi")
    assert not page.problems.errors and not page.problems.dialogs


def _demos() -> dict:
    from livetiming.service.plugins.carobama.demo import DEMOS

    return DEMOS
