"""The new-job form helps (issue 13, part 7), in headless Chromium against a real server: a bad value is named
beside its field in plain words and nothing is sent; a server 422 is shown on its field in the same words; a
phone count above the phones that can ever run the job warns; the auto-title never makes a title of an invalid
URL. Screenshots go to ``tests/artifacts/new-job-*.png``.
"""

import json
from typing import TYPE_CHECKING

from tests.conftest import RunningServer, eventually
from tests.dashboard_helpers import posts_to, shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

URL_MESSAGE = "Enter a full URL starting with http:// or https://"


async def test_the_new_job_form_checks_before_sending_and_warns_of_too_few_phones(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-f", 22)
    sent = posts_to(page, "/api/jobs")
    await sign_in(page, server)
    await expect(page.get_by_test_id("connected-count")).to_have_text("22")
    # two phones that can never run the job: one offline, one quarantined
    await agent.report([{**agent.devices()[20], "online": False}])
    phones = {d["serial"]: d["id"] for d in await server.ok("GET", "/api/devices")}
    await server.ok("POST", f"/api/devices/{phones['rack-f-021']}/quarantine", {"reason": "cracked screen"},
                    expect=200)

    async def states() -> bool:
        found = {d["serial"]: d["state"] for d in await server.ok("GET", "/api/devices")}
        return (found["rack-f-020"], found["rack-f-021"]) == ("offline", "quarantined")

    await eventually(states)

    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    url = dialog.locator("#url")
    await url.fill("example.com/landing")
    # the auto-title never names an address that is not one
    await expect(dialog.get_by_test_id("title")).to_have_value("Open a web page for 60 s")
    await dialog.locator("#duration_sec").fill("")
    await dialog.get_by_test_id("create").click()
    await expect(dialog.get_by_test_id("error-url")).to_have_text(URL_MESSAGE)
    await expect(dialog.get_by_test_id("error-duration_sec")).to_have_text("Enter a number of seconds from 0 to 86400")
    await expect(url).to_have_attribute("aria-invalid", "true")
    await expect(url).to_be_focused()
    await shot(page, "new-job-invalid")
    assert sent == [], "nothing is sent while a field is wrong"
    assert (await server.ok("GET", "/api/jobs"))["items"] == []

    await url.fill("https://example.com/landing")  # editing clears its message; the title follows
    await expect(dialog.get_by_test_id("error-url")).to_have_count(0)
    await dialog.locator("#duration_sec").fill("5")
    await expect(dialog.get_by_test_id("title")).to_have_value("Open example.com for 5 s")

    # a count above the phones that match (not offline, not quarantined) warns
    await dialog.get_by_test_id("target-count").check()
    await dialog.get_by_test_id("count").fill("30")
    await expect(dialog.get_by_test_id("count-warning")).to_have_text("only 20 phones match; the job will stop at 20")
    await expect(dialog.get_by_test_id("expected")).to_contain_text("expected: 20 phones")
    await dialog.get_by_test_id("count").fill("20")
    await expect(dialog.get_by_test_id("count-warning")).to_have_count(0)
    await dialog.locator("summary", has_text="Filters").click()
    await dialog.locator("#models").fill("no such model")
    await dialog.get_by_test_id("count").fill("3")
    await expect(dialog.get_by_test_id("count-warning")).to_have_text("only 0 phones match; the job will stop at 0")
    await dialog.locator("#models").fill("")
    await dialog.get_by_test_id("count").fill("30")
    await expect(dialog.get_by_test_id("count-warning")).to_be_visible()
    await shot(page, "new-job-count-warning")

    # what only the server can tell (a custom step's URL) comes back on its field in the same words
    await dialog.get_by_test_id("preset").select_option("custom")
    params = dialog.get_by_label("Step 1 parameters (JSON)")
    await params.fill(json.dumps({"url": "example.com", "duration_sec": 1}))
    await dialog.get_by_test_id("create").click()
    await expect(dialog.get_by_test_id("error-plan.0")).to_have_text(URL_MESSAGE)
    await expect(params).to_have_attribute("aria-invalid", "true")
    assert len(sent) == 1, "the server was asked once"
    assert (await server.ok("GET", "/api/jobs"))["items"] == []
    await shot(page, "new-job-server-error")

    await params.fill(json.dumps({"url": "https://example.com/ok", "duration_sec": 1}))
    await expect(dialog.get_by_test_id("title")).to_have_value("Open example.com for 1 s")
    await dialog.get_by_test_id("create").click()
    await expect(dialog).to_have_count(0)
    jobs = (await server.ok("GET", "/api/jobs"))["items"]
    assert [(j["title"], j["target_type"], j["target_value"]) for j in jobs] == [
        ("Open example.com for 1 s", "device_count", 30)]
