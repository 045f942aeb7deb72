"""Fixtures of the browser tests: a real `eventstore demo --serve` process on the embedded
default in a temporary directory, the same SQLite file opened by the test, and Debian's
headless chromium driven through /usr/bin/chromedriver.

Chromium and chromedriver come from `scripts/browser.sh`. Without them every test here
fails (it is not skipped), saying so: CI installs them before the tests.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from eventstore import EventStore, open_store
from eventstore.demo import reducers
from eventstore.replay import Replayer

CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_HINT = "run scripts/browser.sh (it installs Debian's chromium and chromium-driver)"
STARTUP_SECONDS = 120.0
VIEWPORT = (1400, 900)

_SERVING = re.compile(r"serving .*? at (http://[^\s/]+/)")
_TOKEN = re.compile(r"admin token .*\(shown once[^)]*\): (\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class DemoServer:
    """A running `eventstore demo --serve`."""

    url: str
    """Base address, ending with a slash."""
    database: Path
    """Its SQLite file."""
    admin_token: str
    output: list[str]
    """Every line it printed (stdout and stderr), for failure messages."""

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"


def _browser() -> str:
    """Chromium's path; the test fails (not skips) when it or chromedriver is missing."""
    found = shutil.which("chromium")
    missing = [
        name
        for name, present in (
            ("chromium", found is not None),
            (str(CHROMEDRIVER), CHROMEDRIVER.is_file()),
        )
        if not present
    ]
    if found is None or missing:
        pytest.fail(f"{' and '.join(missing)} not found: {BROWSER_HINT}", pytrace=False)
    return found


def _pump(stream: IO[str], lines: queue.Queue[str | None], keep: list[str]) -> None:
    for line in stream:
        clean = _ANSI.sub("", line.rstrip("\n"))
        keep.append(clean)
        lines.put(clean)
    lines.put(None)


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """`python -m eventstore.cli demo --serve --port 0` in a fresh directory: the demo world
    on the embedded default (`eventstore.db` there), then the HTTP API and the page."""
    _browser()  # fail first, and clearly, when there is no browser to test with
    workdir = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    env.update(COLUMNS="400", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "eventstore.cli", "demo", "--serve", "--port", "0"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, lines, output), daemon=True).start()
    url = token = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                pytest.fail(f"the demo server did not start in {STARTUP_SECONDS:.0f} s")
            if line is None:
                pytest.fail(
                    f"the demo server exited ({process.wait()}):\n" + "\n".join(output[-40:])
                )
            if found := _TOKEN.search(line):
                token = found.group(1)
            if found := _SERVING.search(line):
                url = found.group(1)
        assert token is not None, "the demo printed no admin token:\n" + "\n".join(output)
        yield DemoServer(url, workdir / "eventstore.db", token, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def store(demo_server: DemoServer) -> Iterator[EventStore]:
    """The demo server's SQLite file, opened by the test process."""
    with open_store(demo_server.database_url) as opened:
        yield opened


@dataclass(frozen=True)
class DemoWorld:
    """The world the demo played, as stored before any test appended to the store."""

    world_id: str
    end: int
    """The last position of the demo's events."""

    @property
    def prefix(self) -> str:
        return f"{self.world_id}-"


@pytest.fixture(scope="session")
def demo_world(store: EventStore) -> DemoWorld:
    """Every test asks for it, so that it is read before any test appends."""
    worlds = store.list_aggregates("World", limit=10)
    assert len(worlds) == 1, f"expected the demo's one world, found {worlds}"
    return DemoWorld(worlds[0].aggregate_id, store.log_horizon().head)


@pytest.fixture(scope="session")
def replayer(store: EventStore) -> Replayer:
    """The demo's reducers on the same file, without snapshots: computed here from the
    events alone, whatever the server cached."""
    return Replayer(store, reducers.ALL, snapshots=False)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless chromium: Debian's, with its chromedriver given explicitly (so that Selenium
    never downloads a driver or a browser)."""
    options = webdriver.ChromeOptions()
    options.binary_location = _browser()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        # The window includes the browser's own chrome: size it so that the page gets VIEWPORT.
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(VIEWPORT[0] * 2 - int(inner[0]), VIEWPORT[1] * 2 - int(inner[1]))
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: webdriver.Chrome) -> list[str]:
    """The page's console errors since the last call (JavaScript exceptions; failed requests,
    which some tests cause on purpose and the page reports itself, are left out)."""
    entries: list[dict[str, Any]] = driver.execute("getLog", {"type": "browser"})["value"]
    return [
        str(entry["message"])
        for entry in entries
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


@pytest.fixture
def page(browser: webdriver.Chrome, demo_server: DemoServer) -> Iterator[webdriver.Chrome]:
    """The browser on a fresh page of the demo server: no token, no messages. The test fails
    when the page logged an error meanwhile."""
    browser.get(demo_server.url)
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    _console_errors(browser)
    yield browser
    severe = _console_errors(browser)
    assert not severe, f"errors in the page's console: {severe}"
