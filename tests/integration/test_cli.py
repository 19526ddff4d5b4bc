"""The livetiming-service and livetiming-plugins commands."""

from __future__ import annotations

import subprocess

from tests.support.processes import BIN, ServiceProcess
from tests.support.wsclient import StandaloneClient


def run(argv, env=None, timeout=60):
    import os

    full_env = {**os.environ, **(env or {})}
    full_env.pop("LIVETIMING_ROUTER", None)
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)


def test_unknown_plugin_exits_2_with_one_line(service_env):
    result = run([str(BIN / "livetiming-service"), "no_such_plugin_xyz", "--standalone"], service_env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no_such_plugin_xyz" in lines[0]


def test_missing_plugin_name_exits_2(service_env):
    result = run([str(BIN / "livetiming-service")], service_env)
    assert result.returncode == 2


def test_help_shows_framework_options(service_env):
    result = run([str(BIN / "livetiming-service"), "--help"], service_env)
    assert result.returncode == 0
    for option in ("--initial-state", "--recording-file", "--standalone", "--disable-analysis",
                   "--masquerade", "--no-write-state", "--uuid", "--log-format"):
        assert option in result.stdout


def test_livetiming_plugins_lists_installed_plugins(service_env):
    result = run([str(BIN / "livetiming-plugins")], service_env)
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "legacy_example" in rows and "0.3.0" in rows["legacy_example"]
    assert "Example plugin written against the original" in rows["legacy_example"]
    assert "carobama" in rows


def test_full_dotted_plugin_path_and_prefix_are_accepted(service_env):
    for name in ("livetiming.service.plugins.legacy_example",):
        proc = ServiceProcess(name, env=service_env)
        try:
            client = StandaloneClient(proc.url)
            assert client.recv()[0] == f"livetiming.service.{proc.uuid}"
            client.close()
        finally:
            proc.stop()


def test_json_log_format_writes_one_object_per_line(service_env):
    import json

    proc = ServiceProcess("legacy_example", "--log-format", "json", env=service_env)
    try:
        proc.wait_for_line(r'"message": "Standalone server for', stream="stdout")
    finally:
        proc.stop()
    records = [json.loads(line) for line in proc.stdout if line.startswith("{")]
    assert records and all({"time", "level", "namespace", "message"} <= set(r) for r in records)
    assert any(r.get("plugin") == "legacy_example" for r in records)
