"""What the HTTP API's tests share: `eventstore serve` as a process, a server-sent events
reader, a TCP proxy that can cut the database off, and the problem-details check."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_for

PROBLEM = "application/problem+json"
_TRACE_MARKERS = ("Traceback", 'File "', "site-packages", '.py", line')


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> Any:
    """`response` is a problem document (RFC 9457) with this status, and no stack trace;
    returns its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["type"].startswith("https://"), body["type"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body["type"]
    for marker in _TRACE_MARKERS:
        assert marker not in response.text, f"a stack trace leaked: {response.text}"
    return body


def new_event(
    aggregate_id: str,
    version: int,
    *,
    event_type: str = "PlayerMoved",
    aggregate_type: str = "Player",
    at: datetime | None = None,
    correlation_id: str | None = None,
    **payload: Any,
) -> dict[str, Any]:
    """An event as a client sends it: its own id and game time, so that a resend is exact."""
    metadata = {"correlation_id": correlation_id} if correlation_id is not None else {}
    moment = at or datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(seconds=version)
    return {
        "id": str(uuid.uuid4()),
        "event_type": event_type,
        "aggregate_id": aggregate_id,
        "aggregate_type": aggregate_type,
        "version": version,
        "timestamp": moment.isoformat(),
        "payload": payload or {"to_zone": f"z{version % 3}", "x": version, "y": -version},
        "metadata": metadata,
    }


# -- eventstore serve, as a process --------------------------------------------------------


class Served:
    """A running `eventstore serve`: its address, and its output as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def url(self, timeout: float = 30) -> str:
        """The address it serves at, once it says so."""
        pattern = re.compile(r"at (http://[^/\s]+)/ ")
        found: list[str] = []

        def said() -> bool:
            assert self.process.poll() is None, f"serve exited: {self.output()}"
            match = pattern.search(" ".join("".join(self.stdout).split()))
            if match:
                found.append(match.group(1).replace("0.0.0.0", "127.0.0.1"))
            return bool(match)

        wait_for(said, "eventstore serve to listen", timeout)
        return found[0]

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code


def cli_environment(database_url: str, schema: str | None = None) -> dict[str, str]:
    """The environment of a user's shell that names only this store."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    environment["EVENTSTORE_DATABASE_URL"] = database_url
    if schema is not None:
        environment["EVENTSTORE_DATABASE_SCHEMA"] = schema
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@contextmanager
def serving(
    cwd: Path, database_url: str, *args: str, schema: str | None = None
) -> Iterator[Served]:
    """`eventstore serve --port 0 ARGS` on this store until the block ends (then SIGTERM,
    and a kill if it does not stop)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eventstore.cli", "serve", "--port", "0", *args],
        cwd=cwd,
        env=cli_environment(database_url, schema),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(process)
    try:
        yield served
    finally:
        if process.poll() is None:
            served.terminate()
            try:
                served.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                served.wait(20)


# -- server-sent events ---------------------------------------------------------------------


def sse_messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The messages of an event stream as they arrive: `{"id", "event", "data"}`, and each
    comment line at once as `{"comment": text}` (the keep-alives: a reader can look at its
    clock while the stream is idle)."""
    message: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if message:
                yield message
            message = {}
            continue
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        message[name] = message[name] + "\n" + value if name in message else value


def stream_positions(message: dict[str, str]) -> int:
    """The position a stream message carries, checked against its event's own."""
    assert message.get("event") == "event", message
    event = json.loads(message["data"])
    assert int(message["id"]) == event["position"], message
    return int(message["id"])


# -- a TCP proxy in front of PostgreSQL ------------------------------------------------------


class TcpProxy:
    """Forwards a local port to `target`; `cut()` closes the port and every connection
    through it, so that the database is unreachable for whoever connected through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._listener.close()
            for each in self._sockets:
                with suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            self._sockets.clear()
