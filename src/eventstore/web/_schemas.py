"""The JSON Schemas the OpenAPI description gives each route's answers (the routes write
their JSON directly, for speed, so these are stated here rather than derived from models)."""

from __future__ import annotations

from typing import Any

from eventstore.events import MAX_ID_LENGTH

_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 100}
_INT_OR_NULL = {"type": ["integer", "null"]}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_ANY: dict[str, Any] = {}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


NEW_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event_type", "aggregate_id", "aggregate_type", "version", "payload"],
    "properties": {
        "id": {
            "type": ["string", "null"],
            "maxLength": MAX_ID_LENGTH,
            "description": "unique; a UUID is best (default: a random one)",
        },
        "event_type": _NAME,
        "aggregate_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        "aggregate_type": _NAME,
        "version": {"type": "integer", "minimum": 1, "maximum": 2**62 - 1},
        "timestamp": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "game time, with a zone; default (or null): now",
        },
        "payload": {"type": "object"},
        "metadata": {"type": "object"},
        "schema_version": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
EVENT = _object(
    [
        "id",
        "event_type",
        "aggregate_id",
        "aggregate_type",
        "version",
        "timestamp",
        "payload",
        "metadata",
        "schema_version",
        "position",
        "recorded_at",
    ],
    id={"type": "string"},
    event_type={"type": "string"},
    aggregate_id={"type": "string"},
    aggregate_type={"type": "string"},
    version={"type": "integer"},
    timestamp={"type": "string"},
    payload={"type": "object"},
    metadata={"type": "object"},
    schema_version={"type": "integer"},
    position=_INT_OR_NULL,
    recorded_at=_TEXT_OR_NULL,
)
PROBLEM = _object(
    ["type", "title", "status", "detail", "retriable"],
    type={"type": "string"},
    title={"type": "string"},
    status={"type": "integer"},
    detail={"type": "string"},
    retriable={"type": "boolean"},
    errors={
        "type": "array",
        "items": _object(["field", "rule"], field={"type": "string"}, rule={"type": "string"}),
    },
)
STATE = _object(
    [
        "aggregate_id",
        "aggregate_type",
        "state",
        "version",
        "timestamp",
        "position",
        "events_applied",
        "snapshot_version",
        "target",
        "held_back",
    ],
    aggregate_id={"type": "string"},
    aggregate_type={"type": "string"},
    state=_ANY,
    version={"type": "integer"},
    timestamp=_TEXT_OR_NULL,
    position=_INT_OR_NULL,
    events_applied={"type": "integer"},
    snapshot_version=_INT_OR_NULL,
    target={"type": "string"},
    held_back={"type": "integer"},
    history={
        "type": "array",
        "items": _object(
            ["version", "event", "state", "changes"],
            version={"type": "integer"},
            event=ref("Event"),
            state=_ANY,
            changes={
                "type": "array",
                "items": _object(
                    ["op", "path"],
                    op={"enum": ["add", "remove", "change"]},
                    path={"type": "string"},
                    old=_ANY,
                    new=_ANY,
                ),
            },
        ),
    },
    history_next=_INT_OR_NULL,
)
PROJECTION = {
    **_object(
        ["name", "generation", "version", "position", "lag_events", "parked"],
        name={"type": "string"},
        generation={"type": "integer"},
        version={"type": "integer"},
        rebuilding=_INT_OR_NULL,
        position={"type": "integer"},
        lag_events={"type": "integer"},
        lag_seconds={"type": ["number", "null"]},
        documents={"type": "integer"},
        aggregates={"type": "integer"},
        parked={"type": "integer"},
        skipped={"type": "integer"},
        dead_lettered={"type": "integer"},
        last_error=_TEXT_OR_NULL,
        last_error_at=_TEXT_OR_NULL,
        partitions={"type": ["object", "null"]},
        parked_aggregates={"type": "array", "items": {"type": "object"}},
        retry_available={"type": "boolean"},
    )
}
COMPONENTS = {
    "NewEvent": NEW_EVENT,
    "Event": EVENT,
    "Problem": PROBLEM,
    "State": STATE,
    "Projection": PROJECTION,
}

_EVENTS = {"type": "array", "items": ref("Event")}
_REF = _object(
    ["aggregate_type", "aggregate_id"],
    aggregate_type={"type": "string"},
    aggregate_id={"type": "string"},
)
BODIES: dict[str, dict[str, Any]] = {
    "append": _object(["positions"], positions={"type": "array", "items": {"type": "integer"}}),
    "aggregate_events": _object(
        ["aggregate_id", "events", "next_version"],
        aggregate_id={"type": "string"},
        events=_EVENTS,
        next_version=_INT_OR_NULL,
    ),
    "aggregate": _object(
        ["aggregate_id", "aggregate_type", "version", "first_timestamp", "last_timestamp"],
        aggregate_id={"type": "string"},
        aggregate_type={"type": "string"},
        version={"type": "integer"},
        first_timestamp={"type": "string"},
        last_timestamp={"type": "string"},
        last_position=_INT_OR_NULL,
    ),
    "aggregates": _object(
        ["aggregates", "next_after"],
        aggregates={"type": "array", "items": _REF},
        next_after={"anyOf": [_REF, {"type": "null"}]},
    ),
    "events_by_type": _object(
        ["events", "next_after_position"], events=_EVENTS, next_after_position=_INT_OR_NULL
    ),
    "correlated": _object(["events"], events=_EVENTS),
    "log": _object(["events", "next_after"], events=_EVENTS, next_after={"type": "integer"}),
    "state": ref("State"),
    "world": _object(
        ["position", "aggregates", "next_after"],
        position={"type": "integer"},
        aggregates={"type": "array", "items": ref("State")},
        next_after={"type": ["array", "null"], "items": {"type": "string"}},
    ),
    "projections": {"type": "array", "items": ref("Projection")},
    "projection": ref("Projection"),
    "documents": _object(
        ["documents", "next_after"],
        documents={
            "type": "array",
            "items": _object(["key", "document"], key={"type": "string"}, document=_ANY),
        },
        next_after=_TEXT_OR_NULL,
    ),
    "document": _object(["key", "document"], key={"type": "string"}, document=_ANY),
    "retry": _object(
        ["results"],
        results={
            "type": "array",
            "items": _object(
                ["aggregate_id", "applied", "parked_again", "error"],
                aggregate_id={"type": "string"},
                applied={"type": "integer"},
                parked_again={"type": "boolean"},
                error=_TEXT_OR_NULL,
            ),
        },
    ),
    "health": _object(["status", "backend"], status={"type": "string"}, backend={"type": "string"}),
    "info": {"type": "object"},
}


def ok(body: str, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route whose 200 is `BODIES[body]`."""
    return {
        200: {"description": description, "content": {"application/json": {"schema": BODIES[body]}}}
    }


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
