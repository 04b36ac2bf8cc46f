"""Progress that tells the truth (issue 13, parts 1 to 3), end to end in headless Chromium against a real server:
a job's bar in segments with its counts, "completed with failures" never plain green, per-phone bars and "took"
moving during a long step of a real agent on a virtual phone, and a pause that says what still runs.
Screenshots go to ``tests/artifacts/progress-*.png``.
"""

import re
from typing import TYPE_CHECKING, Any

from phonefleet.sim.agent import SimAgent
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

GREEN, RED, BLUE = "rgb(26, 127, 55)", "rgb(180, 35, 24)", "rgb(36, 87, 197)"


async def orders_of(agent: SimAgent, count: int, before: set[int]) -> list[int]:
    await agent.wait_for(lambda: len(set(agent.orders) - before) >= count)
    return sorted(set(agent.orders) - before)


async def colour(seg: "Locator") -> str:
    return str(await seg.evaluate("e => getComputedStyle(e).backgroundColor"))


async def test_a_job_with_a_failed_run_shows_it_in_red_and_ends_completed_with_failures(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-1", 3)
    job = await server.ok("POST", "/api/jobs", open_url_job(title="three phones", max_retries=0))
    ids = await orders_of(agent, 3, set())
    await agent.start(ids)
    await sign_in(page, server)
    row = page.locator(f"[data-testid=job][data-job-id='{job['id']}']")
    await expect(row.get_by_test_id("progress")).to_have_text("0 done · 0 failed · 3 running of 3")

    await agent.finish(ids[:1], "completed")
    await agent.finish(ids[1:2], "failed", error_code="device_lost", error="device_lost on purpose")
    await expect(row.get_by_test_id("progress")).to_have_text("1 done · 1 failed · 1 running of 3")
    assert await colour(row.get_by_test_id("seg-done")) == GREEN
    assert await colour(row.get_by_test_id("seg-failed")) == RED
    assert await colour(row.get_by_test_id("seg-running")) == BLUE
    await expect(row.get_by_test_id("seg-waiting")).to_have_count(0)
    await expect(row.get_by_test_id("job-status")).to_have_text("active")
    await shot(page, "progress-running-with-a-failure")

    await agent.finish(ids[2:], "completed")
    await expect(row.get_by_test_id("progress")).to_have_text("2 done · 1 failed · 0 running of 3")
    await expect(row.get_by_test_id("job-status")).to_have_text("completed with failures")
    assert await colour(row.get_by_test_id("job-status")) != await colour(row.get_by_test_id("seg-done"))
    await expect(row.get_by_test_id("seg-running")).to_have_count(0)
    await expect(row.locator(".counts")).to_have_text("2 completed · 0 running · 1 failed")
    # the bar's failed share is a third of it, not folded into the green
    await expect(row.get_by_test_id("seg-done")).to_have_attribute("style", re.compile(r"width: 66\.7%"))
    await expect(row.get_by_test_id("seg-failed")).to_have_attribute("style", re.compile(r"width: 33\.3%"))

    await row.get_by_test_id("job-title").click()
    detail = page.get_by_test_id("job-detail")
    await expect(detail.get_by_test_id("job-status")).to_have_text("completed with failures")
    await expect(detail.get_by_test_id("progress")).to_have_text("2 done · 1 failed · 0 running of 3")
    await shot(page, "progress-completed-with-failures")


async def test_a_paused_job_says_what_still_runs_then_paused(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-3", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(title="one at a time", max_retries=0, max_parallel=1))
    (first,) = await orders_of(agent, 1, set())
    await agent.start([first])
    await sign_in(page, server)
    row = page.locator(f"[data-testid=job][data-job-id='{job['id']}']")
    await expect(row.get_by_test_id("progress")).to_have_text("0 done · 0 failed · 1 running of 2")

    await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "paused"})
    await expect(row.get_by_test_id("job-status")).to_have_text("paused")
    await expect(row.get_by_test_id("pause-state")).to_have_text("pausing: 1 running will finish, 1 waiting held")
    await shot(page, "progress-pausing")

    await agent.finish([first], "completed")
    await expect(row.get_by_test_id("pause-state")).to_have_text("paused")
    await expect(row.get_by_test_id("progress")).to_have_text("1 done · 0 failed · 0 running of 2")

    # a phone paused at its PC says where and by whom, in the same words
    serial = agent.serials[1]
    await agent.pause("device", serial=serial)
    await expect(page.get_by_test_id("toast")).to_have_text(f"Paused at PC rack-3 by operator: phone {serial}")
    await page.get_by_role("link", name="Phones", exact=True).click()
    phone = page.locator(f"[data-testid=phone][data-serial='{serial}']")
    await expect(phone.get_by_test_id("phone-paused-by")).to_have_text("paused at PC rack-3 by operator")
    await shot(page, "progress-phone-paused-at-pc")
    await agent.pause("agent")  # the whole PC, in the same words on its card
    card = page.locator("[data-testid=agent][data-agent='rack-3']")
    await expect(card.get_by_test_id("agent-paused-by")).to_have_text("paused at PC rack-3 by operator")


async def test_per_phone_bar_and_took_move_during_a_long_step(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(title="five seconds",
                                                            plan=[{"type": "wait", "duration_sec": 5}]))
    await sign_in(page, server)
    await page.goto(f"{server.url}/#/jobs/{job['id']}")
    detail = page.get_by_test_id("job-detail")
    run = detail.get_by_test_id("assignment")
    await expect(run).to_have_attribute("data-status", "running", timeout=10_000)
    bar = run.get_by_test_id("run-progress")
    took = run.get_by_test_id("took")
    seen: list[tuple[float, str]] = []

    async def moved(low: float, high: float) -> Any:
        value = float(await bar.get_attribute("data-progress") or 0)
        seen.append((value, await took.inner_text()))
        status = await run.get_attribute("data-status")
        return status == "running" and low < value < high and value

    first = await eventually(lambda: moved(0.05, 0.6), timeout=6, interval=0.1)
    await expect(run.get_by_test_id("run-step")).to_contain_text(re.compile(r"^step 1/1 wait: \d+ s$"))
    await shot(page, "progress-phone-bar-moving")
    second = await eventually(lambda: moved(first + 0.1, 1.0), timeout=6, interval=0.1)
    assert second > first, seen
    took_then = seen[0][1]

    async def counted_up() -> bool:  # "took" counts up while the run runs, between progress messages too
        return await run.get_attribute("data-status") == "running" and await took.inner_text() != took_then

    assert await eventually(counted_up, timeout=3, interval=0.1), seen
    await expect(run).to_have_attribute("data-status", "completed", timeout=10_000)
    await expect(bar).to_contain_text(re.compile(r"100%"))
    await expect(run.get_by_test_id("run-step")).to_have_count(0)  # what a step is doing shows while it runs
