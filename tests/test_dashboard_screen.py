"""The live screen in the dashboard, end to end in headless Chromium: a real server, a real agent with a virtual
phone on the real adb server. The operator opens a phone's screen, takes control, taps the picture; the tap
reaches the phone at the phone's own coordinates and the picture changes. Screenshot: tests/artifacts/screen-*.png.
"""

import re
from typing import TYPE_CHECKING

from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page


async def test_a_remote_tap_in_the_page_changes_the_phones_screen(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await agent_factory("rack-s", virtual=1)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    device_id = next(d["id"] for d in await server.ok("GET", "/api/devices") if d["serial"] == phone.adb_serial)

    me = await sign_in(page, server)
    await page.goto(f"{server.url}/#/phones/{device_id}")
    await page.get_by_test_id("screen-toggle").click()
    image = page.get_by_test_id("screen-image")
    await expect(image).to_be_visible()
    first_seq = int(await image.get_attribute("data-seq") or "0")
    await expect(page.get_by_test_id("screen-session")).to_contain_text("Nobody controls this phone · 1 watching")
    await expect(page.get_by_test_id("screen-back")).to_be_disabled()

    await page.get_by_test_id("screen-take").click()
    await expect(page.get_by_test_id("screen-session")).to_contain_text("You control this phone")

    async def paused() -> bool:
        found = next(d for d in await server.ok("GET", "/api/devices") if d["id"] == device_id)
        return bool(found["state"] == "paused" and found["pause_reason"] == f"in use by {me}")

    await eventually(paused)
    mark = len(phone.actions)
    box = await image.bounding_box()
    assert box is not None
    await image.click(position={"x": box["width"] / 4, "y": box["height"] / 2})
    tap = await phone.actions.wait_for(lambda r: r.command.startswith("input tap"), since=mark)
    x, y = (int(v) for v in re.findall(r"\d+", tap.command))
    assert abs(x - 270) <= 4 and abs(y - 1200) <= 4, tap.command  # the picture's pixels mapped to the phone's
    await expect(image).not_to_have_attribute("data-seq", str(first_seq))  # the tap shows on the screen
    await shot(page, "screen-controlled")

    await page.get_by_test_id("screen-home").click()
    await phone.actions.wait_for(lambda r: r.command == "input keyevent HOME", since=mark)

    # Closing the screen ends the session: the phone goes back to distribution.
    await page.get_by_test_id("screen-toggle").click()

    async def idle() -> bool:
        found = next(d for d in await server.ok("GET", "/api/devices") if d["id"] == device_id)
        return bool(found["state"] == "idle")

    await eventually(idle)
