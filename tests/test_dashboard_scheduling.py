"""The dashboard's scheduling and job-control controls, end to end in headless Chromium against a real server:
schedules (create, toggle, run now, delete), the scheduler's Stop/Start switch, batch pause over selected
jobs, requeue, the job form's timing fields and blocked jobs. Same set-up as ``test_dashboard.py``.
"""

import re
from typing import TYPE_CHECKING, Any

from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

LONG_WAIT = {"title": "long wait", "plan": [{"type": "open_url", "url": "https://example.com/long",
                                            "duration_sec": 300}], "target_type": "device_count", "target_value": 1}


async def _job(server: RunningServer, **body: Any) -> dict[str, Any]:
    job: dict[str, Any] = await server.ok("POST", "/api/jobs", {**LONG_WAIT, **body})
    return job


async def test_schedule_made_in_the_form_is_listed_toggled_run_now_and_deleted(server: RunningServer,
                                                                                page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    await page.get_by_role("link", name="Schedules").click()
    await expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
    await expect(page.get_by_text("No schedules yet")).to_be_visible()

    await page.get_by_test_id("new-schedule").click()
    dialog = page.get_by_test_id("new-schedule-dialog")
    await dialog.get_by_test_id("schedule-name").fill("nightly screenshots")
    await dialog.get_by_test_id("cron").fill("61 * * * *")
    await dialog.get_by_test_id("timezone").fill("Europe/Berlin")
    await dialog.get_by_test_id("preset").select_option("screenshot")  # the very fields of the New job form
    await dialog.get_by_test_id("target-count").check()
    await dialog.get_by_test_id("count").fill("1")
    await dialog.locator("#priority").fill("5")
    await dialog.locator("#max_parallel").fill("1")
    await dialog.get_by_test_id("create-schedule").click()  # checked before sending, named beside the field
    await expect(dialog.get_by_test_id("error-cron")).to_have_text("Check the minute (0 to 59) in the cron expression")
    await dialog.get_by_test_id("cron").fill("0 3 * * *")
    await expect(dialog.get_by_test_id("error-cron")).to_have_count(0)  # editing the field clears it
    await shot(page, "new-schedule-dialog")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog).to_have_count(0)

    row = page.locator("[data-testid=schedule]", has_text="nightly screenshots")
    await expect(row.get_by_test_id("schedule-rule")).to_have_text("0 3 * * * (Europe/Berlin)")
    await expect(row.get_by_test_id("schedule-next")).to_contain_text("in ")
    await expect(row.get_by_test_id("schedule-last")).to_have_text("never")
    [made] = (await server.ok("GET", "/api/schedules"))["items"]
    assert made["enabled"] and made["timezone"] == "Europe/Berlin" and made["misfire_policy"] == "run_once"
    template = made["template"]
    assert (template["title"], template["target_type"], template["target_value"], template["priority"],
            template["max_parallel"]) == ("Take a screenshot", "device_count", 1, 5, 1)

    # an interval rule, disabled from the start
    await page.get_by_test_id("new-schedule").click()
    await dialog.get_by_test_id("schedule-name").fill("every five minutes")
    await dialog.get_by_test_id("rule-interval").check()
    await dialog.get_by_test_id("every").fill("5")
    await dialog.get_by_test_id("unit").select_option("min")
    await dialog.get_by_test_id("schedule-enabled-new").uncheck()
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog).to_have_count(0)
    often = page.locator("[data-testid=schedule]", has_text="every five minutes")
    await expect(often.get_by_test_id("schedule-rule")).to_have_text("every 5 min")
    await expect(often).to_have_attribute("data-enabled", "false")
    await expect(often.get_by_test_id("schedule-next")).to_contain_text("disabled")

    # toggled off and on again
    await row.get_by_test_id("schedule-enabled").click()
    await expect(row).to_have_attribute("data-enabled", "false")
    await expect(row.get_by_test_id("schedule-next")).to_contain_text("disabled")
    assert (await server.ok("GET", f"/api/schedules/{made['id']}"))["enabled"] is False
    await row.get_by_test_id("schedule-enabled").click()
    await expect(row).to_have_attribute("data-enabled", "true")
    await expect(row.get_by_test_id("schedule-next")).to_contain_text("in ")
    await expect(page.get_by_test_id("scheduler-next")).to_contain_text("next: nightly screenshots in ")
    await shot(page, "schedules")

    # Run now: a job made from the template appears, linked to its schedule
    await row.get_by_test_id("schedule-run").click()
    started = page.get_by_test_id("started-job")
    await expect(started).to_be_visible()
    await expect(row.get_by_test_id("schedule-last")).to_contain_text("job #")
    jobs = (await server.ok("GET", "/api/jobs"))["items"]
    assert [(j["title"], j["schedule_id"], j["priority"]) for j in jobs] == [("Take a screenshot", made["id"], 5)]
    await started.click()
    detail = page.get_by_test_id("job-detail")
    await expect(detail.get_by_role("heading", name="Take a screenshot")).to_be_visible()
    await expect(detail.get_by_test_id("fact-max-parallel")).to_have_text("1")
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await expect(page.locator("[data-testid=job]", has_text="Take a screenshot")).to_have_count(1)

    await page.get_by_role("link", name="Schedules").click()
    await often.get_by_test_id("schedule-delete").click()
    await expect(often).to_have_count(0)
    await expect(page.get_by_test_id("schedule")).to_have_count(1)
    assert (await server.ok("GET", "/api/schedules"))["total"] == 1


async def test_scheduler_stops_and_starts_from_the_top_bar(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    state = page.get_by_test_id("scheduler-state")
    await expect(state).to_have_text("Running")
    await page.get_by_test_id("scheduler-stop").click()  # asked twice: it halts new work fleet-wide
    await page.get_by_test_id("scheduler-keep").click()
    await expect(state).to_have_text("Running")
    await page.get_by_test_id("scheduler-stop").click()
    await page.get_by_test_id("scheduler-confirm-stop").click()
    await expect(state).to_have_text("Stopped")
    await expect(page.get_by_test_id("scheduler-banner")).to_contain_text("Scheduler stopped")
    assert (await server.ok("GET", "/api/scheduler"))["running"] is False
    await shot(page, "scheduler-stopped")

    await page.get_by_test_id("scheduler-start").click()
    await expect(state).to_have_text("Running")
    await expect(page.get_by_test_id("scheduler-banner")).to_have_count(0)
    assert (await server.ok("GET", "/api/scheduler"))["running"] is True

    # stopped elsewhere (the CLI, another dashboard): the page hears it
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    await expect(state).to_have_text("Stopped")
    await server.ok("POST", "/api/scheduler/start", expect=200)
    await expect(state).to_have_text("Running")


async def test_two_selected_jobs_are_batch_paused_and_a_finished_one_is_reported(server: RunningServer,
                                                                                  page: "Page") -> None:
    from playwright.async_api import expect

    first = await _job(server, title="first long wait")
    second = await _job(server, title="second long wait")
    done = await _job(server, title="already cancelled")
    await server.ok("PATCH", f"/api/jobs/{done['id']}", {"status": "cancelled"})
    await sign_in(page, server)

    def row(job: dict[str, Any]) -> Any:
        return page.locator(f"[data-testid=job][data-job-id='{job['id']}']")

    await expect(row(done)).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_test_id("batch-pause")).to_be_disabled()
    await row(first).get_by_test_id("select-job").check()
    await row(second).get_by_test_id("select-job").check()
    await expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
    await page.get_by_test_id("batch-pause").click()
    await expect(page.get_by_test_id("batch-summary")).to_have_text("Paused 2 jobs.")
    await expect(row(first)).to_have_attribute("data-status", "paused")
    await expect(row(second)).to_have_attribute("data-status", "paused")
    await expect(page.get_by_test_id("sum-paused")).to_have_text("2")
    statuses = {j["id"]: j["status"] for j in (await server.ok("GET", "/api/jobs"))["items"]}
    assert statuses == {first["id"]: "paused", second["id"]: "paused", done["id"]: "cancelled"}

    # a job the action does not apply to is named in the result, the others still change
    await row(done).get_by_test_id("select-job").check()
    await page.get_by_test_id("batch-resume").click()
    await expect(page.get_by_test_id("batch-summary")).to_have_text("Resumed 2 jobs; 1 failed.")
    await expect(page.get_by_test_id("batch-failed")).to_contain_text(f"#{done['id']}")
    await expect(row(first)).to_have_attribute("data-status", "active")
    await shot(page, "jobs-batch")

    await page.get_by_test_id("batch-clear").click()
    await expect(page.get_by_test_id("selected-count")).to_have_text("0 selected")
    await page.get_by_test_id("select-all").check()
    await expect(page.get_by_test_id("selected-count")).to_have_text("3 selected")
    await page.get_by_test_id("batch-cancel").click()  # asked once, for the two that can be cancelled
    await expect(page.get_by_test_id("confirm-message")).to_contain_text("This cancels 2 jobs")
    await page.get_by_test_id("confirm").click()
    await expect(page.get_by_test_id("batch-summary")).to_have_text("Cancelled 2 jobs; 1 failed.")
    await expect(row(second)).to_have_attribute("data-status", "cancelled")


async def test_job_form_sends_priority_limits_run_at_and_dependencies(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    prerequisite = await _job(server, title="prerequisite", run_at="2099-01-01T00:00:00Z")
    await sign_in(page, server)
    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    await dialog.get_by_test_id("title").fill("dependent")
    await dialog.get_by_test_id("target-count").check()
    await dialog.get_by_test_id("count").fill("1")
    await dialog.locator("#priority").fill("9")
    await dialog.locator("#max_parallel").fill("2")
    await dialog.locator("#max_retries").fill("3")
    await dialog.get_by_test_id("run-at").fill("2098-06-01T10:30")
    await dialog.get_by_test_id("depends-on").fill("abc")
    await dialog.get_by_test_id("create").click()  # the bad id is named beside the field, before sending
    await expect(dialog.get_by_test_id("error-depends_on")).to_have_text(
        "Enter job ids separated by commas, such as 12, 15")
    await dialog.get_by_test_id("depends-on").fill(f"#{prerequisite['id']}")
    await dialog.get_by_test_id("create").click()
    await expect(dialog).to_have_count(0)

    jobs = {j["title"]: j for j in (await server.ok("GET", "/api/jobs"))["items"]}
    made = jobs["dependent"]
    run_at = await page.evaluate("new Date('2098-06-01T10:30').toISOString()")
    assert (made["priority"], made["max_parallel"], made["max_retries"], made["depends_on"], made["status"]) == (
        9, 2, 3, [prerequisite["id"]], "scheduled")
    assert made["run_at"].replace("+00:00", "Z").replace(".000Z", "Z") == run_at.replace(".000Z", "Z")
    dependent = page.locator(f"[data-testid=job][data-job-id='{made['id']}']")
    await expect(dependent.get_by_test_id("waiting")).to_contain_text(f"after #{prerequisite['id']}")

    # the prerequisite is cancelled: the dependent is blocked, and says why
    await page.locator(f"[data-testid=job][data-job-id='{prerequisite['id']}']").get_by_test_id("cancel").click()
    await page.get_by_test_id("confirm").click()
    await expect(dependent).to_have_attribute("data-status", "blocked")
    await expect(dependent.get_by_test_id("waiting")).to_contain_text(re.compile(r"blocked: .+"))
    await page.get_by_test_id("status-filter").select_option("blocked")
    await expect(page.get_by_test_id("job")).to_have_count(1)
    await dependent.get_by_test_id("job-title").click()
    await expect(page.get_by_test_id("blocked-reason")).to_contain_text(str(prerequisite["id"]))
    await shot(page, "job-blocked")


async def test_requeue_runs_a_completed_job_again_and_the_stats_show_rates(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", {
        "title": "quick shot", "plan": [{"type": "screenshot"}], "target_type": "device_count", "target_value": 1})
    await sign_in(page, server)
    row = page.locator(f"[data-testid=job][data-job-id='{job['id']}']")
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(page.get_by_test_id("success-rate")).to_have_text("100%")
    await expect(page.get_by_test_id("run-time")).to_have_text(re.compile(r"\d"))

    await row.get_by_test_id("requeue").click()
    await row.get_by_test_id("requeue-failed").click()  # nothing failed: nothing to run again
    await expect(page.get_by_test_id("notice")).to_have_text(f"Job #{job['id']}: nothing to requeue (no failed slots).")
    await row.get_by_test_id("requeue").click()
    await row.get_by_test_id("requeue-all").click()
    await expect(page.get_by_test_id("notice")).to_have_text(f"Job #{job['id']}: 1 slot requeued.")
    await expect(row.get_by_test_id("progress")).to_have_text("1 done · 0 failed · 0 running of 1")
    await expect(row).to_have_attribute("data-status", "completed")
    assignments = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
    assert sorted(a["superseded"] for a in assignments) == [False, True]
    await row.get_by_role("button", name=re.compile("Phones of")).click()
    await expect(row.get_by_test_id("assignment")).to_have_count(2)
    await expect(row.locator("[data-testid=assignment].replaced")).to_contain_text("requeued")
    await shot(page, "jobs-requeued")


async def test_schedules_made_or_removed_elsewhere_appear_without_a_reload(server: RunningServer,
                                                                            page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    await page.get_by_role("link", name="Schedules").click()
    await expect(page.get_by_text("No schedules yet")).to_be_visible()
    made = await server.ok("POST", "/api/schedules", {"name": "from the CLI", "template": LONG_WAIT,
                                                      "interval_sec": 3600})
    row = page.locator("[data-testid=schedule]", has_text="from the CLI")
    await expect(row.get_by_test_id("schedule-rule")).to_have_text("every 1 h")
    await server.ok("DELETE", f"/api/schedules/{made['id']}", expect=204)
    await expect(row).to_have_count(0)
