"""What an event changed: a structured diff of two JSON states, as JSON Pointer paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

_MISSING: Any = object()


@dataclass(frozen=True)
class StateChange:
    """One difference between two states: at `path` (a JSON Pointer, RFC 6901: "" is the
    whole state, "/inventory/0" the first item of its `inventory`), a value was added,
    removed or changed."""

    op: Literal["add", "remove", "change"]
    path: str
    old: Any = None
    """The value before (None for `add`)."""
    new: Any = None
    """The value after (None for `remove`)."""

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.op != "add":
            found["old"] = self.old
        if self.op != "remove":
            found["new"] = self.new
        return found


def _token(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def diff(before: Any, after: Any, path: str = "") -> list[StateChange]:
    """The changes that turn `before` into `after` (JSON values), deepest first where they
    nest: objects by key, arrays by index (a longer array adds its tail, a shorter one
    removes it), anything else compared whole. Equal states give no change."""
    changes: list[StateChange] = []
    _walk(before, after, path, changes)
    return changes


def _walk(before: Any, after: Any, path: str, out: list[StateChange]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key, old in before.items():
            new = after.get(key, _MISSING)
            sub = f"{path}/{_token(key)}"
            if new is _MISSING:
                out.append(StateChange("remove", sub, old=old))
            else:
                _walk(old, new, sub, out)
        for key, new in after.items():
            if key not in before:
                out.append(StateChange("add", f"{path}/{_token(key)}", new=new))
        return
    if isinstance(before, list) and isinstance(after, list):
        for index in range(min(len(before), len(after))):
            _walk(before[index], after[index], f"{path}/{index}", out)
        for index in reversed(range(len(after), len(before))):  # last first, like a patch
            out.append(StateChange("remove", f"{path}/{index}", old=before[index]))
        for index in range(len(before), len(after)):
            out.append(StateChange("add", f"{path}/{index}", new=after[index]))
        return
    # bool is an int in Python: True == 1, but a JSON reader tells them apart.
    if before != after or type(before) is not type(after):
        out.append(StateChange("change", path, old=before, new=after))
