"""The fault suite's own plumbing: figures are saved only for passing tests."""

import json


def test_figures_are_saved_as_json(tmp_path, monkeypatch):
    from tests.faults.conftest import Figures

    monkeypatch.setenv("CAROBAMA_RELIABILITY_DIR", str(tmp_path))
    figures = Figures("tests/faults/test_x.py::test_y[a]", soak=False)
    figures["reconnect_max_s"] = 1.25
    saved = json.loads(figures.save().read_text())
    assert saved["figures"] == {"reconnect_max_s": 1.25} and saved["soak"] is False
