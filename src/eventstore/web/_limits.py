"""The request body limit: 413 before more than `max_bytes` of a body is read.

A pure ASGI middleware (no per-request task or buffering): a declared Content-Length over
the limit is refused at once; a body without one (chunked) is counted as it arrives, and the
app's read fails with `BodyTooLarge` once it crosses the limit, answered with a 413 too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstore.web._problems import Problem, problem_response


class BodyTooLarge(Problem):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            "body-too-large",
            f"the request body is over the limit of {max_bytes:,} bytes; send smaller "
            "batches (the limit is `eventstore serve --max-body`)",
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    error: Problem = BodyTooLarge(self.max_bytes)
                    if declared < 0:
                        error = Problem(400, "bad-content-length", "Content-Length is not a size")
                    response = problem_response(error.status, error.slug, str(error))
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)
