"""Hypothesis strategies of hostile upstream frames for both feeds (issue 9 part 6).

A hostile frame starts from a real frame of a capture fixture (so most of its structure is right)
and gets mutations drawn by hypothesis: keys removed, extra keys added, values replaced by hostile
ones (wrong types, NaN/Infinity, huge numbers and strings, deep nesting). Other frames are not JSON
at all: deep bracket nesting (RecursionError territory), truncated UTF-8 (bytes frames), random
text, huge numeric literals. The JSON text is written with ``allow_nan=True``, as a sloppy server
would: Python's json module reads ``NaN`` and ``Infinity`` back.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from tests.support.stores import frames_of

#: Cap of generated huge strings (characters): big enough to hurt a careless parser, small enough
#: to keep ten thousand frames fast.
HUGE_TEXT = 200_000

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63), 10**30, 255, 65535]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]),
    st.text(max_size=24),
    st.sampled_from(["", "0001-01-01T00:00:00Z", "2024-13-45T99:99:99Z", "99:99.999", "-1:00.000",
                     "1 lap", "NaN", "\u0000", "\ud800", "<script>alert(1)</script>",
                     "'; DROP TABLE laps;--"]),
    st.integers(min_value=10_000, max_value=HUGE_TEXT).map(lambda n: "x" * n),
)

#: A hostile JSON value: a scalar, or lists and objects of them a few levels deep.
hostile_value = st.recursive(
    _scalar,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=8,
)

#: One mutation: (kind, where, what). ``where`` picks a node of the frame's tree (by walk order,
#: modulo its size); ``what`` is the hostile value or key used.
mutation = st.tuples(
    st.sampled_from(["replace", "drop", "add", "deepen", "inflate"]),
    st.integers(min_value=0, max_value=10_000),
    hostile_value,
    st.text(max_size=8),
)


def _nodes(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, node) of a decoded JSON value, parents before children."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _nodes(child, path + (index,))


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return root


def _drop(root: Any, path: tuple) -> Any:
    if not path:
        return root
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return root


def mutate(frame: Any, mutations: list[tuple[str, int, Any, str]]) -> Any:
    """Apply ``mutations`` (from :data:`mutation`) to a decoded frame (changed in place)."""
    for kind, where, shared_value, key in mutations:
        value = copy.deepcopy(shared_value)  # hypothesis may hand the same object out again
        nodes = list(_nodes(frame))
        path, node = nodes[where % len(nodes)]
        if kind == "replace":
            frame = _set(frame, path, value)
        elif kind == "drop":
            frame = _drop(frame, path)
        elif kind == "add" and isinstance(node, dict):
            node[key] = value
        elif kind == "add" and isinstance(node, list):
            node.append(value)
        elif kind == "inflate":  # every text below the node becomes huge
            for inner_path, inner in list(_nodes(node, path)):
                if isinstance(inner, str):
                    frame = _set(frame, inner_path, (inner or "x") * (1 + where * 10 // max(1, len(inner))))
        elif kind == "deepen":
            nested: Any = node
            for _ in range(50 + where % 200):
                nested = [nested]
            frame = _set(frame, path, nested)
    return frame


def deep_text(depth: int, opener: str) -> str:
    """``depth`` levels of nested arrays or objects, maybe unterminated (a RecursionError bait)."""
    if opener == "[":
        return "[" * depth + "]" * depth
    if opener == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"EventType":200,"Message":' + "[" * depth  # never closed


def truncated_utf8(text: str, cut: int) -> bytes:
    """A frame's bytes with a multi-byte character cut in the middle (invalid UTF-8)."""
    data = (text[: cut % (len(text) + 1)] + "é€𝄞").encode("utf-8")
    return data[: len(data) - 1 - cut % 3]


class Templates:
    """Real frames of a feed's capture fixtures, decoded once, to mutate."""

    def __init__(self, captures: list[str]):
        self.texts = [text for name in captures for _t, text in frames_of(name)]
        self.decoded = []
        by_kind: dict[Any, list[int]] = {}
        for text in self.texts:
            try:
                decoded = json.loads(text)
            except ValueError:
                continue
            kind = decoded.get("EventType") if isinstance(decoded, dict) else None
            by_kind.setdefault(kind if isinstance(kind, int) else None, []).append(len(self.decoded))
            self.decoded.append(decoded)
        #: Frame indexes per EventType (BMI: one kind), so rare events are mutated as often as
        #: the car updates that make up most of a capture.
        self.kinds = list(by_kind.values())

    def frames(self) -> st.SearchStrategy[str | bytes]:
        """A strategy of hostile frames (text or bytes) built from these templates."""
        index = st.integers(min_value=0, max_value=len(self.texts) - 1)
        decoded = st.sampled_from(self.kinds).flatmap(st.sampled_from)
        mutated = st.builds(
            lambda i, muts: json.dumps(mutate(json.loads(json.dumps(self.decoded[i])), muts),
                                       allow_nan=True),
            decoded, st.lists(mutation, min_size=1, max_size=4))
        return st.one_of(
            mutated, mutated, mutated, mutated,  # most frames: structurally close to real ones
            st.builds(deep_text, st.integers(min_value=500, max_value=200_000), st.sampled_from("[{E")),
            st.builds(lambda i, cut: truncated_utf8(self.texts[i], cut), index,
                      st.integers(min_value=0, max_value=10_000)),
            st.text(max_size=60),
            st.builds(lambda digits: "1" * digits, st.integers(min_value=1, max_value=10_000)),
            st.builds(lambda i: self.texts[i].replace("}", "", 1), index),  # truncated JSON
        )
