"""The fleet grid in headless Chromium against a real server and a real agent with virtual phones: a tile per
phone with its state, a real picture of each connected phone's screen (fetched through the server from the
agent), an offline phone shown as such, and one click to the phone's page. Screenshot: ``tests/artifacts/grid.png``.
"""

import re
from typing import TYPE_CHECKING

from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

pytest_plugins = ["tests.agent_fixtures"]


async def test_the_grid_shows_every_phone_with_its_screen_and_opens_a_phone(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await agent_factory("rack", virtual=3)
    assert agent.fleet is not None
    first, second, gone = agent.fleet.phones
    await gone.go_offline()

    async def offline() -> bool:
        return any(d["serial"] == gone.adb_serial and d["state"] == "offline"
                   for d in await server.ok("GET", "/api/devices"))

    await eventually(offline, timeout=30)
    await sign_in(page, server)
    await page.get_by_role("link", name="Grid", exact=True).click()
    tiles = page.get_by_test_id("tile")
    await expect(tiles).to_have_count(3)
    await expect(page.get_by_test_id("tiles-shown")).to_have_text("3 of 3 phones")
    for phone in (first, second):
        tile = page.locator(f"[data-testid=tile][data-serial='{phone.adb_serial}']")
        await expect(tile).to_have_attribute("data-state", "idle")
        picture = tile.get_by_test_id("tile-screen")
        await expect(picture).to_be_visible()
        width = await picture.evaluate("img => img.complete ? img.naturalWidth : 0")
        assert 0 < width <= 240, width  # a real, decoded thumbnail, no wider than asked
    dark = page.locator(f"[data-testid=tile][data-serial='{gone.adb_serial}']")
    await expect(dark).to_have_attribute("data-state", "offline")
    await expect(dark.get_by_test_id("tile-blank")).to_have_text("offline")
    await shot(page, "grid")

    await page.get_by_test_id("grid-filter").select_option("offline")
    await expect(tiles).to_have_count(1)
    await page.get_by_test_id("grid-filter").select_option("all")
    await page.locator(f"[data-testid=tile][data-serial='{first.adb_serial}'] a").click()
    await expect(page).to_have_url(re.compile(r"#/phones/\d+$"))
