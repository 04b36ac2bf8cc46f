"""The new-schedule form helps as the new-job form does (issue 13, part 7), in headless Chromium against a real
server: its name, rule (cron and time zone, or every N units) and job template are checked before sending,
each wrong one named beside its field in plain words, and nothing is sent; a server 422 on the template comes
back on its field in the same words. Screenshots go to ``tests/artifacts/schedule-form-*.png``.
"""

import json
from typing import TYPE_CHECKING

from tests.conftest import RunningServer
from tests.dashboard_helpers import posts_to, shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page, ViewportSize

URL_MESSAGE = "Enter a full URL starting with http:// or https://"
PHONE: "ViewportSize" = {"width": 390, "height": 844}
LAPTOP: "ViewportSize" = {"width": 1280, "height": 860}


async def test_the_new_schedule_form_checks_every_field_before_sending(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    sent = posts_to(page, "/api/schedules")
    await sign_in(page, server)
    await page.get_by_role("link", name="Schedules").click()
    await page.get_by_test_id("new-schedule").click()
    dialog = page.get_by_test_id("new-schedule-dialog")
    name, cron, zone = dialog.get_by_test_id("schedule-name"), dialog.get_by_test_id("cron"), \
        dialog.get_by_test_id("timezone")

    # no name, an hour past 23, a zone nobody has, a URL without its scheme, a priority out of range
    await name.fill("   ")
    await cron.fill("0 25 * * 1-5")
    await zone.fill("Mars/Olympus")
    await dialog.locator("#url").fill("example.com/nightly")
    await dialog.locator("#priority").fill("5000")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-name")).to_have_text("Give the schedule a name")
    await expect(dialog.get_by_test_id("error-cron")).to_have_text("Check the hour (0 to 23) in the cron expression")
    await expect(dialog.get_by_test_id("error-timezone")).to_have_text(
        "Choose a time zone from the list, such as Europe/Berlin or UTC")
    await expect(dialog.get_by_test_id("error-url")).to_have_text(URL_MESSAGE)
    await expect(dialog.get_by_test_id("error-priority")).to_have_text("Enter a whole number from -1000 to 1000")
    for field in (name, cron, zone):
        await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(name).to_be_focused()  # the first wrong field on screen
    await shot(page, "schedule-form-errors")

    # the shape of an expression, and the server's macros taken as the server takes them
    await cron.fill("every weekday at nine")
    await expect(dialog.get_by_test_id("error-cron")).to_have_count(0)  # editing a field clears its message
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-cron")).to_have_text(
        "Enter five fields: minute hour day month weekday, such as 0 9 * * 1-5, or one of @hourly, @daily, "
        "@weekly, @monthly, @yearly")
    await cron.fill("@Daily")
    # an interval: a whole number of the chosen unit, up to the server's 366 days
    await dialog.get_by_test_id("rule-interval").check()
    every = dialog.get_by_test_id("every")
    await every.fill("0")
    await dialog.get_by_test_id("unit").select_option("d")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-interval_sec")).to_have_text(
        "Enter a whole number of days from 1 to 366")
    await expect(every).to_have_attribute("aria-invalid", "true")
    await every.fill("400")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-interval_sec")).to_have_text(
        "Enter a whole number of days from 1 to 366")

    # at a phone's width the messages sit beside their fields and nothing scrolls sideways
    await page.set_viewport_size(PHONE)
    await expect(dialog.get_by_test_id("error-interval_sec")).to_be_visible()
    assert await dialog.evaluate("d => d.scrollWidth <= d.clientWidth"), "the schedule form scrolls sideways"
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shot(page, "schedule-form-errors-phone")
    await page.set_viewport_size(LAPTOP)

    assert sent == [], "nothing is sent while a field is wrong"
    assert (await server.ok("GET", "/api/schedules"))["total"] == 0

    # what only the server can tell (a custom step's URL) comes back on its field in the job form's words
    await every.fill("2")
    await dialog.get_by_test_id("unit").select_option("h")
    await name.fill("landing page every two hours")
    await dialog.locator("#priority").fill("5")
    await dialog.get_by_test_id("preset").select_option("custom")
    params = dialog.get_by_label("Step 1 parameters (JSON)")
    await params.fill(json.dumps({"url": "example.com", "duration_sec": 1}))
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-plan.0")).to_have_text(URL_MESSAGE)
    await expect(params).to_have_attribute("aria-invalid", "true")
    assert len(sent) == 1, "the server was asked once"
    assert (await server.ok("GET", "/api/schedules"))["total"] == 0
    await shot(page, "schedule-form-server-error")

    await params.fill(json.dumps({"url": "https://example.com/landing", "duration_sec": 1}))
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog).to_have_count(0)
    [made] = (await server.ok("GET", "/api/schedules"))["items"]
    assert (made["name"], made["cron"], made["interval_sec"], made["template"]["priority"]) == (
        "landing page every two hours", None, 7200, 5)
    [step] = made["template"]["plan"]
    assert (step["type"], step["url"]) == ("open_url", "https://example.com/landing")
    await expect(page.locator("[data-testid=schedule]", has_text="landing page every two hours")
                 .get_by_test_id("schedule-rule")).to_have_text("every 2 h")


async def test_a_cron_schedule_is_made_once_its_fields_are_fixed(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    await page.get_by_role("link", name="Schedules").click()
    await page.get_by_test_id("new-schedule").click()
    dialog = page.get_by_test_id("new-schedule-dialog")
    await dialog.get_by_test_id("schedule-name").fill("x" * 201)
    await dialog.get_by_test_id("cron").fill("0 0 30 2 *")
    await dialog.get_by_test_id("timezone").fill("europe/berlin")  # the server's names are case-sensitive
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog.get_by_test_id("error-name")).to_have_text("Keep the name to 200 characters or fewer")
    await expect(dialog.get_by_test_id("error-cron")).to_have_text(
        "No month given has that day, so it would never run: check the day and the month")
    await expect(dialog.get_by_test_id("error-timezone")).to_be_visible()
    assert (await server.ok("GET", "/api/schedules"))["total"] == 0

    await dialog.get_by_test_id("schedule-name").fill("weekday mornings")
    await dialog.get_by_test_id("cron").fill("0 9 * * mon-fri")
    await dialog.get_by_test_id("timezone").fill("Europe/Berlin")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog).to_have_count(0)
    [made] = (await server.ok("GET", "/api/schedules"))["items"]
    assert (made["name"], made["cron"], made["timezone"]) == ("weekday mornings", "0 9 * * mon-fri", "Europe/Berlin")
