"""A run's evidence in the dashboard (headless Chromium, a real server and agent with a virtual phone): a failed
run's step timeline opens on its failing step, its crash shows as a badge, and its logcat reads in the viewer,
filtered by level, tag and text on the server."""

import re
from typing import TYPE_CHECKING, Any

from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page


async def _failed_run(server: RunningServer, agent_factory: AgentFactory) -> dict[str, Any]:
    agent = await agent_factory("pc", virtual=1)
    assert agent.fleet is not None
    agent.fleet.phones[0].state.crashing_packages.add("com.android.settings")
    plan = [
        {"type": "tap", "x": 10, "y": 20},
        {"type": "launch_app", "package": "com.android.settings"},
        {"type": "shell", "command": "no-such-tool --now", "name": "the broken one"},
        {"type": "tap", "x": 1, "y": 2},
    ]
    job = await server.ok("POST", "/api/jobs", open_url_job(title="crashy", plan=plan, max_retries=0))

    async def ended() -> dict[str, Any] | None:
        rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        if not rows or rows[0]["status"] != "failed":
            return None
        status, _ = await server.request("GET", f"/api/assignments/{rows[0]['id']}/logcat")
        return rows[0] if status == 200 else None  # its logcat has arrived too

    row = await eventually(ended, timeout=30)
    assert row is not None
    return row


async def test_a_failed_runs_timeline_opens_on_its_failing_step_and_its_logcat_reads_in_the_viewer(
    server: RunningServer, agent_factory: AgentFactory, page: "Page"
) -> None:
    from playwright.async_api import expect

    row = await _failed_run(server, agent_factory)
    await sign_in(page, server)
    await page.goto(f"{server.url}/#/jobs/{row['job_id']}")
    detail = page.get_by_test_id("job-detail")
    evidence = detail.get_by_test_id("run-evidence")
    await expect(evidence.get_by_test_id("crash-badge")).to_have_text("1 crash")
    await expect(evidence.get_by_test_id("crash-badge")).to_have_attribute("title", "com.android.settings: crashed")

    await evidence.get_by_test_id("open-steps").click()
    dialog = page.get_by_test_id("steps-dialog")
    steps = dialog.get_by_test_id("step")
    await expect(steps).to_have_count(4)
    outcomes = [await s.get_attribute("data-outcome") for s in await steps.all()]
    assert outcomes == ["completed", "completed", "failed", "not_run"]
    failing = dialog.locator("[data-testid=step][data-index='2']")
    await expect(failing.locator("details")).to_have_attribute("open", "")
    await expect(dialog.locator("details[open]")).to_have_count(1)  # only the failing step opens
    await expect(failing.get_by_test_id("output-tail")).to_contain_text("not found")
    await expect(failing.get_by_test_id("step-error")).to_contain_text("exited 127")
    await expect(failing).to_contain_text("the broken one")
    await expect(failing).to_contain_text("exit 127")
    await expect(dialog.get_by_test_id("crash-list")).to_contain_text("com.android.settings")
    await shot(page, "run-steps")

    await dialog.get_by_role("button", name="Logcat").click()
    viewer = page.get_by_test_id("log-viewer")
    lines = viewer.get_by_test_id("log-line")
    await expect(viewer.get_by_test_id("log-count")).to_contain_text(re.compile(r"^all \d+ lines"))
    everything = await lines.count()
    assert everything > 5
    await viewer.get_by_test_id("log-level").select_option("E")
    await expect(viewer.get_by_test_id("log-count")).to_contain_text(re.compile(rf"of {everything} lines"))
    levels = {await line.get_attribute("data-level") for line in await lines.all()}
    assert levels and levels <= {"E", "F"}
    await shot(page, "run-logcat")
    await viewer.get_by_test_id("log-search").fill("VIRTUAL crash")
    await expect(lines).to_have_count(1)
    await expect(lines.first.locator("mark")).to_have_text("virtual crash")
    await viewer.get_by_test_id("log-search").fill("")
    await viewer.get_by_test_id("log-level").select_option("")
    await viewer.get_by_test_id("log-tag").fill("AndroidRuntime")
    await expect(lines.first).to_have_attribute("data-tag", "AndroidRuntime")
    tags = {await line.get_attribute("data-tag") for line in await lines.all()}
    assert tags == {"AndroidRuntime"}
    await viewer.get_by_test_id("log-search").fill("no such text anywhere")
    await expect(viewer.get_by_test_id("log-count")).to_contain_text("no line of")
    await expect(viewer.get_by_test_id("log-download")).to_have_attribute(
        "href", f"/api/assignments/{row['id']}/artifacts/{row['id']}-logcat.txt.gz")
    async with page.expect_download() as download_info:
        await viewer.get_by_test_id("log-download").click()
    download = await download_info.value
    assert download.suggested_filename == f"{row['id']}-logcat.txt.gz"
    await page.keyboard.press("Escape")
    await expect(viewer).to_have_count(0)

    # the phone's page lists the run with its badge and the same timeline
    await page.goto(f"{server.url}/#/phones/{row['device_id']}")
    run = page.get_by_test_id("phone-run").first
    await expect(run.get_by_test_id("crash-badge")).to_have_text("1 crash")
    await run.get_by_test_id("open-steps").click()
    await expect(page.get_by_test_id("steps-dialog").locator("details[open]")).to_have_attribute("open", "")
    await expect(page.get_by_test_id("steps-dialog").locator("[data-index='2'] details")).to_have_attribute("open", "")
