"""Errors as problem details (RFC 9457): what was wrong and what to do, never a stack trace.

The store's errors decide the status: a broken rule 422, a version conflict 409, something
unknown 404, a retriable failure (the database down or busy, an outcome unknown) 503 with
`Retry-After`. Anything else is a 500 whose detail names a log entry, not the exception.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from eventstore.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    EventValidationError,
    InvalidQueryError,
    MigrationError,
    ProjectionError,
    ReplayError,
)
from eventstore.events import encode_json
from eventstore.web._auth import AuthError

log = logging.getLogger("eventstore.web")

PROBLEM = "application/problem+json"
_BASE = "https://eventstore.dev/problems/"


class Problem(EventStoreError):
    """An error the API answers with as it is: a status, a type slug and a detail."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.slug = slug
        self.extra = extra
        super().__init__(detail)


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal error",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    retriable: bool = False,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "type": _BASE + slug,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "retriable": retriable,
        **extra,
    }
    return Response(encode_json(body), status_code=status, media_type=PROBLEM, headers=headers)


def _field(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def for_error(error: BaseException, retry_after: int = 1) -> Response:
    """The response an exception raised by a route becomes."""
    if isinstance(error, Problem):
        headers = {"Retry-After": str(retry_after)} if error.status == 503 else None
        return problem_response(
            error.status, error.slug, str(error), headers=headers, **error.extra
        )
    if isinstance(error, AuthError):
        headers = {"WWW-Authenticate": 'Bearer realm="eventstore"'} if error.status == 401 else {}
        slug = "unauthorized" if error.status == 401 else "forbidden"
        return problem_response(error.status, slug, str(error), headers=headers)
    if isinstance(error, EventValidationError):
        errors = [{"field": field, "rule": rule} for field, rule in error.problems]
        return problem_response(422, "invalid-event", str(error), errors=errors)
    if isinstance(error, ConcurrencyError):
        return problem_response(
            409,
            "version-conflict",
            str(error),
            aggregate_id=error.aggregate_id,
            expected_version=error.expected_version,
            actual_version=error.actual_version,
            current_version=error.current_version,
        )
    if isinstance(error, DuplicateEventError):
        return problem_response(409, "duplicate-event-id", str(error), event_id=error.event_id)
    if isinstance(error, AggregateNotFoundError):
        return problem_response(404, "aggregate-not-found", str(error))
    if isinstance(error, InvalidQueryError):
        return problem_response(400, "invalid-query", str(error))
    if isinstance(error, ProjectionError):
        return problem_response(422, "cannot-serve", str(error))
    if isinstance(error, ReplayError):  # a reducer failed: the server's code, not the request
        log.error("replay failed: %s", error)
        return problem_response(
            500,
            "replay-failed",
            f"{error}; the reducer's code must be fixed (tell the operator); other "
            "versions of this aggregate may still replay",
        )
    if isinstance(error, EventStoreError) and error.retriable:
        return problem_response(
            503,
            "unavailable",
            f"{error} (retry after {retry_after} s; resending the same events is safe)",
            retriable=True,
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(error, MigrationError):
        return problem_response(
            503, "not-migrated", str(error), headers={"Retry-After": str(retry_after * 30)}
        )
    reference = uuid.uuid4().hex[:12]
    log.error("internal error %s", reference, exc_info=error)
    return problem_response(
        500,
        "internal",
        f"the server failed on this request (log reference {reference}); "
        "tell the operator, who can find it in the server's log",
    )


def install(app: Any, retry_after: int) -> None:
    """Route every error the app can raise through `for_error` or its own problem."""

    async def on_error(_: Request, error: Exception) -> Response:
        return for_error(error, retry_after)

    async def on_http(_: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if isinstance(error.__cause__ or error.__context__, Problem):
            # FastAPI reads a declared body itself and wraps what reading raised (the body
            # limit's 413) in a 400 "error parsing the body": answer with the cause.
            return for_error(error.__cause__ or error.__context__ or error, retry_after)
        status = error.status_code
        detail = (
            "no such route; the routes are listed in /openapi.json"
            if status == 404
            else str(error.detail)
        )
        slug = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
        return problem_response(status, slug, detail, headers=dict(error.headers or {}))

    async def on_validation(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "rule": str(e.get("msg", "invalid"))}
            for e in error.errors()
        ]
        text = "; ".join(f"{e['field']}: {e['rule']}" for e in errors)
        return problem_response(422, "invalid-request", f"invalid request: {text}", errors=errors)

    app.add_exception_handler(EventStoreError, on_error)
    app.add_exception_handler(Exception, on_error)  # a 500 naming a log reference
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
