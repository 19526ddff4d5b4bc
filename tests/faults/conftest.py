"""Fixtures for the fault-injection suite (issue 9, docs/RELIABILITY.md).

``make test`` runs the short forms; ``make soak`` passes ``--soak`` for the long ones. Each test
reports its measured figures through the ``figures`` fixture; they are written, one JSON file per
test, to ``$CAROBAMA_RELIABILITY_DIR`` (default ``.run/reliability``); docs/RELIABILITY.md quotes
them with the run they came from.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import legacy_plugin_path, service_env  # noqa: F401  (re-exported)
from tests.support.processes import REPO


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long forms of the fault-injection tests (make soak)")


#: Time limit of a soak-form test that has no ``timeout`` mark of its own. The suite's 120 s
#: default (pyproject.toml) suits the short forms; the soak repeats faults for minutes, and a limit
#: that fires mid-test is reported misleadingly (inside a hypothesis draw: FlakyStrategyDefinition).
SOAK_TIMEOUT = 900


def pytest_collection_modifyitems(config, items):
    """Under ``--soak``, give the fault tests without their own time limit ``SOAK_TIMEOUT``."""
    if not config.getoption("--soak"):
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SOAK_TIMEOUT))


@pytest.fixture(scope="session")
def soak(request) -> bool:
    """True under ``make soak``: tests use their long durations and repeat counts."""
    return bool(request.config.getoption("--soak"))


class Figures:
    """Named figures measured by one fault test, saved as JSON when the test passes."""

    def __init__(self, test_id: str, soak: bool):
        self.test_id = test_id
        self.soak = soak
        self.values: dict[str, Any] = {}

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def save(self) -> Path:
        """Write the figures to the reliability folder; returns the file."""
        folder = Path(os.environ.get("CAROBAMA_RELIABILITY_DIR", REPO / ".run" / "reliability"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", self.test_id) + ".json")
        path.write_text(json.dumps({
            "test": self.test_id, "soak": self.soak,
            "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "figures": self.values,
        }, indent=1, default=str), encoding="utf-8")
        return path


@pytest.fixture
def figures(request, soak):
    """Record figures with ``figures["reconnect_max_s"] = 1.3``; saved if the test passes."""
    recorded = Figures(request.node.nodeid, soak)
    yield recorded
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed and recorded.values:
        recorded.save()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
