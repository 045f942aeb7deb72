"""Running the app: uvicorn, refusing an unsafe bind, draining on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for the requests in
flight to finish (at most `drain` seconds) before the app's shutdown closes the producer.
Event streams never finish by themselves, so the stop is also signalled to them here, at the
moment the signal arrives: each ends its response, and the drain can complete.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from eventstore.errors import ConfigurationError
from eventstore.store import ApiTokens

log = logging.getLogger("eventstore.web")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def check_bind(host: str, *, anonymous_reads: bool, tokens: ApiTokens) -> None:
    """Refuse to serve beyond loopback without authentication on every route."""
    if is_loopback(host):
        return
    if anonymous_reads:
        raise ConfigurationError(
            f"refusing to serve on {host}, beyond loopback, with anonymous reads: drop "
            "--anonymous-reads (every request then needs a token), or bind 127.0.0.1"
        )
    if not tokens.list_tokens():
        raise ConfigurationError(
            f"refusing to serve on {host}, beyond loopback, while no token exists: nobody "
            "could use it; create one first with `eventstore tokens create NAME --scope read`"
        )


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, stopping: threading.Event, ready: Callable[[str], None]
    ) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, without raising the caught signal again once the drain is done (which
        would end the process with -15 instead of exit code 0: a clean stop is a success)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping.set()  # event streams end, so that the drain can finish
        super().handle_exit(sig, frame)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self._ready(f"http://{shown}:{port}/")


def run(
    app: FastAPI,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    drain: float = 30.0,
    log_level: str = "warning",
) -> None:
    """Serve until SIGTERM or SIGINT; `ready` is called with the address once listening."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(drain)),
        server_header=False,
        proxy_headers=False,
    )
    try:  # bound here, so that a taken port is a clear error rather than uvicorn's exit
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.create_server((host, port), family=family)
        # Accepted connections inherit it (Linux): asyncio sets it only on sockets it made
        # with IPPROTO_TCP, and without it a response can wait 40 ms for a delayed ACK.
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); choose another "
            "--port (0 takes any free one) or stop what holds it"
        ) from None
    stopping: threading.Event = app.state.eventstore.stopping
    with listening:
        _Server(config, stopping, ready).run(sockets=[listening])
    log.info("server stopped")
