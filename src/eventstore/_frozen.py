"""Deeply immutable JSON containers: what an event's payload and metadata are made of.

`FrozenDict` and `FrozenList` subclass `dict` and `list`, so that code reading plain JSON data
keeps working, unchanged and at full speed: `==` against plain dicts and lists, `json.dumps`
(whose C encoder takes the subclasses as they are, giving the same text), `isinstance(x, dict)`,
`dict(x)` / `list(x)` / `x.copy()` / `x | {...}` (which all return plain, mutable copies), and
pydantic's serialiser (which writes plain containers). Every method that would change one
raises `TypeError` instead, saying what to do.

The guarantee holds against ordinary code, as `frozen=True` does for a pydantic model: calling
the base class's methods directly (`dict.__setitem__(frozen, k, v)`) bypasses it, as
`object.__setattr__` bypasses `frozen=True`.

The classes cannot be called: containers are built only by this module's functions, which
freeze every nested container first. So a `FrozenDict` or `FrozenList` is frozen all the way
down, and `freeze` returns one as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

_REFUSAL = (
    "events are immutable: {operation} would change an event's payload or metadata; build a "
    "new event from a mutable copy instead, e.g. payload = dict(event.payload) (or "
    "{{**event.payload, ...}}), then Event.new(...) or event.model_copy(update={{'payload': "
    "payload}})"
)


def _refuse(container: object, operation: str) -> NoReturn:
    raise TypeError(_REFUSAL.format(operation=f"{type(container).__name__}.{operation}()"))


class FrozenDict(dict[str, Any]):
    """A JSON object that cannot be changed; equal to, and encoded like, the plain dict."""

    # `_json`: the compact JSON text, once computed (see `json_text`). A slot also makes
    # `frozen.__class__ = dict` fail ("object layout differs"), so it cannot be thawed in place.
    __slots__ = ("_json",)
    _json: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(self, "__init__")

    def __setitem__(self, *args: Any) -> NoReturn:
        _refuse(self, "__setitem__")

    def __delitem__(self, *args: Any) -> NoReturn:
        _refuse(self, "__delitem__")

    def __ior__(self, *args: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self, "__ior__")

    def clear(self) -> NoReturn:
        _refuse(self, "clear")

    def pop(self, *args: Any) -> NoReturn:
        _refuse(self, "pop")

    def popitem(self) -> NoReturn:
        _refuse(self, "popitem")

    def setdefault(self, *args: Any) -> NoReturn:
        _refuse(self, "setdefault")

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self, "update")

    def __copy__(self) -> FrozenDict:
        return self  # immutable, like a tuple: a copy may be the object itself

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (frozen_dict, (dict(self),))


class FrozenList(list[Any]):
    """A JSON array that cannot be changed; equal to, and encoded like, the plain list."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(self, "__init__")

    def __setitem__(self, *args: Any) -> NoReturn:
        _refuse(self, "__setitem__")

    def __delitem__(self, *args: Any) -> NoReturn:
        _refuse(self, "__delitem__")

    def __iadd__(self, *args: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self, "__iadd__")

    def __imul__(self, *args: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self, "__imul__")

    def append(self, *args: Any) -> NoReturn:
        _refuse(self, "append")

    def extend(self, *args: Any) -> NoReturn:
        _refuse(self, "extend")

    def insert(self, *args: Any) -> NoReturn:
        _refuse(self, "insert")

    def pop(self, *args: Any) -> NoReturn:
        _refuse(self, "pop")

    def remove(self, *args: Any) -> NoReturn:
        _refuse(self, "remove")

    def clear(self) -> NoReturn:
        _refuse(self, "clear")

    def sort(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self, "sort")

    def reverse(self) -> NoReturn:
        _refuse(self, "reverse")

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (frozen_list, (list(self),))


# The base classes' own methods, which fill a new container without the refusals above.
_new_dict = dict.__new__
_fill_dict = dict.update
_new_list = list.__new__
_fill_list = list.extend


def frozen_dict(members: dict[str, Any]) -> FrozenDict:
    """A `FrozenDict` holding `members` (copied). The caller guarantees that every value is
    already frozen: a scalar, a `FrozenDict` or a `FrozenList`."""
    frozen = _new_dict(FrozenDict)
    _fill_dict(frozen, members)
    return frozen


def frozen_list(items: list[Any] | tuple[Any, ...]) -> FrozenList:
    """A `FrozenList` holding `items` (copied); every item must already be frozen."""
    frozen = _new_list(FrozenList)
    _fill_list(frozen, items)
    return frozen


EMPTY: FrozenDict = frozen_dict({})
"""The empty frozen JSON object (shared: it cannot change)."""


def freeze(value: Any) -> Any:
    """`value` with every dict and list (and tuple) in it replaced by a frozen copy.

    Trusts its input to be JSON data already (it checks nothing, and leaves any other value
    as it is); frozen containers are returned as they are, without a walk."""
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, dict):
        return _freeze_dict(value)
    if isinstance(value, list | tuple):
        return _freeze_list(value)
    return value


# Both copy a container whole, then replace the containers in it: most members are scalars,
# which then cost no Python call each.
_CONTAINERS = (dict, list, tuple)
_FROZEN = (FrozenDict, FrozenList)


def _freeze_dict(node: dict[Any, Any]) -> FrozenDict:
    frozen = _new_dict(FrozenDict)
    _fill_dict(frozen, node)
    for key, item in node.items():
        if isinstance(item, _CONTAINERS) and type(item) not in _FROZEN:
            dict.__setitem__(frozen, key, freeze(item))
    return frozen


def _freeze_list(node: list[Any] | tuple[Any, ...]) -> FrozenList:
    frozen = _new_list(FrozenList)
    _fill_list(frozen, node)
    for index, item in enumerate(node):
        if isinstance(item, _CONTAINERS) and type(item) not in _FROZEN:
            list.__setitem__(frozen, index, freeze(item))
    return frozen


def json_text(value: FrozenDict, encode: Callable[[Any], str]) -> str:
    """`encode(value)`, computed once per frozen object and kept on it (it cannot go stale)."""
    try:
        return value._json
    except AttributeError:
        text = encode(value)
        value._json = text
        return text


def keep_json_text(value: FrozenDict, text: str) -> None:
    """Remember `text`, which the caller has just computed as `value`'s compact JSON."""
    value._json = text


_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads_frozen(text: str) -> Any:
    """`freeze(json.loads(text))`, for the JSON text of a stored payload or metadata object
    (the store's own, compact or as PostgreSQL prints it), without `json.loads`'s per-call
    wrappers (a measurable share of reading events back)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: the general path says why
        return freeze(json.loads(text))
    if end != len(text) and text[end:].strip():
        return freeze(json.loads(text))  # raises, naming what follows the value
    return freeze(value)
