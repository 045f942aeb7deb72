"""The time-travel page in a real browser, against a real `eventstore demo --serve`: what it
shows is compared with what `Replayer` computes in the test from the same SQLite file.

`EVENTSTORE_UPDATE_SCREENSHOT=1` also writes the README's picture, docs/time-travel.png
(otherwise the screenshot goes to the test's temporary directory, so that a test run leaves
the work tree as it was).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from eventstore import Event, EventStore
from eventstore.consumers import ProjectionRunner, StoreTailSource
from eventstore.demo import projections
from eventstore.replay import Replayer
from tests.browser.conftest import VIEWPORT, DemoServer, DemoWorld

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "time-travel.png"
TIMEOUT = 60.0


# -- helpers ---------------------------------------------------------------------------------


def wait_for(driver: Chrome, what: str, condition: Callable[[Chrome], Any]) -> Any:
    """Wait until `condition` is truthy (an AssertionError in it fails at once); on timeout,
    say what was awaited and what the page's message area showed."""

    def check(d: Chrome) -> Any:
        try:
            return condition(d)
        except StaleElementReferenceException:  # re-rendered between the find and the read
            return None

    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.05).until(check)
    except Exception as error:
        shown = driver.find_element(By.ID, "messages").text
        raise AssertionError(f"waiting for {what}: {error!r}; messages: {shown!r}") from error


def css(driver: Chrome, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def by_id(driver: Chrome, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def attr(element: WebElement, name: str) -> str:
    value = element.get_attribute(name)
    assert value is not None, f"no {name} on {element}"
    return value


def click(driver: Chrome, selector: str) -> None:
    """Click the element once it is there (found again if the page re-renders it)."""

    def clicked(d: Chrome) -> bool:
        found = css(d, selector)
        if not found:
            return False
        found[0].click()
        return True

    wait_for(driver, f"{selector} to click", clicked)


def open_page(driver: Chrome, server: DemoServer, fragment: str = "") -> None:
    driver.get(server.url + (f"#{fragment}" if fragment else ""))


def shown_state(driver: Chrome, aggregate_id: str, version: int) -> Any:
    """The state the page shows once it shows `aggregate_id` at `version` (its JSON text)."""

    def ready(d: Chrome) -> bool:
        box = by_id(d, "state")
        status = box.get_attribute("data-status")
        assert status != "error", f"the page failed to show the state: {by_id(d, 'messages').text}"
        return (
            status == "ready"
            and box.get_attribute("data-aggregate-id") == aggregate_id
            and box.get_attribute("data-version") == str(version)
        )

    wait_for(driver, f"the state of {aggregate_id} at version {version}", ready)
    return json.loads(attr(by_id(driver, "state"), "textContent"))


def timeline_versions(driver: Chrome) -> list[int]:
    return [int(attr(row, "data-version")) for row in css(driver, "#timeline tr[data-version]")]


def wait_timeline(driver: Chrome, first: int) -> list[int]:
    def ready(d: Chrome) -> bool:
        body = by_id(d, "timeline")
        return body.get_attribute("data-status") == "ready" and body.get_attribute(
            "data-from"
        ) == str(first)

    wait_for(driver, f"the timeline page from version {first}", ready)
    return timeline_versions(driver)


def open_aggregate(driver: Chrome, aggregate_id: str) -> None:
    """Type the id in the finder and open it."""
    field = by_id(driver, "aggregate-id")
    field.clear()
    field.send_keys(aggregate_id)
    by_id(driver, "find").click()


def api(server: DemoServer, path: str) -> Any:
    """The server's JSON answer, or for an error its problem details."""
    try:
        with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def error_messages(driver: Chrome) -> list[str]:
    return [e.text for e in css(driver, "#messages [data-testid=error]")]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def check_changes_shown(
    driver: Chrome, replayer: Replayer, aggregate_id: str, version: int
) -> None:
    """The changes listed and highlighted are those of the event at `version`."""
    step = next(replayer.history(aggregate_id, from_version=version, to_version=version))
    listed = {attr(row, "data-path") for row in css(driver, "#changes tr[data-path]")}
    assert listed == {c.path for c in step.changes}
    highlighted = {attr(node, "data-path") for node in css(driver, "#state .jnode.changed")}
    assert highlighted == {c.path for c in step.changes if c.op != "remove"}
    assert highlighted, "every demo event changes at least the state's version"
    assert by_id(driver, "event").find_element(
        By.CSS_SELECTOR, "[data-testid=event-type]"
    ).text == (step.event.event_type)
    selected = css(driver, "#timeline tr.selected")
    assert [attr(row, "data-version") for row in selected] == [str(version)]


def chunks(events: list[Event], size: int) -> Iterable[list[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


# -- the tests -------------------------------------------------------------------------------


def test_scrubbing_a_player_shows_the_state_replayed_at_each_version(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, replayer: Replayer
) -> None:
    players = [f"{demo_world.prefix}player-{i}" for i in range(10)]
    player = max(players, key=lambda p: replayer.replay_to(p).version)
    latest = replayer.replay_to(player)
    open_page(page, demo_server)
    open_aggregate(page, player)
    assert shown_state(page, player, latest.version) == latest.state
    assert attr(by_id(page, "scrubber"), "max") == str(latest.version)

    # Drag the scrubber's thumb from the middle a quarter of the way to the left.
    scrubber = by_id(page, "scrubber")
    ActionChains(page).click_and_hold(scrubber).move_by_offset(
        -scrubber.size["width"] // 4, 0
    ).release().perform()
    dragged = int(attr(by_id(page, "version"), "value"))
    assert 0 < dragged < latest.version, "the drag moved the scrubber into the history"
    assert shown_state(page, player, dragged) == replayer.replay_to(player, version=dragged).state
    check_changes_shown(page, replayer, player, dragged)

    # The keyboard moves it one version at a time.
    scrubber.send_keys(Keys.ARROW_LEFT)
    back = dragged - 1
    if back >= 1:
        assert shown_state(page, player, back) == replayer.replay_to(player, version=back).state
        check_changes_shown(page, replayer, player, back)
    scrubber.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert attr(by_id(page, "version"), "value") == str(back + 2)
    assert shown_state(page, player, back + 2) == replayer.replay_to(player, version=back + 2).state

    # So does typing a version.
    number = by_id(page, "version")
    number.clear()
    number.send_keys("0", Keys.ENTER)
    assert shown_state(page, player, 0) == replayer.replay_to(player, version=0).state
    assert css(page, "#state .jnode.changed") == []

    # And a game time: the state at it, as the replayer defines `at`.
    events = list(replayer.store.read_aggregates({player: 0}, limit=1000))
    middle = events[len(events) // 2].timestamp
    page.execute_script(
        "document.getElementById('game-time').value = arguments[0]",
        middle.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    )
    by_id(page, "at-go").click()
    at = replayer.replay_to(player, at=middle)
    assert at.version > 0
    assert shown_state(page, player, at.version) == at.state
    assert f"version {at.version}" in by_id(page, "scrub-note").text


def test_the_world_view_shows_each_zone_as_of_a_past_position(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, replayer: Replayer
) -> None:
    open_page(page, demo_server, "view=world")

    def shown_at(position: int | None) -> dict[str, dict[str, set[str]]]:
        def ready(d: Chrome) -> bool:
            box = by_id(d, "world")
            assert box.get_attribute("data-status") != "error", by_id(d, "messages").text
            return box.get_attribute("data-status") == "ready" and (
                position is None or box.get_attribute("data-position") == str(position)
            )

        wait_for(page, f"the world at position {position}", ready)
        zones: dict[str, dict[str, set[str]]] = {}
        for card in css(page, "#world [data-testid=zone]"):
            zones[attr(card, "data-zone")] = {
                kind: {
                    attr(chip, "data-aggregate-id")
                    for chip in card.find_elements(By.CSS_SELECTOR, f"[data-testid=zone-{kind}]")
                }
                for kind in ("player", "item")
            }
        return zones

    shown_at(None)  # the latest, first
    past = demo_world.end // 2
    field = by_id(page, "world-position")
    field.clear()
    field.send_keys(str(past), Keys.ENTER)
    shown = shown_at(past)

    expected: dict[str, dict[str, set[str]]] = {}
    for kind, aggregate_type in (("player", "Player"), ("item", "Item")):
        for found in replayer.iter_world(
            past, aggregate_type=aggregate_type, id_prefix=demo_world.prefix
        ):
            zone = found.state["zone"]
            if zone is not None:  # an item a player holds lies in no zone
                zone_sets = expected.setdefault(zone, {"player": set(), "item": set()})
                zone_sets[kind].add(found.aggregate_id)
    zones = replayer.replay_to(demo_world.world_id, position=past).state["zones"]
    assert set(zones) <= set(shown), "every zone of the world has its card"
    assert {z: s for z, s in shown.items() if s["player"] or s["item"]} == expected

    # It is the past: some player was elsewhere then than at the end of the demo.
    now = {
        found.aggregate_id: found.state["zone"]
        for found in replayer.iter_world(
            demo_world.end, aggregate_type="Player", id_prefix=demo_world.prefix
        )
    }
    then = {p: zone for zone, sets in shown.items() for p in sets["player"]}
    assert any(now[p] != zone for p, zone in then.items())

    # A player's chip opens it at its version as of that position.
    player = sorted(shown["forest"]["player"] or then)[0]
    at_past = replayer.replay_to(player, position=past)
    click(page, f"[data-testid=zone-player][data-aggregate-id='{player}']")
    assert shown_state(page, player, at_past.version) == at_past.state


def test_the_timeline_of_10000_events_is_read_a_page_at_a_time(
    page: Chrome,
    demo_server: DemoServer,
    demo_world: DemoWorld,
    store: EventStore,
    replayer: Replayer,
) -> None:
    aggregate_id = f"longrun-{uuid.uuid4().hex[:8]}-player"
    start = datetime(2026, 11, 2, tzinfo=UTC)
    zones = ["spawn", "forest", "harbor", "mines"]
    events = [
        Event.new(
            aggregate_type="Player",
            aggregate_id=aggregate_id,
            event_type="PlayerJoined",
            version=1,
            payload={"name": "marathon", "zone": "spawn"},
            metadata={"world": "longrun"},
            timestamp=start,
        )
    ]
    for version in range(2, 10_001):
        events.append(
            Event.new(
                aggregate_type="Player",
                aggregate_id=aggregate_id,
                event_type="PlayerMoved",
                version=version,
                payload={
                    "from_zone": zones[(version - 2) % 4],
                    "to_zone": zones[(version - 1) % 4],
                    "x": float(version),
                    "y": -float(version),
                },
                metadata={"world": "longrun"},
                timestamp=start + timedelta(seconds=version),
            )
        )
    for batch in chunks(events, 1000):
        store.append_events(batch)

    open_page(page, demo_server, f"view=aggregate&id={aggregate_id}")
    assert shown_state(page, aggregate_id, 10_000) == replayer.replay_to(aggregate_id).state
    assert wait_timeline(page, 9901) == list(range(9901, 10_001))

    by_id(page, "timeline-prev").click()
    assert wait_timeline(page, 9801) == list(range(9801, 9901))

    jump = by_id(page, "jump-version")
    jump.send_keys("5000", Keys.ENTER)
    assert (
        shown_state(page, aggregate_id, 5000)
        == replayer.replay_to(aggregate_id, version=5000).state
    )
    assert wait_timeline(page, 4901) == list(range(4901, 5001))
    assert [attr(r, "data-version") for r in css(page, "#timeline tr.selected")] == ["5000"]

    by_id(page, "timeline-next").click()
    assert wait_timeline(page, 5001) == list(range(5001, 5101))

    # Never more than a page in the page, and never more than a page asked for.
    requested: list[str] = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => n.includes('/events'))"
    )
    assert requested and all("limit=100" in url for url in requested), requested
    assert len(requested) <= 6, requested
    assert len(css(page, "#timeline tr")) <= 100


def test_cause_and_effect_links_lead_to_the_other_aggregate_at_that_version(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, store: EventStore
) -> None:
    picked: Event | None = None
    for number in range(50):
        for event in store.get_events_by_aggregate(f"{demo_world.prefix}player-{number}"):
            if event.event_type == "ItemPickedUp":
                picked = event
                break
        if picked is not None:
            break
    assert picked is not None, "the demo picks items up"
    effect = next(
        e
        for e in store.get_events_by_aggregate(picked.payload["item_id"])
        if e.metadata.get("causation_id") == picked.id
    )
    open_page(page, demo_server, f"view=aggregate&id={picked.aggregate_id}&v={picked.version}")
    shown_state(page, picked.aggregate_id, picked.version)
    wait_for(page, "the links", lambda d: by_id(d, "links").get_attribute("data-status") == "ready")
    assert (
        by_id(page, "links").find_element(By.CSS_SELECTOR, "[data-testid=correlation-id]").text
        == (picked.metadata["correlation_id"])
    )
    effect_link = f"[data-testid=effect-link][data-aggregate-id='{effect.aggregate_id}']"
    assert attr(page.find_element(By.CSS_SELECTOR, effect_link), "data-version") == str(
        effect.version
    )
    click(page, effect_link)
    shown_state(page, effect.aggregate_id, effect.version)

    def cause_link(d: Chrome) -> WebElement | None:
        found = css(d, "#links [data-testid=cause-link]")
        return (
            found[0]
            if found and by_id(d, "links").get_attribute("data-status") == "ready"
            else None
        )

    cause = wait_for(page, "the cause link", cause_link)
    assert (attr(cause, "data-aggregate-id"), attr(cause, "data-version")) == (
        picked.aggregate_id,
        str(picked.version),
    )
    click(page, "#links [data-testid=cause-link]")
    shown_state(page, picked.aggregate_id, picked.version)
    page.back()  # links are history entries
    shown_state(page, effect.aggregate_id, effect.version)


def test_aggregates_are_listed_by_type_and_prefix_a_page_at_a_time(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, store: EventStore
) -> None:
    open_page(page, demo_server)

    def listed(d: Chrome) -> list[str] | None:
        if by_id(d, "aggregate-list").get_attribute("data-status") != "ready":
            return None
        return [attr(b, "data-aggregate-id") for b in css(d, "[data-testid=aggregate-item]")]

    for field, value in (("list-type", "Item"), ("list-prefix", demo_world.prefix)):
        by_id(page, field).clear()
        by_id(page, field).send_keys(value)
    by_id(page, "list").click()
    items = [
        r.aggregate_id
        for r in store.list_aggregates("Item", id_prefix=demo_world.prefix, limit=1000)
    ]
    assert len(items) > 50
    assert wait_for(page, "the first page", lambda d: listed(d) == items[:50] or None)
    by_id(page, "list-next").click()
    assert wait_for(page, "the second page", lambda d: listed(d) == items[50:100] or None)
    by_id(page, "list-prev").click()
    assert wait_for(page, "the first page again", lambda d: listed(d) == items[:50] or None)
    click(page, f"[data-testid=aggregate-item][data-aggregate-id='{items[3]}']")
    latest = max(e.version for e in store.get_events_by_aggregate(items[3]))
    shown_state(page, items[3], latest)
    selected = css(page, "#aggregate-list button.selected")
    assert [attr(b, "data-aggregate-id") for b in selected] == [items[3]]


def test_errors_are_shown_and_user_data_stays_text(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, store: EventStore
) -> None:
    open_page(page, demo_server)
    wait_for(page, "the list of players", lambda d: css(d, "[data-testid=aggregate-item]"))

    open_aggregate(page, "no-such-aggregate")
    detail = api(demo_server, "/v1/aggregates/no-such-aggregate")["detail"]
    wait_for(page, "the 404", lambda d: any(detail in m and "404" in m for m in error_messages(d)))

    # A wrong token: kept for the tab only, sent, refused, and said so.
    by_id(page, "token").send_keys("not-a-token")
    by_id(page, "token-save").click()
    assert page.execute_script("return sessionStorage.getItem('eventstore.token')") == "not-a-token"
    wait_for(page, "the 401", lambda d: any("401" in m for m in error_messages(d)))
    by_id(page, "token-clear").click()
    assert page.execute_script("return sessionStorage.getItem('eventstore.token')") is None

    # Ids and payloads are shown as text, never run as HTML.
    hostile = f'<img src=x onerror="window.pwned=1">-{uuid.uuid4().hex[:6]}'
    name = "<b>not bold</b><script>window.pwned=2</script>"
    store.append_event(
        Event.new(
            aggregate_type="Player",
            aggregate_id=hostile,
            event_type="PlayerJoined",
            version=1,
            payload={"name": name, "zone": "spawn"},
        )
    )
    open_aggregate(page, hostile)
    assert shown_state(page, hostile, 1)["name"] == name
    assert by_id(page, "aggregate-title").text == hostile
    assert page.execute_script("return window.pwned") is None
    assert css(page, "main img, main b, main script") == []


def test_projections_panel_shows_parked_aggregates_and_retries_them_with_an_admin_token(
    page: Chrome, demo_server: DemoServer, demo_world: DemoWorld, store: EventStore
) -> None:
    # A PlayerMoved without `from_zone`: zone-population's handler fails and parks the player.
    poisoned = f"poison-{uuid.uuid4().hex[:8]}-player"
    joined = Event.new(
        aggregate_type="Player",
        aggregate_id=poisoned,
        event_type="PlayerJoined",
        version=1,
        payload={"name": "poison", "zone": "spawn"},
        metadata={"world": "poison"},
    )
    moved = Event.new(
        aggregate_type="Player",
        aggregate_id=poisoned,
        event_type="PlayerMoved",
        version=2,
        payload={"to_zone": "forest", "x": 1.0, "y": 2.0},
        metadata={"world": "poison"},
    )
    store.append_events([joined, moved])
    source = StoreTailSource()
    source.catch_up(ProjectionRunner(store, projections.ALL, source=source))

    open_page(page, demo_server, "view=projections")
    wait_for(
        page,
        "the projections",
        lambda d: by_id(d, "projections").get_attribute("data-status") == "ready",
    )
    names = {attr(row, "data-name") for row in css(page, "#projections tr[data-name]")}
    assert names == {p.name for p in projections.ALL}
    listed = {p["name"]: p for p in api(demo_server, "/v1/projections")}
    for row in css(page, "#projections tr[data-name]"):
        parked = row.find_element(By.CSS_SELECTOR, "[data-testid=parked-count]").text
        assert parked == str(listed[attr(row, "data-name")]["parked"])
    assert listed["zone-population"]["parked"] >= 1

    click(page, "tr[data-name=zone-population] [data-testid=projection-open]")

    def parked_shown(d: Chrome) -> bool:
        return (
            by_id(d, "projection-name").text == "zone-population"
            and by_id(d, "parked").get_attribute("data-status") == "ready"
        )

    wait_for(page, "zone-population's parked aggregates", parked_shown)
    retry = f"[data-testid=retry][data-aggregate-id='{poisoned}']"
    click(page, retry)  # without a token: refused, and said so
    wait_for(page, "the 401", lambda d: any("401" in m for m in error_messages(d)))

    by_id(page, "token").send_keys(demo_server.admin_token)
    by_id(page, "token-save").click()
    click(page, retry)
    result = wait_for(page, "the retry's result", lambda d: css(d, "[data-testid=retry-result]"))[0]
    assert poisoned in result.text and "parked again" in result.text  # its handler still fails


def test_screenshot_of_a_player_travelling_in_time(
    page: Chrome,
    demo_server: DemoServer,
    demo_world: DemoWorld,
    store: EventStore,
    replayer: Replayer,
    tmp_path: Path,
) -> None:
    """The README's picture: a player picked in the list, the scrubber moved back to an
    item picked up mid-game, what it changed highlighted, and what it caused."""
    open_page(page, demo_server)
    listed = wait_for(page, "the list of players", lambda d: css(d, "[data-testid=aggregate-item]"))
    chosen: tuple[WebElement, str, int, int] | None = None
    for item in listed[:15]:  # those in sight
        player = attr(item, "data-aggregate-id")
        history = list(store.get_events_by_aggregate(player))
        for event in history:
            if (
                event.event_type == "ItemPickedUp"
                and len(history) >= 16
                and 0.4 <= event.version / len(history) <= 0.7
                and replayer.replay_to(player, version=event.version).state["inventory"][1:]
            ):
                chosen = (item, player, event.version, len(history))
                break
        if chosen:
            break
    assert chosen is not None, "a player in sight who picked up a second item mid-game"
    item, player, version, latest = chosen

    item.click()
    shown_state(page, player, latest)
    by_id(page, "scrubber").send_keys(*[Keys.ARROW_LEFT] * (latest - version))
    assert shown_state(page, player, version) == replayer.replay_to(player, version=version).state
    check_changes_shown(page, replayer, player, version)
    wait_for(page, "the links", lambda d: css(d, "#links [data-testid=effect-link]"))
    assert error_messages(page) == []
    assert "selected" in (item.get_attribute("class") or "")
    page.execute_script("document.activeElement.blur()")

    shot = tmp_path / "time-travel.png"
    assert page.save_screenshot(str(shot))
    assert png_size(shot) == VIEWPORT
    if os.environ.get("EVENTSTORE_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)
