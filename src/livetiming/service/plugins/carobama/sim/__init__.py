"""Simulators of upstream timing feeds (invented data) for demos, fixtures and load tests.

- :mod:`.emperor`: the Emperor Servers / ACSM race-control websocket (``v1`` and ``v2x`` flavours).
- :mod:`.cli`: the ``carobama-simulate`` console script.
"""

from .emperor import EmperorSimulator, SessionSpec, build_race, read_capture, write_capture

__all__ = ["EmperorSimulator", "SessionSpec", "build_race", "read_capture", "write_capture"]
