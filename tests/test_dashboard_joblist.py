"""The job list is scannable (issue 13, part 6), end to end in headless Chromium against a real server and a
sim agent: the id, created time and age, duration and ETA of each job; the sort control (remembered across a
reload); aligned rows that do not wrap at 1280 px with the full title on hover; a cancelled job's cancelled-run
count. Screenshot: ``tests/artifacts/joblist-1280.png``.
"""

import re
from typing import TYPE_CHECKING

from phonefleet.sim.agent import SimAgent
from tests.conftest import RunningServer, open_url_job
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

LONG = ("Open the checkout page on every phone of the lab and keep it open long enough to see the "
        "whole banner rotation")


async def orders_of(agent: SimAgent, count: int, before: set[int]) -> list[int]:
    await agent.wait_for(lambda: len(set(agent.orders) - before) >= count)
    return sorted(set(agent.orders) - before)


async def test_the_job_list_shows_id_times_eta_sorts_and_does_not_wrap(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-6", 4)
    # a job cancelled while its 4 runs were out: 4 runs cancelled
    cancelled = await server.ok("POST", "/api/jobs", open_url_job(title="cancelled one", max_retries=0))
    first = await orders_of(agent, 4, set())
    await agent.start(first[:1])
    await server.ok("PATCH", f"/api/jobs/{cancelled['id']}", {"status": "cancelled"})
    # a running job with half its runs done: an ETA
    running = await server.ok("POST", "/api/jobs", open_url_job(title=LONG, max_retries=0, priority=1))
    runs = await orders_of(agent, 4, set(first))
    await agent.start(runs)
    await agent.finish(runs[:2], "completed")
    # a job for later, of the highest priority
    later = await server.ok("POST", "/api/jobs", open_url_job(title="later", priority=9,
                                                              run_at="2099-01-01T00:00:00Z"))
    await sign_in(page, server)

    r = page.locator(f"[data-testid=job][data-job-id='{running['id']}']")
    c = page.locator(f"[data-testid=job][data-job-id='{cancelled['id']}']")
    s = page.locator(f"[data-testid=job][data-job-id='{later['id']}']")
    await expect(r.get_by_test_id("progress")).to_have_text("2 done · 0 failed · 2 running of 4")
    await expect(r.get_by_test_id("job-id")).to_have_text(f"#{running['id']}")
    await expect(r.get_by_test_id("job-created")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d · "))
    await expect(r.get_by_test_id("job-age")).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    await expect(r.get_by_test_id("job-duration")).to_have_text(re.compile(r"^took \d+ s$"))
    await expect(r.get_by_test_id("job-eta")).to_have_text(re.compile(r"^ETA (\d+(\.\d)? s|\d+ min \d+ s)$"))
    await expect(s.get_by_test_id("job-duration")).to_have_text("took \u2013")  # not started: a dash
    await expect(s.get_by_test_id("job-eta")).to_have_count(0)
    await expect(c.get_by_test_id("job-status")).to_have_text("cancelled")
    await expect(c.get_by_test_id("cancelled-runs")).to_have_text("4 runs cancelled")

    # the full title on hover, though the row shows it cut
    title = r.get_by_test_id("job-title")
    await r.locator(".job-title").hover()
    await expect(title).to_have_attribute("title", LONG)
    await expect(r.locator(".job-title")).to_have_attribute("title", LONG)
    assert await title.evaluate("e => e.parentElement.scrollWidth > e.parentElement.clientWidth")

    # aligned, unwrapped rows at 1280 px: every row the same height, every column at the same x
    await shot(page, "joblist-1280")
    boxes = await page.locator("[data-testid=job] .job-main").evaluate_all(
        "rows => rows.map(r => [r.getBoundingClientRect().height,"
        " ...[...r.children].map(c => Math.round(c.getBoundingClientRect().left))])")
    # nothing cut or spilling into the next column, but the title (whose full text is on hover)
    spilled = await page.locator("[data-testid=job] .job-main > :not(.job-title)").evaluate_all(
        "cells => cells.filter(c => c.scrollWidth > c.clientWidth + 1 ||"
        " [...c.querySelectorAll(':not(.sr-only)')].some("
        "  e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflow === 'hidden'))"
        ".map(c => c.className + ' ' + c.textContent)")
    assert spilled == [], spilled
    assert len(boxes) == 3
    assert len({b[0] for b in boxes}) == 1, boxes
    assert all(b[1:] == boxes[0][1:] for b in boxes), boxes
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")

    ids = page.locator("[data-testid=job]")

    async def order() -> list[str]:
        return [str(await ids.nth(i).get_attribute("data-job-id")) for i in range(await ids.count())]

    expected = {
        "created": [later["id"], running["id"], cancelled["id"]],
        "priority": [later["id"], running["id"], cancelled["id"]],
        "status": [running["id"], later["id"], cancelled["id"]],
    }
    assert await order() == [str(i) for i in expected["created"]]
    await page.get_by_test_id("job-sort").select_option("status")
    await expect(ids.first).to_have_attribute("data-job-id", str(running["id"]))
    assert await order() == [str(i) for i in expected["status"]]
    await page.get_by_test_id("job-sort").select_option("priority")
    await expect(ids.first).to_have_attribute("data-job-id", str(later["id"]))
    assert await order() == [str(i) for i in expected["priority"]]
    # remembered across a reload
    await page.get_by_test_id("job-sort").select_option("status")
    await page.reload()
    await expect(page.get_by_test_id("job-sort")).to_have_value("status")
    await expect(ids.first).to_have_attribute("data-job-id", str(running["id"]))
