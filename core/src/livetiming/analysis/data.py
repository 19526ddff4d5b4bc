"""The seven published analysis keys and their exact shapes (``timing71-wire.md`` §4.1).

Each ``get_*`` function builds one key's full value from the model;
``car_*`` functions build one car's entry for the per-car delta topics
(``lap/<num>``, ``stint/<num>``, ``car_messages/<num>``), which clients merge
into the full value with a shallow dict update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livetiming.analysis.model import AnalysisModel, Car


def get_static(model: AnalysisModel) -> dict:
    """``{num: [class, team, car]}``."""
    return {num: car.for_json() for num, car in model.cars.items()}


def get_driver(model: AnalysisModel) -> dict:
    """``{num: [driver names in the order first seen]}``."""
    return {num: list(car.drivers) for num, car in model.cars.items()}


def car_lap(car: Car, model: AnalysisModel) -> list:
    """``[current stint tuple or null, timestamp of the latest lap]`` for one car."""
    return [car.stint_tuple(car.current_stint, model.latest_timestamp), car.last_pass]


def get_lap(model: AnalysisModel) -> dict:
    """``{num: [current stint or null, last pass]}`` for every car."""
    return {num: car_lap(car, model) for num, car in model.cars.items()}


def car_stint(car: Car, model: AnalysisModel) -> list:
    """One car's completed stints as tuples."""
    return list(car.stint_data)


def get_stint(model: AnalysisModel) -> dict:
    """``{num: [completed stint tuples]}`` (every known car has a key)."""
    return {num: car_stint(car, model) for num, car in model.cars.items()}


def car_car_messages(car: Car, model: AnalysisModel) -> list:
    """One car's messages, oldest first, without pit in/out messages."""
    return list(car.messages)


def get_car_messages(model: AnalysisModel) -> dict:
    """``{num: [messages]}`` for every car."""
    return {num: car_car_messages(car, model) for num, car in model.cars.items()}


def get_messages(model: AnalysisModel) -> dict:
    """``{"messages": [...]}``: session messages (no car number), newest first."""
    return {"messages": list(model.messages)}


def get_session(model: AnalysisModel) -> dict:
    """``{currentTimestamp, flagStats, leaderLap}``."""
    return {
        "currentTimestamp": model.latest_timestamp,
        "flagStats": [list(period) for period in model.flag_periods],
        "leaderLap": model.leader_lap,
    }


#: Every key of a full dump, in publishing order.
MODULES: dict[str, Callable[[AnalysisModel], Any]] = {
    "static": get_static,
    "driver": get_driver,
    "messages": get_messages,
    "session": get_session,
    "lap": get_lap,
    "stint": get_stint,
    "car_messages": get_car_messages,
}

#: Builders of per-car entries, by the first segment of their topic.
PER_CAR: dict[str, Callable[[Car, AnalysisModel], Any]] = {
    "lap": car_lap,
    "stint": car_stint,
    "car_messages": car_car_messages,
}


def get_all(model: AnalysisModel) -> dict:
    """Every key's full value."""
    return {key: builder(model) for key, builder in MODULES.items()}


def get_key(model: AnalysisModel, key: str) -> Any:
    """The payload of a topic key: a full key (``lap``) or a per-car key (``lap/12``)."""
    if "/" in key:
        module, num = key.split("/", 1)
        car = model.cars.get(num)
        if car is None:
            return {}
        return {num: PER_CAR[module](car, model)}
    return MODULES[key](model)
