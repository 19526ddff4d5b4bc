"""The --database option (CAROBAMA_DATABASE, default SQLite file in $LIVETIMING_DATA_DIR, none = off)."""

from __future__ import annotations

import os

import pytest

from livetiming.service.plugins.carobama.options import parse_options

URL = ["--url", "ws://127.0.0.1:9/api/race-control"]


def test_the_default_store_is_carobama_sqlite_in_the_data_folder(tmp_path):
    options = parse_options(URL, environ={"LIVETIMING_DATA_DIR": str(tmp_path)})
    assert options.database == f"sqlite:///{tmp_path / 'carobama.sqlite'}"


def test_without_a_data_folder_the_store_is_in_the_working_directory():
    options = parse_options(URL, environ={})
    assert options.database == "sqlite:///" + os.path.abspath("carobama.sqlite")


def test_the_environment_and_the_command_line_choose_the_store():
    env = {"CAROBAMA_DATABASE": "postgresql+psycopg://postgres@127.0.0.1/timing"}
    assert parse_options(URL, environ=env).database == env["CAROBAMA_DATABASE"]
    assert parse_options([*URL, "--database", "sqlite:///x.sqlite"], environ=env).database == "sqlite:///x.sqlite"


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_none_turns_storage_off(value):
    assert parse_options([*URL, "--database", value], environ={}).database is None
    assert parse_options(URL, environ={"CAROBAMA_DATABASE": value}).database is None


@pytest.mark.parametrize("value,needle", [
    ("mysql://u@h/db", "only sqlite and postgresql"),
    ("carobama.sqlite", "SQLAlchemy URL"),
    ("sqlite://", "needs a file"),
    ("postgresql+nosuchdriver://u@h/db", "unknown database driver"),
    ("postgresql+psycopg2://u@h/db", "not installed"),
])
def test_a_bad_store_url_exits_2_with_one_line(value, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_options([*URL, "--database", value], environ={})
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
