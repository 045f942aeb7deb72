"""Payload schemas per event type and version, and upcasters between versions.

An upcaster migrates a payload of one event type from schema version N to N + 1. Stores apply
them on every read, so readers only ever see each event type at its newest schema version while
the stored rows stay as they were written (events are immutable).
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from eventstore.errors import EventValidationError, UpcastError
from eventstore.events import Event

__all__ = ["PayloadSchemas", "UpcastError", "Upcaster", "Upcasters"]

ModelT = TypeVar("ModelT", bound=BaseModel)

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class Upcasters:
    """A registry of upcasters: `(event_type, from_version) -> function(payload) -> payload`.

    Register with the decorator::

        upcasters = Upcasters()

        @upcasters.register("PlayerMoved", from_version=1)
        def _add_zone(payload):
            return {**payload, "zone": "unknown"}
    """

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the upcaster from `from_version` to `from_version + 1` of `event_type`."""
        if from_version < 1:
            raise ValueError(f"from_version must be at least 1, not {from_version}")
        if (event_type, from_version) in self._steps:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")

        def decorate(function: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = function
            self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
            return function

        return decorate

    def fingerprint(self) -> str:
        """A digest of what these upcasters do: the steps registered and the code of each.

        Snapshots of replayed state are stored with it: state folded from events upcast by
        other upcasters (a step added, or one whose code changed) no longer matches, and is
        rebuilt from the events. It covers each step's own code, not the helpers or globals
        it calls: after changing those, raise the reducers' versions (or delete snapshots:
        `eventstore snapshots delete`). A step that is not a plain function (a partial, a
        callable object) counts by its name only. The bytecode differs between Python
        versions: processes on different ones do not share snapshots.
        """
        digest = hashlib.sha256()
        for (event_type, version), step in sorted(self._steps.items()):
            digest.update(f"{event_type}\0{version}\0{_describe(step)}\n".encode())
        return digest.hexdigest()[:32]

    def current_version(self, event_type: str) -> int:
        """The newest schema version of `event_type` (1 when it has no upcasters)."""
        return self._current.get(event_type, 1)

    def upcast(self, event: Event) -> Event:
        """`event` with its payload migrated to the newest schema version of its type."""
        target = self._current.get(event.event_type)
        if target is None or event.schema_version >= target:
            return event
        # Upcasters get plain, mutable data of their own (a stored event's is frozen).
        payload: Payload = json.loads(event.payload_json())
        version = event.schema_version
        while version < target:
            step = self._steps.get((event.event_type, version))
            if step is None:
                raise UpcastError(
                    f"no upcaster from {event.event_type} v{version} to v{version + 1} "
                    f"(event {event.id}); register one with Upcasters.register"
                )
            try:
                payload = step(payload)
            except Exception as error:
                raise UpcastError(
                    f"upcasting {event.event_type} v{version} -> v{version + 1} failed for "
                    f"event {event.id}: {error!r}"
                ) from error
            if not isinstance(payload, dict):
                raise UpcastError(
                    f"the upcaster of {event.event_type} v{version} -> v{version + 1} returned "
                    f"a {type(payload).__name__}, not a dict, for event {event.id}; return the "
                    "new payload as a dict"
                )
            version += 1
        # model_copy freezes the new payload like every event's (events are immutable).
        return event.model_copy(update={"payload": payload, "schema_version": version})


def _describe(step: Callable[..., Any]) -> str:
    """A step's name and, for a plain function, a digest of its code (stable across
    processes: no addresses, no hash randomisation)."""
    name = f"{getattr(step, '__module__', '')}.{getattr(step, '__qualname__', type(step).__name__)}"
    code = getattr(step, "__code__", None)
    return f"{name}:{_code_digest(code)}" if isinstance(code, types.CodeType) else name


def _code_digest(code: types.CodeType) -> str:
    digest = hashlib.sha256(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        digest.update(_const_text(const).encode())
    return digest.hexdigest()


def _const_text(const: Any) -> str:
    """A constant as text that is the same in every process (a frozenset's order, and so
    its repr, follows the hash seed)."""
    if isinstance(const, types.CodeType):
        return _code_digest(const)
    if isinstance(const, frozenset):
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return repr(const)


class PayloadSchemas:
    """Payload models per (event type, schema version), checked before anything is stored.

    Register a pydantic model for each version of each event type::

        schemas = PayloadSchemas(strict=True)

        @schemas.register("PlayerMoved", version=1)
        class PlayerMovedV1(BaseModel):
            to_zone: str

    With `strict=True`, an event type with no registered model is rejected; otherwise it is
    accepted unchecked. A known type at an unregistered version is always rejected.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._models: dict[tuple[str, int], type[BaseModel]] = {}
        self._versions: dict[str, set[int]] = {}

    def register(
        self, event_type: str, *, version: int = 1
    ) -> Callable[[type[ModelT]], type[ModelT]]:
        """Register the decorated model as the payload of `event_type` at `version`."""
        if version < 1:
            raise ValueError(f"version must be at least 1, not {version}")
        if (event_type, version) in self._models:
            raise ValueError(f"a payload model for {event_type} v{version} is already registered")

        def decorate(model: type[ModelT]) -> type[ModelT]:
            self._models[(event_type, version)] = model
            self._versions.setdefault(event_type, set()).add(version)
            return model

        return decorate

    def check(self, event: Event) -> None:
        """Raise `EventValidationError` naming the event type, the field and the rule, unless
        the event's payload fits the model registered for its type and schema version."""
        model = self._models.get((event.event_type, event.schema_version))
        if model is None:
            known = self._versions.get(event.event_type)
            if known:
                listed = ", ".join(str(v) for v in sorted(known))
                raise EventValidationError(
                    "schema_version",
                    f"{event.event_type} has no payload schema v{event.schema_version} "
                    f"(registered: {listed})",
                )
            if self.strict:
                raise EventValidationError(
                    "event_type",
                    f"{event.event_type} has no registered payload schema, and unknown event "
                    "types are refused (strict mode)",
                )
            return
        try:
            model.model_validate(event.payload)
        except pydantic.ValidationError as error:
            problems = [
                (
                    "payload." + ".".join(str(part) for part in item["loc"]),
                    f"{item['msg']} ({event.event_type} v{event.schema_version})",
                )
                for item in error.errors(include_url=False)
            ]
            raise EventValidationError(problems[0][0], problems[0][1], problems=problems) from None
