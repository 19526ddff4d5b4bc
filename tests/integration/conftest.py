"""Fixtures for tests that run the real service as a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO


@pytest.fixture(scope="session")
def legacy_plugin_path(tmp_path_factory) -> str:
    """A plugin package written for the original API, pip-installed into its own folder.

    The folder is put on PYTHONPATH, so the plugin joins the
    ``livetiming.service.plugins`` namespace from outside the venv, as a
    separately installed distribution does.
    """
    target = tmp_path_factory.mktemp("legacy_plugin_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(REPO / "tests" / "fixtures" / "legacy_plugin")],
        check=True, capture_output=True,
    )
    return str(target)


@pytest.fixture
def service_env(tmp_path, legacy_plugin_path) -> dict:
    """Environment for a service subprocess: private state/log dirs and the legacy plugin."""
    return {
        "PYTHONPATH": legacy_plugin_path,
        "LIVETIMING_STATE_DIR": str(tmp_path / "state"),
        "LIVETIMING_LOG_DIR": str(tmp_path / "logs"),
        "LIVETIMING_ANALYSIS_DIR": str(tmp_path / "analysis"),
        "LIVETIMING_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "LIVETIMING_DATA_DIR": str(tmp_path / "data"),
    }
