"""Screenshots are pictures: in headless Chromium, a run's screenshots (taken by a real agent on a virtual phone)
open full size and page with the buttons and the arrow keys, each with its step and time taken; an uploading and
a deleted screenshot say so rather than vanish; the phone's page shows its screenshots the same way.
Screenshots of the pages go to ``tests/artifacts/gallery-*.png``."""

import re
from typing import TYPE_CHECKING, Any

from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

PLAN = [{"type": "screenshot"}, {"type": "tap", "x": 100, "y": 200}, {"type": "screenshot"},
        {"type": "keyevent", "key": "KEYCODE_HOME"}, {"type": "screenshot"}]


async def test_paging_through_a_runs_screenshots(server: RunningServer, agent_factory: AgentFactory,
                                                 page: "Page") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", {"title": "evidence", "plan": PLAN, "target_type": "device_count",
                                                "target_value": 1})

    async def stored() -> list[dict[str, Any]] | None:
        runs = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        if not runs or runs[0]["status"] != "completed":
            return None
        listed: list[dict[str, Any]] = await server.ok("GET", f"/api/assignments/{runs[0]['id']}/artifacts")
        rows = [r for r in listed if r["kind"] == "screenshot"]  # the run's logcat is listed too
        return rows if len(rows) == 3 and all(r["status"] == "stored" for r in listed) else None

    rows = await eventually(stored, timeout=30)
    assert rows is not None
    by_id = sorted(rows, key=lambda r: int(r["id"]))  # the rows come in the order the run took them, whatever
    assert [r["step_index"] for r in by_id] == sorted(r["step_index"] for r in rows), rows  # order uploads end in
    aid, device_id = rows[0]["assignment_id"], rows[0]["device_id"]
    async with server.services.pool.acquire() as conn:  # one still on its way, one retention took
        await conn.execute(
            """INSERT INTO artifacts (assignment_id, device_id, name, kind, bytes, sha256, step_index, status,
                                      deleted_at, deleted_reason)
               VALUES ($1, $2, 'late.png', 'screenshot', 10, repeat('a', 64), 5, 'uploading', NULL, NULL),
                      ($1, $2, 'old.png', 'screenshot', 10, repeat('b', 64), 6, 'deleted', now(),
                       'age: older than 30 days')""", aid, device_id)

    await sign_in(page, server)
    await page.goto(f"{server.url}/#/jobs/{job['id']}")
    gallery = page.get_by_test_id(f"run-gallery-{aid}")
    thumbs = gallery.get_by_test_id("artifact-thumb")
    await expect(thumbs).to_have_count(3)
    await expect(gallery.locator("[data-testid=artifact-tile][data-status=uploading]")).to_contain_text("uploading")
    await expect(gallery.locator("[data-testid=artifact-tile][data-status=deleted]")).to_contain_text(
        "deleted: age: older than 30 days")
    await shot(page, "gallery-run")

    await thumbs.first.click()
    viewer = page.get_by_test_id("artifact-viewer")
    image = viewer.get_by_test_id("viewer-image")
    position = viewer.get_by_test_id("viewer-position")
    caption = viewer.get_by_test_id("viewer-caption")
    await expect(position).to_have_text("1 / 3")
    await expect(caption).to_contain_text("Step 1")
    await expect(caption).to_contain_text("taken")
    await expect(image).to_have_attribute("src", re.compile("^blob:"))
    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    await expect(image).to_have_attribute("data-name", rows[0]["name"])
    await expect(viewer.get_by_test_id("viewer-previous")).to_be_disabled()
    await shot(page, "gallery-viewer")

    await viewer.get_by_test_id("viewer-next").click()  # the button
    await expect(position).to_have_text("2 / 3")
    await expect(caption).to_contain_text("Step 3")
    await page.keyboard.press("ArrowRight")  # the keys
    await expect(position).to_have_text("3 / 3")
    await expect(caption).to_contain_text("Step 5")
    await expect(viewer.get_by_test_id("viewer-next")).to_be_disabled()
    await page.keyboard.press("ArrowRight")  # the end is the end
    await expect(position).to_have_text("3 / 3")
    await page.keyboard.press("ArrowLeft")
    await expect(position).to_have_text("2 / 3")
    await expect(image).to_have_attribute("data-name", sorted(rows, key=lambda r: r["step_index"])[1]["name"])
    await page.keyboard.press("Escape")
    await expect(viewer).to_have_count(0)

    # the phone's page: the same screenshots, newest first, the uploading and deleted ones said as such
    await page.goto(f"{server.url}/#/phones/{device_id}")
    phone = page.get_by_test_id("phone-gallery")
    await expect(phone.get_by_test_id("artifact-thumb")).to_have_count(3)
    await expect(phone.get_by_test_id("artifact-tile")).to_have_count(2)
    await phone.get_by_test_id("artifact-thumb").first.click()
    await expect(page.get_by_test_id("viewer-position")).to_have_text("1 / 3")
    await expect(page.get_by_test_id("viewer-caption")).to_contain_text("Step 5")  # the newest first
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_test_id("viewer-caption")).to_contain_text("Step 3")
    await shot(page, "gallery-phone")
