"""The dashboard's Audit page, end to end in headless Chromium against a real server: a change made in the
dashboard is listed with who made it and its before → after; filters ask the server; older pages load.
Same set-up as ``test_dashboard.py``."""

from typing import TYPE_CHECKING

from tests.conftest import RunningServer, open_url_job
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page


async def test_a_change_made_in_the_dashboard_is_listed_with_its_before_and_after(server: RunningServer,
                                                                                  page: "Page") -> None:
    from playwright.async_api import expect

    job = await server.ok("POST", "/api/jobs", open_url_job(title="audited", target_type="device_count",
                                                            target_value=2))
    me = await sign_in(page, server)  # adding the person is a change by the shared token
    await page.get_by_test_id("scheduler-stop").click()
    await page.get_by_test_id("scheduler-confirm-stop").click()
    await expect(page.get_by_test_id("scheduler-banner")).to_be_visible()

    await page.get_by_role("link", name="Audit", exact=True).click()
    await expect(page.get_by_role("heading", name="Audit")).to_be_visible()
    rows = page.get_by_test_id("audit-row")
    await expect(rows).to_have_count(3)
    newest = rows.first  # newest first: the stop just made
    await expect(newest).to_have_attribute("data-action", "scheduler.stop")
    await expect(newest).to_contain_text(f"{me} (person)")
    await expect(rows.nth(1)).to_have_attribute("data-action", "person.create")
    await expect(rows.nth(1)).to_contain_text("env (token)")
    await expect(newest.get_by_test_id("audit-change")).to_have_text("running true → false")
    created = rows.nth(2)
    await expect(created).to_have_attribute("data-action", "job.create")
    await expect(created).to_contain_text(f"job {job['id']}")
    await expect(created.get_by_test_id("audit-change").filter(has_text="title")).to_have_text("title audited")
    await shot(page, "audit-page")

    filters = page.get_by_test_id("audit-filters")
    await filters.locator("select[name=object_kind]").select_option("job")
    await page.get_by_test_id("audit-apply").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-action", "job.create")
    await filters.locator("input[name=actor]").fill("nobody")
    await page.get_by_test_id("audit-apply").click()
    await expect(page.get_by_text("No changes recorded match these filters")).to_be_visible()
    await filters.get_by_role("button", name="Clear").click()
    await expect(rows).to_have_count(3)


async def test_older_changes_load_a_page_at_a_time(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    for running in [False, True] * 30:  # 60 changes: more than the page's 50
        await server.ok("POST", f"/api/scheduler/{'start' if running else 'stop'}", expect=200)
    await sign_in(page, server)  # a 61st change: the person signing in is added
    await page.goto(server.url + "/#/audit")
    rows = page.get_by_test_id("audit-row")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_have_attribute("data-action", "person.create")
    await expect(rows.nth(1)).to_have_attribute("data-action", "scheduler.start")
    await page.get_by_test_id("audit-older").click()
    await expect(rows).to_have_count(61)
    await expect(page.get_by_test_id("audit-older")).to_have_count(0)
    await expect(rows.last).to_have_attribute("data-action", "scheduler.stop")
