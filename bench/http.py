"""HTTP API figures: a real `eventstore serve` process (uvicorn, one process) against the same
library calls made directly in this process, on the same store, measured in the same run.

    make bench-http                                  (services up, full run, PostgreSQL)
    make bench-http BENCH_ARGS="--quick"             (small sizes, 1 round: a smoke run)
    python bench/http.py --database-url postgresql://eventstore@127.0.0.1:55432/eventstore
    python bench/http.py ... --sqlite --json figures.json --profile

The store: a throw-away PostgreSQL schema `bench_http_<hex>` (dropped at the end) and, with
--sqlite, also a SQLite file in a temporary directory. The server: `python -m eventstore.cli
serve --host 127.0.0.1 --port <free> --reducers bench_http_reducers:REDUCERS --log-level
WARNING` on that store (the reducers module is written into the temporary directory, which is
the server's working directory: see REDUCERS_MODULE). Every request carries a bearer token
with the read and append scopes (`eventstore.web.issue_token`), as beyond loopback, where
every request needs one. The clients (--client): `threads` (the default), --clients (16)
threads each with its own keep-alive `httpx.Client`, or `async`, one `httpx.AsyncClient` (16
keep-alive connections) driving 16 tasks; measured here, the async client costs 2-4 times the
CPU per request of the threaded one, which on 2 cores is taken from the server. The request
bodies (the events' JSON, ids and timestamps included) are built before the timed window: the
clients only send. The direct side builds each Event (`Event.new`) inside it, as the server
builds each from JSON inside it: on both sides the events are made and validated in the
window, by the library. The server runs on this interpreter and environment (uvicorn
picks httptools and uvloop when they are importable, h11 and asyncio otherwise: printed).

single   16 clients each POSTing single events to /v1/events, one after another (each
         client its own aggregate, versions 1, 2, ...): events/s, as a ratio of 16 threads
         in this process calling `EventProducer.publish` with the same events (each thread
         its own aggregate). Aim >= 0.5x.
batch    The same with 100 events per POST (an array) against `publish_many` of 100. Aim
         >= 0.8x.
state    GET /v1/aggregates/{id}/state of a Player of 1,000 PlayerMoved events (the demo
         reducers, snapshots every 100, warm: the state is read from the snapshot at the
         head) from one client, p50 and p99 of --gets requests, against
         `Replayer(store, REDUCERS).replay_to(id)` in this process (snapshots on, warm),
         taking turns call by call. The same without the token (anonymous reads, as on
         loopback), and without snapshots (a `PlainPlayer` of the same 1,000 events, whose
         reducer is the demo Player's with snapshot_every=0: both sides fold every event).
ceiling  For information: GET /v1/health (no token, no store) and GET /v1/info (the token's
         look-up, no other store work) from 16 clients: what the HTTP layer alone allows.

Rounds: --rounds (3) rounds of single and batch, the two sides alternating (which one goes
first alternates too); medians. Untimed warm-up before each measure on both sides (every
client's connection opened, the server's and this process's pool connections used).

CPU: each window also records the CPU seconds of this process (the clients, or the direct
side's producer), of the server process (/proc/<pid>/stat) and of the whole machine
(/proc/stat); "rest" = machine - both (PostgreSQL, and anything else running). Printed per
event (or request).

--profile: afterwards, a second server runs under cProfile (a profile per thread, timed in
CPU: see PROFILER), loaded with the single and batch workloads and state GETs; its top
entries, and its CPU by package, are printed per workload. Then in this process: what a
token look-up, parsing a body into Events, a lone `publish` and a state document cost per
call.

--patch-nodelay: the server's listening socket gets TCP_NODELAY (see NODELAY), to measure
the fix proposed in RESULTS.md for the 40 ms stall on asyncio's loop.

The machine's 1-minute load is printed at the start, at each measure and at the end
(--wait-for-load LOAD first waits for it to fall below LOAD).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's `http` package, and Python puts a script's
# directory first on sys.path: move it to the end (a stable sort on "is it this directory"),
# so that `import http.client` (httpx, uvicorn) finds the standard library while `append`
# below is still found here.
sys.path.sort(key=lambda p: Path(p or ".").resolve() == Path(__file__).resolve().parent)
sys.path.append(str(Path(__file__).resolve().parent))

import argparse
import asyncio
import importlib
import json
import math
import os
import pstats
import shlex
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from typing import IO, Any, TextIO

import httpx
import psycopg
from psycopg import sql

from append import PAYLOAD, metadata
from eventstore import Event, EventProducer, EventStore, open_store
from eventstore.config import Settings
from eventstore.events import encode_json
from eventstore.replay import Reducer, Replayer

CLIENTS = 16
BATCH = 100
EVENTS = 1000
"""Events of the aggregates whose state is read."""
PLAYER, PLAIN = "state-player", "state-plain"
STARTUP = 60.0
"""Seconds the server gets to answer /v1/health."""
REDUCERS_MODULE = '''"""bench/http.py's reducers: the demo's, and a Player without snapshots."""

from eventstore.demo.reducers import ALL, PLAYERS
from eventstore.replay import Reducer

PLAIN = Reducer(
    "PlainPlayer",
    PLAYERS.apply,
    version=PLAYERS.version,
    initial=PLAYERS.initial(),
    snapshot_every=0,
)
PLAIN.handlers.update(PLAYERS.handlers)
REDUCERS = [*ALL, PLAIN]
'''
"""Written as `bench_http_reducers.py` into the temporary directory: the server imports it
(`--reducers bench_http_reducers:REDUCERS`; that directory is its working directory) and so
does this process, so both sides fold with the same code. (This file cannot be imported by
the server: its name is the standard library's `http`.)"""

NODELAY = """
import socket
_create_server = socket.create_server
def create_server(*args, **kwargs):
    listening = _create_server(*args, **kwargs)
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted ones inherit it
    return listening
socket.create_server = create_server
"""
"""--patch-nodelay: a stand-in for the fix proposed in RESULTS.md. `eventstore serve` binds
its socket with `socket.create_server`, whose sockets have proto 0, and asyncio sets
TCP_NODELAY only on sockets whose proto is IPPROTO_TCP: the server's connections keep Nagle's
algorithm, and a response written in two parts (headers, body) waits for the client's
delayed ACK, about 40 ms. Here the listening socket gets TCP_NODELAY, which Linux copies to
the connections it accepts."""

PROFILER = """
import cProfile, os, pstats, signal, threading, time
out = os.environ["BENCH_HTTP_PROFILE"]
profiles, lock, dumps = [], threading.Lock(), [0]
class Taken:  # what pstats.Stats reads, without create_stats' disable(): that would flush
    def __init__(self, profile):  # the other threads' pending calls on this thread's clock
        self.profile = profile
    def create_stats(self):
        self.profile.snapshot_stats()
        self.stats = self.profile.stats
def snapshot(*_):
    merged = None
    with lock:
        for profile in profiles:
            try:  # a thread that ran nothing since the last snapshot has no stats
                taken = Taken(profile)
                merged = pstats.Stats(taken) if merged is None else merged.add(taken)
            except TypeError:
                pass
            profile.clear()
    dumps[0] += 1
    if merged is not None:
        merged.dump_stats(f"{out}.{dumps[0]}")
    main.clear()  # this handler's own work is not the server's
signal.signal(signal.SIGUSR2, snapshot)
inner = threading.Thread._bootstrap_inner
def profiled(self):
    profile = cProfile.Profile(time.thread_time)
    with lock:
        profiles.append(profile)
    profile.enable()
    inner(self)
threading.Thread._bootstrap_inner = profiled
main = cProfile.Profile(time.thread_time)
profiles.append(main)
main.enable()
"""
"""`eventstore serve` with a cProfile.Profile in every thread (Python 3.11's cProfile sees
only the thread that enabled it), each timing its own thread's CPU time (`time.thread_time`),
so that waits (for PostgreSQL, for a lock, for the CPU on a busy machine) count for nothing
and the figures add up to CPU. Each SIGUSR2 merges them into $BENCH_HTTP_PROFILE.<n> (n = 1,
2, ...) and clears them: what the server did since the last one."""

RUN = """
import runpy, sys
sys.argv = ["eventstore", *sys.argv[1:]]
runpy.run_module("eventstore.cli", run_name="__main__")
"""
"""The end of `python -c NODELAY? PROFILER? RUN serve ...`: the CLI, as `python -m
eventstore.cli serve ...` runs it (which is the command when neither is wanted)."""

_out: TextIO = sys.stdout


def say(text: str = "") -> None:
    print(text, file=_out, flush=True)


def load() -> str:
    return f"[load {os.getloadavg()[0]:.2f}]"


# -- events and bodies ----------------------------------------------------------------------


def moved(aggregate_type: str, aggregate_id: str, version: int) -> Event:
    """bench/append.py's typical event (a 6-key payload with to_zone, x and y, which the demo
    reducer reads; 2-key metadata)."""
    return Event.new(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type="PlayerMoved",
        version=version,
        payload=PAYLOAD,
        metadata=metadata(version),
    )


def body_of(events: Sequence[Event]) -> bytes:
    """What a client POSTs: the events' JSON (id and timestamp included, as a client that
    retries safely sends them), one object or an array."""
    documents = [
        {k: v for k, v in e.to_dict().items() if k not in ("position", "recorded_at")}
        for e in events
    ]
    return encode_json(documents[0] if len(documents) == 1 else documents).encode()


@dataclass(frozen=True)
class Work:
    """Each client's requests: events for the direct side, bodies for the HTTP side."""

    events: list[list[list[Event]]]
    """events[client][request]: the events of one call."""

    def bodies(self) -> list[list[bytes]]:
        return [[body_of(call) for call in calls] for calls in self.events]

    @property
    def count(self) -> int:
        return sum(len(call) for calls in self.events for call in calls)


def work(prefix: str, clients: int, requests: int, per_request: int) -> Work:
    """Client k appends to aggregate `{prefix}-c{k}`, versions 1, 2, ... in order."""
    return Work(
        [
            [
                [
                    moved("Player", f"{prefix}-c{k:02d}", r * per_request + n + 1)
                    for n in range(per_request)
                ]
                for r in range(requests)
            ]
            for k in range(clients)
        ]
    )


def append_history(store: EventStore, aggregate_type: str, aggregate_id: str) -> None:
    events = [moved(aggregate_type, aggregate_id, v) for v in range(1, EVENTS + 1)]
    for start in range(0, len(events), 1000):
        store.append_events(events[start : start + 1000])


# -- CPU accounting -------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of a process."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, every core (/proc/stat: all but idle, iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


@dataclass(frozen=True)
class Mark:
    wall: float
    own: float
    server: float
    machine: float

    @classmethod
    def now(cls, server_pid: int | None) -> Mark:
        return cls(
            time.perf_counter(),
            time.process_time(),
            process_cpu(server_pid) if server_pid else 0.0,
            machine_cpu(),
        )


@dataclass(frozen=True)
class Window:
    """One timed window: `count` events (or requests) in `seconds`, and CPU seconds spent."""

    count: int
    seconds: float
    own: float
    server: float
    machine: float

    @classmethod
    def between(cls, count: int, start: Mark, end: Mark) -> Window:
        return cls(
            count,
            end.wall - start.wall,
            end.own - start.own,
            end.server - start.server,
            end.machine - start.machine,
        )

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def per(self, cpu: float) -> float:
        """µs of CPU per event."""
        return cpu / self.count * 1e6

    @property
    def rest(self) -> float:
        return max(0.0, self.machine - self.own - self.server)


# -- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    token: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def headers(self, token: bool = True) -> dict[str, str]:
        found = {"content-type": "application/json"}
        if token:
            found["authorization"] = f"Bearer {self.token}"
        return found

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server exited with {self.process.returncode}:\n{tail}")


def server_stack() -> str:
    """What uvicorn will run on (its `auto` choices), in this interpreter and environment."""
    import uvicorn

    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"uvicorn {uvicorn.__version__} ({http}, {loop}), Python {sys.version.split()[0]}"


def source_state() -> str:
    """The commit, and whether src/ differs from it (other sessions edit it as we run)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "no git"
    changed = git("status", "--porcelain", "--", "src")
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} + {len(changed.splitlines())} file(s) changed in src/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Bed:
    """A store both sides use: this process's handle, and what the server needs to open it."""

    backend: str
    store: EventStore
    url: str
    schema: str | None
    directory: Path
    token: str
    patch_nodelay: bool


@contextmanager
def serve(bed: Bed, profile_to: Path | None = None) -> Iterator[Server]:
    """`eventstore serve` on the bed's store, answering /v1/health; SIGTERM at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    env["EVENTSTORE_DATABASE_URL"] = bed.url
    if bed.schema:
        env["EVENTSTORE_DATABASE_SCHEMA"] = bed.schema
    arguments = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    arguments += ["--reducers", "bench_http_reducers:REDUCERS", "--log-level", "WARNING"]
    if profile_to is None and not bed.patch_nodelay:
        command = [sys.executable, "-m", "eventstore.cli", *arguments]
    else:
        code = (NODELAY if bed.patch_nodelay else "") + (PROFILER if profile_to else "") + RUN
        command = [sys.executable, "-c", code, *arguments]
        if profile_to is not None:
            env["BENCH_HTTP_PROFILE"] = str(profile_to)
    log_path = bed.directory / f"server-{uuid.uuid4().hex[:6]}.log"
    log: IO[bytes] = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=bed.directory, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}", bed.token, log_path)
    try:
        deadline = time.monotonic() + STARTUP
        with httpx.Client(base_url=server.base_url, timeout=5) as client:
            while True:
                server.check()
                try:
                    if client.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server did not answer within {STARTUP:g} s")
                time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# -- load: clients over HTTP, threads in this process ---------------------------------------


def in_threads(
    clients: int,
    warm: Callable[[int], None],
    timed: Callable[[int], None],
    count: int,
    server_pid: int | None,
) -> Window:
    """`warm(k)` then `timed(k)` in `clients` threads; the window is from when every thread
    finished its warm-up until the last one finished."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            warm(k)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
            raise
        barrier.wait()
        try:
            timed(k)
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = Mark.now(server_pid)
    for thread in threads:
        thread.join()
    end = Mark.now(server_pid)
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}") from errors[0]
    return Window.between(count, start, end)


def direct_load(producer: EventProducer, warm: Work, timed: Work, server_pid: int | None) -> Window:
    """16 threads calling the producer (publish for single events, publish_many otherwise)."""

    def send(calls: list[list[Event]]) -> None:
        for call in calls:  # each Event built here, as an in-process game service does
            if len(call) == 1:
                e = call[0]
                producer.publish(moved(e.aggregate_type, e.aggregate_id, e.version))
            else:
                producer.publish_many(
                    [moved(e.aggregate_type, e.aggregate_id, e.version) for e in call]
                )

    return in_threads(
        len(timed.events),
        lambda k: send(warm.events[k]),
        lambda k: send(timed.events[k]),
        timed.count,
        server_pid,
    )


def _expect(response: httpx.Response, events: int) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
    if events and response.content.count(b",") != events - 1:
        raise RuntimeError(f"expected {events} positions: {response.text[:500]}")


def http_threads(
    server: Server, path: str, warm: list[list[bytes]], timed: list[list[bytes]], count: int
) -> Window:
    """Each client a thread with its own keep-alive httpx.Client; POST bodies (GET when the
    body is empty)."""
    sessions = [
        httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) for _ in timed
    ]
    per_body = count // max(1, sum(len(b) for b in timed))

    def send(k: int, bodies: list[bytes]) -> None:
        session = sessions[k]
        for body in bodies:
            if body:
                _expect(session.post(path, content=body), per_body)
            else:
                _expect(session.get(path), 0)

    try:
        return in_threads(
            len(timed),
            lambda k: send(k, warm[k]),
            lambda k: send(k, timed[k]),
            count,
            server.pid,
        )
    finally:
        for session in sessions:
            session.close()


def http_async(
    server: Server, path: str, warm: list[list[bytes]], timed: list[list[bytes]], count: int
) -> Window:
    """One httpx.AsyncClient (as many keep-alive connections as clients), a task per
    client."""
    per_body = count // max(1, sum(len(b) for b in timed))

    async def run() -> Window:
        limits = httpx.Limits(max_connections=len(timed), max_keepalive_connections=len(timed))
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=server.headers(), timeout=60, limits=limits
        ) as client:

            async def send(bodies: list[bytes]) -> None:
                for body in bodies:
                    if body:
                        _expect(await client.post(path, content=body), per_body)
                    else:
                        _expect(await client.get(path), 0)

            await asyncio.gather(*(send(b) for b in warm))
            start = Mark.now(server.pid)
            await asyncio.gather(*(send(b) for b in timed))
            end = Mark.now(server.pid)
            return Window.between(count, start, end)

    return asyncio.run(run())


def http_load(
    mode: str,
    server: Server,
    path: str,
    warm: list[list[bytes]],
    timed: list[list[bytes]],
    count: int,
) -> Window:
    load_with = http_async if mode == "async" else http_threads
    return load_with(server, path, warm, timed, count)


def check_stored(store: EventStore, timed: Work) -> None:
    """Every client's last event is stored (the server's answers were checked already)."""
    for calls in timed.events:
        last = calls[-1][-1]
        found = store.read_aggregates({last.aggregate_id: last.version - 1}, limit=2)
        if len(found) != 1 or found[0].version != last.version:
            raise RuntimeError(f"{last.aggregate_id} does not end at v{last.version}")


# -- the groups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    rounds: int
    clients: int
    singles: int
    """Single events per client per round."""
    batches: int
    """Batches of BATCH per client per round."""
    gets: int
    plain_gets: int
    ceiling: int
    """Requests per client, ceiling group."""
    warm_singles: int = 10
    warm_batches: int = 2


@dataclass
class Figures:
    """A measure's windows, HTTP and direct, round by round."""

    http: list[Window] = field(default_factory=list)
    direct: list[Window] = field(default_factory=list)

    @staticmethod
    def median(windows: list[Window]) -> Window:
        ordered = sorted(windows, key=lambda w: w.rate)
        return ordered[len(ordered) // 2]


def throughput_group(
    bed: Bed,
    server: Server,
    producer: EventProducer,
    sizes: Sizes,
    mode: str,
    *,
    per_request: int,
) -> Figures:
    name = "single" if per_request == 1 else "batch"
    requests = sizes.singles if per_request == 1 else sizes.batches
    warm_requests = sizes.warm_singles if per_request == 1 else sizes.warm_batches
    figures = Figures()
    say(
        f"{bed.backend} {name}: {sizes.clients} clients x {requests} requests of {per_request} "
        f"event(s), {sizes.rounds} round(s) {load()}"
    )
    for r in range(sizes.rounds):
        sides = ["direct", "http"] if r % 2 == 0 else ["http", "direct"]
        for side in sides:
            tag = f"{name}-{side}-r{r}-{uuid.uuid4().hex[:4]}"
            warm = work(f"{tag}-warm", sizes.clients, warm_requests, per_request)
            timed = work(tag, sizes.clients, requests, per_request)
            if side == "direct":
                window = direct_load(producer, warm, timed, server.pid)
                figures.direct.append(window)
            else:
                window = http_load(
                    mode, server, "/v1/events", warm.bodies(), timed.bodies(), timed.count
                )
                figures.http.append(window)
            check_stored(bed.store, timed)
            say(
                f"    round {r + 1} {side:6}: {window.rate:8,.0f} events/s ({window.count:,} "
                f"in {window.seconds:.2f} s) {load()}"
            )
    return figures


@dataclass(frozen=True)
class Latencies:
    http: list[float]
    direct: list[float]
    client_us: float
    """CPU of this process per HTTP GET (the client's share of the latency)."""
    server_us: float
    """CPU of the server per GET (it idles while the direct side runs)."""

    @staticmethod
    def p(values: Sequence[float], q: float) -> float:
        """Nearest rank, ms."""
        ordered = sorted(values)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def state_group(bed: Bed, server: Server, sizes: Sizes) -> dict[str, Latencies]:
    reducers: list[Reducer] = importlib.import_module("bench_http_reducers").REDUCERS
    replayer = Replayer(bed.store, reducers)  # snapshots on, as the server's
    say(
        f"{bed.backend} state: {EVENTS:,}-event aggregates; {sizes.gets} gets (warm snapshots), "
        f"{sizes.plain_gets} (no snapshots), taking turns {load()}"
    )
    found: dict[str, Latencies] = {}
    cases = (
        ("snapshots", PLAYER, True, sizes.gets),
        ("snapshots, anonymous", PLAYER, False, sizes.gets),
        ("no snapshots", PLAIN, True, sizes.plain_gets),
    )
    for case, aggregate_id, with_token, gets in cases:
        with httpx.Client(
            base_url=server.base_url, headers=server.headers(with_token), timeout=60
        ) as client:
            path = f"/v1/aggregates/{aggregate_id}/state"

            def http_get(client: httpx.Client = client, path: str = path) -> dict[str, Any]:
                response = client.get(path)
                _expect(response, 0)
                document: dict[str, Any] = response.json()
                return document

            for _ in range(5):  # warm-up: snapshots stored, look-ups cached, connection open
                document = http_get()
                result = replayer.replay_to(aggregate_id)
            expected_snapshot = EVENTS if aggregate_id == PLAYER else None
            if (
                document["state"] != result.state
                or document["version"] != EVENTS
                or result.version != EVENTS
                or document["snapshot_version"] != expected_snapshot
                or result.snapshot_version != expected_snapshot
            ):
                raise RuntimeError(f"{case}: the sides differ: {document} / {result}")
            http_times: list[float] = []
            direct_times: list[float] = []
            client_cpu, server_cpu = 0.0, process_cpu(server.pid)
            for _ in range(gets):
                own = time.process_time()
                started = time.perf_counter()
                http_get()
                http_times.append(time.perf_counter() - started)
                client_cpu += time.process_time() - own
                started = time.perf_counter()
                replayer.replay_to(aggregate_id)
                direct_times.append(time.perf_counter() - started)
            server_cpu = process_cpu(server.pid) - server_cpu
        found[case] = Latencies(
            http_times, direct_times, client_cpu / gets * 1e6, server_cpu / gets * 1e6
        )
        say(
            f"    {case}: HTTP p50 {Latencies.p(http_times, 0.5):.2f} ms, direct p50 "
            f"{Latencies.p(direct_times, 0.5):.2f} ms {load()}"
        )
    return found


def ceiling_group(server: Server, sizes: Sizes, mode: str) -> dict[str, Window]:
    say(f"ceiling: {sizes.clients} clients x {sizes.ceiling} GETs {load()}")
    found = {}
    for path in ("/v1/health", "/v1/info"):
        warm = [[b""] * 5 for _ in range(sizes.clients)]
        timed = [[b""] * sizes.ceiling for _ in range(sizes.clients)]
        window = http_load(mode, server, path, warm, timed, sizes.clients * sizes.ceiling)
        found[path] = window
        say(f"    GET {path}: {window.rate:,.0f} requests/s {load()}")
    return found


# -- test beds ------------------------------------------------------------------------------


@contextmanager
def postgres_bed(url: str, directory: Path, patch_nodelay: bool) -> Iterator[Bed]:
    schema = f"bench_http_{uuid.uuid4().hex[:8]}"
    store = open_store(url, schema=schema)
    try:
        store.migrate()
        yield prepare(Bed("postgres", store, url, schema, directory, "", patch_nodelay))
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def sqlite_bed(directory: Path, patch_nodelay: bool) -> Iterator[Bed]:
    path = directory / f"bench-http-{uuid.uuid4().hex[:6]}.db"
    url = f"sqlite:///{path}"
    store = open_store(url)
    try:
        store.migrate()
        yield prepare(Bed("sqlite", store, url, None, directory, "", patch_nodelay))
    finally:
        store.close()


def prepare(bed: Bed) -> Bed:
    """The token and the two aggregates whose state is read."""
    from eventstore.web import issue_token

    token = issue_token(bed.store, f"bench-{uuid.uuid4().hex[:6]}", ["read", "append"])
    append_history(bed.store, "Player", PLAYER)
    append_history(bed.store, "PlainPlayer", PLAIN)
    return Bed(bed.backend, bed.store, bed.url, bed.schema, bed.directory, token, bed.patch_nodelay)


# -- the report -----------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    measure: str
    http: str
    direct: str
    ratio: str
    aim: str
    figures: dict[str, Any]


def verdict(ratio: float, aim: float) -> str:
    return f"≥ {aim:g}x: {'met' if ratio >= aim else '**not met**'}"


def throughput_row(backend: str, measure: str, figures: Figures, aim: float | None) -> Row:
    http, direct = Figures.median(figures.http), Figures.median(figures.direct)
    ratio = http.rate / direct.rate
    rounds_http = " / ".join(f"{w.rate:,.0f}" for w in figures.http)
    rounds_direct = " / ".join(f"{w.rate:,.0f}" for w in figures.direct)
    return Row(
        backend,
        measure,
        f"{http.rate:,.0f} events/s (rounds {rounds_http})",
        f"{direct.rate:,.0f} events/s (rounds {rounds_direct})",
        f"{ratio:.2f}x",
        verdict(ratio, aim) if aim else "(for information)",
        {
            "http_rate": http.rate,
            "direct_rate": direct.rate,
            "ratio": ratio,
            "aim": aim,
            "http_rounds": [asdict(w) for w in figures.http],
            "direct_rounds": [asdict(w) for w in figures.direct],
        },
    )


def latency_row(backend: str, case: str, found: Latencies) -> Row:
    p = Latencies.p
    h50, h99, d50, d99 = (
        p(found.http, 0.5),
        p(found.http, 0.99),
        p(found.direct, 0.5),
        p(found.direct, 0.99),
    )
    who = "token" if case != "snapshots, anonymous" else "no token"
    return Row(
        backend,
        f"GET state, {EVENTS:,} events, {case} ({len(found.http)} gets, {who})",
        f"p50 {h50:.2f} ms, p99 {h99:.2f} ms",
        f"`replay_to`: p50 {d50:.2f} ms, p99 {d99:.2f} ms",
        f"{h50 / d50:.2f}x the time (p50); p99 {h99 / d99:.2f}x",
        f"(no aim; CPU per GET: client {found.client_us:,.0f} µs, server "
        f"{found.server_us:,.0f} µs)",
        {
            "http_p50_ms": h50,
            "http_p99_ms": h99,
            "direct_p50_ms": d50,
            "direct_p99_ms": d99,
            "ratio_p50": h50 / d50,
            "ratio_p99": h99 / d99,
            "gets": len(found.http),
            "client_cpu_us": found.client_us,
            "server_cpu_us": found.server_us,
        },
    )


def cpu_lines(backend: str, measure: str, figures: Figures, unit: str) -> list[dict[str, Any]]:
    lines = []
    for side, windows in (("HTTP", figures.http), ("direct", figures.direct)):
        w = Figures.median(windows)
        lines.append(
            {
                "backend": backend,
                "measure": measure,
                "side": side,
                "rate": w.rate,
                "unit": unit,
                "own_us": w.per(w.own),
                "server_us": w.per(w.server),
                "rest_us": w.per(w.rest),
                "machine_us": w.per(w.machine),
                "busy_cores": w.machine / w.seconds,
            }
        )
    return lines


def print_report(rows: list[Row], cpu: list[dict[str, Any]], loads: dict[str, Any]) -> None:
    say("\n### HTTP API against the library in this process (same run, same store)\n")
    say("| backend | measure | over HTTP | direct, same run | ratio | aim |")
    say("|---|---|---:|---|---:|---|")
    for row in rows:
        say(
            f"| {row.backend} | {row.measure} | {row.http} | {row.direct} | {row.ratio} "
            f"| {row.aim} |"
        )
    say("\n### CPU per event (or request), µs: medians' windows\n")
    say(
        "| backend | measure | side | rate/s | this process (clients / direct) | server "
        "| rest (PostgreSQL, others) | machine | cores busy |"
    )
    say("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for c in cpu:
        say(
            f"| {c['backend']} | {c['measure']} | {c['side']} | {c['rate']:,.0f} "
            f"| {c['own_us']:,.0f} | {c['server_us']:,.0f} | {c['rest_us']:,.0f} "
            f"| {c['machine_us']:,.0f} | {c['busy_cores']:.2f} |"
        )
    say(
        f"\nload (1, 5, 15 min): start {fmt_load(loads['start'])}, end {fmt_load(loads['end'])}"
        f"; {os.cpu_count()} cores"
    )


def fmt_load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


# -- --profile ------------------------------------------------------------------------------


def profile_group(bed: Bed, sizes: Sizes, mode: str) -> dict[str, Any]:
    """The server under cProfile (every thread), then per-call costs in this process."""
    out = bed.directory / f"server-{uuid.uuid4().hex[:6]}.prof"
    say(f"\n{bed.backend} profile: the server under cProfile (every thread) {load()}")
    tag = uuid.uuid4().hex[:4]
    warm = work(f"prof-warm-{tag}", sizes.clients, sizes.warm_singles, 1)
    single = work(f"prof-single-{tag}", sizes.clients, sizes.singles, 1)
    batch = work(f"prof-batch-{tag}", sizes.clients, sizes.batches, BATCH)
    nothing: list[list[bytes]] = [[] for _ in range(sizes.clients)]
    found: dict[str, Any] = {}
    with serve(bed, profile_to=out) as server:
        dumps = 0

        def snapshot() -> Path:
            """SIGUSR2: the server writes what it did since the last one to OUT.<n>."""
            nonlocal dumps
            dumps += 1
            path = out.with_name(f"{out.name}.{dumps}")
            server.process.send_signal(signal.SIGUSR2)
            deadline, size = time.monotonic() + 60, -1
            while not path.exists() or path.stat().st_size != size:  # written, not growing
                size = path.stat().st_size if path.exists() else -1
                server.check()
                if time.monotonic() > deadline:
                    raise TimeoutError("the profiled server wrote no profile")
                time.sleep(0.3)
            return path

        http_load(mode, server, "/v1/events", nothing, warm.bodies(), warm.count)
        snapshot()  # start-up and warm-up: left out
        for name, timed in (("single", single), ("batch", batch)):
            window = http_load(mode, server, "/v1/events", nothing, timed.bodies(), timed.count)
            say(
                f"    {name}: {window.rate:,.0f} events/s under cProfile; server CPU "
                f"{window.per(window.server):,.0f} µs per event, clients "
                f"{window.per(window.own):,.0f} µs"
            )
            found[name] = print_stats(f"{name} events", pstats.Stats(str(snapshot())), window)
        with httpx.Client(base_url=server.base_url, headers=server.headers()) as client:
            start = Mark.now(server.pid)
            for _ in range(sizes.gets):
                _expect(client.get(f"/v1/aggregates/{PLAYER}/state"), 0)
            window = Window.between(sizes.gets, start, Mark.now(server.pid))
        say(f"    state: {sizes.gets} GETs, warm snapshots, one client")
        found["state"] = print_stats("state GETs", pstats.Stats(str(snapshot())), window)
    found["costs"] = component_costs(bed)
    return found


def layer(path: str) -> str:
    """The package a profiled function is in: eventstore.<module>, a site package, a
    standard library module, or C built-ins."""
    if path == "~":
        return "C built-ins (socket, locks, json's C parts, ...)"
    if "/src/eventstore/" in path:
        parts = path.split("/src/eventstore/", 1)[1].split("/")
        return "eventstore." + (parts[0] if len(parts) > 1 else parts[0].removesuffix(".py"))
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/")[0].removesuffix(".py")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib " + rest.split("/")[0].removesuffix(".py")
    return path


OURS = ("eventstore/", "starlette/", "fastapi/", "uvicorn/", "h11/", "anyio/", "psycopg")


def print_stats(title: str, stats: pstats.Stats, window: Window, top: int = 18) -> dict[str, Any]:
    """CPU time by function (own), and the cumulative CPU time of the web stack's and our
    functions; µs per event or request are under the profiler (which inflates them)."""
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    entries = stats.stats  # type: ignore[attr-defined]

    def where(key: tuple[str, int, str]) -> str:
        path, line, name = key
        for marker in ("site-packages/", "src/", "lib/python3.11/"):
            if marker in path:
                path = path.split(marker, 1)[1]
        return f"{name} ({path}:{line})" if line else name

    total = sum(e[2] for e in entries.values()) or 1.0
    per = 1e6 / window.count
    unit = "request" if title.startswith("state") else "event"
    say(
        f"    server profile, {title}: {total:.2f} s of CPU in all threads "
        f"({total * per:,.0f} µs per {unit} under the profiler)"
    )
    say(f"      own CPU time: share, µs per {unit}, calls")
    for key, (_, calls, own, _, _) in sorted(entries.items(), key=lambda i: -i[1][2])[:top]:
        say(f"        {own / total:6.1%} {own * per:8,.0f} {calls:>8,}  {where(key)}")
    layers: dict[str, float] = {}
    for key, entry in entries.items():
        layers[layer(key[0])] = layers.get(layer(key[0]), 0.0) + entry[2]
    say(f"      own CPU time by package: share, µs per {unit}")
    for name, own in sorted(layers.items(), key=lambda i: -i[1])[:top]:
        say(f"        {own / total:6.1%} {own * per:8,.0f}  {name}")
    ours = {k: e for k, e in entries.items() if any(m in k[0] for m in OURS)}
    say(f"      cumulative CPU time, web stack and eventstore: share, µs per {unit}, calls")
    for key, (_, calls, _, cum, _) in sorted(ours.items(), key=lambda i: -i[1][3])[:top]:
        say(f"        {cum / total:6.1%} {cum * per:8,.0f} {calls:>8,}  {where(key)}")
    return {
        "cpu_seconds": total,
        "count": window.count,
        "layers": layers,
        "own": {where(k): e[2] for k, e in sorted(entries.items(), key=lambda i: -i[1][2])[:top]},
        "cumulative": {
            where(k): e[3] for k, e in sorted(ours.items(), key=lambda i: -i[1][3])[:top]
        },
    }


def per_call(call: Callable[[], object], calls: int) -> float:
    """µs per call (wall), the median of 5 batches of `calls` // 5."""
    each = max(1, calls // 5)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(each):
            call()
        times.append((time.perf_counter() - started) / each * 1e6)
    return statistics.median(times)


def component_costs(bed: Bed) -> dict[str, float]:
    """What the server does per request, timed in this process (µs per call, wall)."""
    from eventstore.web import verify_token
    from eventstore.web._app import _parse_events

    one = body_of([moved("Player", "cost-1", 1)])
    hundred = body_of([moved("Player", "cost-100", v) for v in range(1, BATCH + 1)])
    reducers: list[Reducer] = importlib.import_module("bench_http_reducers").REDUCERS
    replayer = Replayer(bed.store, reducers)
    replayer.replay_to(PLAYER)
    costs: dict[str, float] = {}
    costs["verify_token (store.find_token + sha256)"] = per_call(
        lambda: verify_token(bed.store, bed.token), 500
    )
    costs["_parse_events, 1 event body"] = per_call(lambda: _parse_events(one, 1000), 2000)
    costs["_parse_events, 100 event body"] = per_call(lambda: _parse_events(hundred, 1000), 200)
    costs["json.loads, 100 event body"] = per_call(lambda: json.loads(hundred), 200)
    costs["replay_to, warm snapshot"] = per_call(lambda: replayer.replay_to(PLAYER), 300)
    costs["replay_document + encode_json, warm snapshot"] = per_call(
        lambda: encode_json(replayer.replay_document(PLAYER)), 300
    )
    with EventProducer(bed.store) as producer:
        version = iter(range(1, 10_000))
        costs["publish, 1 thread, 1 event (producer round trip)"] = per_call(
            lambda: producer.publish(moved("Player", "cost-lone", next(version))), 300
        )
        costs["store.append_events, 1 event, no producer"] = per_call(
            lambda: bed.store.append_events([moved("Player", "cost-lone", next(version))]), 300
        )
    say("    per call in this process (µs, wall, median of 5 batches):")
    for name, us in costs.items():
        say(f"      {us:9.1f}  {name}")
    return costs


# -- main -----------------------------------------------------------------------------------


def run_backend(
    bed: Bed, sizes: Sizes, mode: str, profile: bool
) -> tuple[list[Row], list[dict[str, Any]], dict[str, Any]]:
    rows: list[Row] = []
    cpu: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with serve(bed) as server, EventProducer(bed.store) as producer:
        single = throughput_group(bed, server, producer, sizes, mode, per_request=1)
        batch = throughput_group(bed, server, producer, sizes, mode, per_request=BATCH)
        states = state_group(bed, server, sizes)
        ceiling = ceiling_group(server, sizes, mode)
        server.check()
    rows.append(throughput_row(bed.backend, f"{sizes.clients} clients, single events", single, 0.5))
    rows.append(
        throughput_row(bed.backend, f"{sizes.clients} clients, batches of {BATCH}", batch, 0.8)
    )
    for case, found in states.items():
        rows.append(latency_row(bed.backend, case, found))
    for path, window in ceiling.items():
        rows.append(
            Row(
                bed.backend,
                f"GET {path}, {sizes.clients} clients"
                + (" (token look-up)" if path == "/v1/info" else " (no token, no store)"),
                f"{window.rate:,.0f} requests/s",
                "",
                "",
                "(for information: the HTTP layer's ceiling)",
                {"rate": window.rate, "window": asdict(window)},
            )
        )
    cpu += cpu_lines(bed.backend, "single", single, "events")
    cpu += cpu_lines(bed.backend, "batch", batch, "events")
    for path, window in ceiling.items():
        cpu += cpu_lines(bed.backend, f"GET {path}", Figures([window], [window]), "requests")[:1]
    if profile:
        extra = profile_group(bed, sizes, mode)
    return rows, cpu, extra


def wait_for_load(below: float, patience: float) -> None:
    started = time.monotonic()
    while os.getloadavg()[0] >= below:
        waited = time.monotonic() - started
        if waited > patience:
            say(f"the load stayed at or above {below:g} for {waited:.0f} s; going on {load()}")
            return
        if int(waited) % 60 < 10:
            say(f"waiting for the 1-minute load to fall below {below:g} {load()}")
        time.sleep(10)


def main() -> None:
    global _out
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings = Settings()
    parser.add_argument("--database-url", default=settings.database_url)
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite (after PostgreSQL)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only (with --sqlite)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round: a smoke run")
    parser.add_argument("--rounds", type=int, help="default 3 (quick 1)")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument(
        "--client",
        choices=("threads", "async"),
        default="threads",
        help="threads: a thread and an httpx.Client per client (the lighter); async: one "
        "httpx.AsyncClient, a task per client",
    )
    parser.add_argument("--singles", type=int, help="per client per round (default 250)")
    parser.add_argument("--batches", type=int, help="per client per round (default 20)")
    parser.add_argument("--gets", type=int, help="state gets, warm snapshots (default 300)")
    parser.add_argument("--plain-gets", type=int, help="state gets, no snapshots (default 60)")
    parser.add_argument("--profile", action="store_true", help="cProfile the server, and more")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write the figures as JSON to PATH (- or nothing: stdout, the progress to stderr)",
    )
    parser.add_argument(
        "--patch-nodelay",
        action="store_true",
        help="start the server with TCP_NODELAY on its listening socket (see NODELAY: a "
        "stand-in for a fix in src/, to measure what it changes)",
    )
    parser.add_argument(
        "--wait-for-load",
        type=float,
        metavar="LOAD",
        help="first wait until the 1-minute load average is below LOAD (other work on the "
        "machine skews every figure), at most --wait-max seconds",
    )
    parser.add_argument("--wait-max", type=float, default=1800.0)
    args = parser.parse_args()
    if args.json == "-":
        _out = sys.stderr
    postgres = not args.no_postgres
    if postgres and (not args.database_url or not args.database_url.startswith("postgres")):
        parser.error("give --database-url postgresql://... (or --sqlite --no-postgres)")
    if not postgres and not args.sqlite:
        parser.error("--no-postgres needs --sqlite")
    quick = args.quick
    sizes = Sizes(
        rounds=args.rounds or (1 if quick else 3),
        clients=args.clients,
        singles=args.singles or (20 if quick else 250),
        batches=args.batches or (3 if quick else 20),
        gets=args.gets or (30 if quick else 300),
        plain_gets=args.plain_gets or (5 if quick else 60),
        ceiling=20 if quick else 200,
    )
    if args.wait_for_load is not None:
        wait_for_load(args.wait_for_load, args.wait_max)
    started = datetime.now(UTC)
    loads: dict[str, Any] = {"start": list(os.getloadavg())}
    stack_info = server_stack() + (", TCP_NODELAY patched in" if args.patch_nodelay else "")
    source = source_state()
    say(
        f"bench/http.py {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {source}, client "
        f"{args.client}, server {stack_info}, load {fmt_load(loads['start'])}"
        f"{'; quick run: small sizes, not figures' if quick else ''}"
    )
    rows: list[Row] = []
    cpu: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-http-")))
        (directory / "bench_http_reducers.py").write_text(REDUCERS_MODULE)
        sys.path.append(str(directory))
        beds: list[Callable[[], Any]] = []
        if postgres:
            beds.append(lambda: postgres_bed(args.database_url, directory, args.patch_nodelay))
        if args.sqlite:
            beds.append(lambda: sqlite_bed(directory, args.patch_nodelay))
        for make in beds:
            with make() as bed:
                found, lines, extra = run_backend(bed, sizes, args.client, args.profile)
                rows += found
                cpu += lines
                if extra:
                    extras[bed.backend] = extra
            say()
    loads["end"] = list(os.getloadavg())
    print_report(rows, cpu, loads)
    if args.json:
        document = {
            "started": started.isoformat(),
            "command": shlex.join([sys.executable, *sys.argv]),
            "cores": os.cpu_count(),
            "client": args.client,
            "server": stack_info,
            "source": source,
            "load": loads,
            "sizes": asdict(sizes),
            "results": [asdict(r) for r in rows],
            "cpu": cpu,
            "profile": extras,
        }
        text = json.dumps(document, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
