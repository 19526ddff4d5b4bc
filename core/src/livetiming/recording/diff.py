"""Intra-frame diffs in the ``dictdiffer`` format, made fast for timing states.

Recordings store most frames as a diff against the previous frame. Readers
(the original framework's ``dictdiffer.patch`` and the Timing71 web app's
JavaScript port of it) expect exactly dictdiffer's output: a list of
``[op, path, payload]`` entries where ``op`` is ``change`` (payload
``[old, new]``), ``add`` or ``remove`` (payload ``[[key_or_index, value], ...]``,
list removals in descending index order), and ``path`` is ``""``, a dotted
string when every key is a string without a dot, or otherwise a list.

``dictdiffer.diff`` walks every value of every car on every frame; this
module produces the same entries but skips equal subtrees with one C-level
comparison, which matters for a 40-car table recorded every second. It also
reports when a diff removes list items, because the JavaScript patcher turns
a list removal into a hole (``null`` car row): the recorder writes a keyframe
instead of such an intra-frame.
"""

from __future__ import annotations

from typing import Any

_CONTAINERS = (dict, list, tuple)


def _path(node: list) -> str | list:
    for key in node:
        if type(key) is not str or "." in key:
            return list(node)
    return ".".join(node)


class DiffResult:
    """The entries of one diff and whether a reader would need a keyframe instead."""

    __slots__ = ("ops", "needs_keyframe")

    def __init__(self) -> None:
        self.ops: list[list] = []
        #: True when the diff removes list items or replaces the root object.
        self.needs_keyframe = False


def diff(first: Any, second: Any) -> DiffResult:
    """dictdiffer-compatible entries turning ``first`` into ``second``.

    Equality follows Python's ``==`` (as dictdiffer does), so ``1`` and
    ``1.0`` count as equal. Tuples are treated as lists (they become lists
    in JSON anyway).
    """
    result = DiffResult()
    _diff(first, second, [], result)
    return result


def _diff(a: Any, b: Any, node: list, result: DiffResult) -> None:
    ta = type(a)
    tb = type(b)
    if ta is dict and tb is dict:
        if a == b:
            return
        ops = result.ops
        for key, value in a.items():
            if key in b:
                other = b[key]
                if value is other:
                    continue
                node.append(key)
                _diff(value, other, node, result)
                node.pop()
        added = [[key, value] for key, value in b.items() if key not in a]
        if added:
            ops.append(["add", _path(node), added])
        removed = [[key, value] for key, value in a.items() if key not in b]
        if removed:
            ops.append(["remove", _path(node), removed])
        return
    if (ta is list or ta is tuple) and (tb is list or tb is tuple):
        if ta is tb and a == b:
            return
        la = len(a)
        lb = len(b)
        common = la if la < lb else lb
        for index in range(common):
            x = a[index]
            y = b[index]
            if x is y:
                continue
            tx = type(x)
            if tx is type(y):
                if x == y:
                    continue
                if tx in _CONTAINERS:
                    node.append(index)
                    _diff(x, y, node, result)
                    node.pop()
                    continue
                node.append(index)
                result.ops.append(["change", _path(node), [x, y]])
                node.pop()
                continue
            node.append(index)
            _diff(x, y, node, result)
            node.pop()
        if lb > common:
            result.ops.append(["add", _path(node), [[i, b[i]] for i in range(common, lb)]])
        if la > common:
            result.ops.append(["remove", _path(node),
                               [[i, a[i]] for i in range(la - 1, common - 1, -1)]])
            result.needs_keyframe = True
        return
    if ta is tb and a == b:
        return
    if not node:
        result.needs_keyframe = True
    result.ops.append(["change", _path(node), [a, b]])


def _keys(path: Any) -> list:
    if path is None or path == "" or path == []:
        return []
    if isinstance(path, str):
        return path.split(".")
    return list(path)


def _lookup(dest: Any, keys: list) -> Any:
    for key in keys:
        if type(dest) is list:
            key = int(key)
        dest = dest[key]
    return dest


def patch_in_place(ops: list, dest: Any, keep_columns: frozenset | None = None) -> Any:
    """Apply dictdiffer entries to ``dest`` itself and return it (dictdiffer's semantics).

    ``dest`` is modified: callers pass an object they own (for example one
    freshly parsed from a keyframe). A ``change`` of the root returns the new
    root instead. ``keep_columns`` (for a ``cars`` table) applies changes
    inside a row only to those column indexes: readers that never look at
    the other columns save the work (those cells are then out of date).
    """
    for action, path, changes in ops:
        if action == "change":
            if type(path) is list:
                depth = len(path)
                if depth == 0:
                    dest = changes[1]
                    continue
                if keep_columns is not None and depth >= 2 and path[1] not in keep_columns:
                    continue
                parent = dest
                for index in range(depth - 1):
                    key = path[index]
                    if type(parent) is list and type(key) is not int:
                        key = int(key)
                    parent = parent[key]
                last = path[-1]
            else:
                keys = _keys(path)
                if not keys:
                    dest = changes[1]
                    continue
                parent = _lookup(dest, keys[:-1])
                last = keys[-1]
            if type(parent) is list and type(last) is not int:
                last = int(last)
            parent[last] = changes[1]
        elif action == "add":
            keys = _keys(path)
            if keep_columns is not None and len(keys) >= 2 and keys[1] not in keep_columns:
                continue
            target = _lookup(dest, keys)
            if type(target) is list:
                for key, value in changes:
                    target.insert(int(key), value)
            else:
                for key, value in changes:
                    target[key] = value
        elif action == "remove":
            keys = _keys(path)
            if keep_columns is not None and len(keys) >= 2 and keys[1] not in keep_columns:
                continue
            target = _lookup(dest, keys)
            for key, _value in changes:
                if type(target) is list:
                    key = int(key)
                del target[key]
        else:
            raise ValueError(f"unknown diff operation {action!r}")
    return dest


def json_copy(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, tuples as lists, scalars shared)."""
    t = type(value)
    if t is list or t is tuple:
        return [json_copy(item) if type(item) in _CONTAINERS else item for item in value]
    if t is dict:
        return {key: json_copy(item) if type(item) in _CONTAINERS else item
                for key, item in value.items()}
    return value
