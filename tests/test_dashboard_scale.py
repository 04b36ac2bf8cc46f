"""The dashboard at fleet scale: 1,000 phones (10 simulated agents x 100) and 200 jobs, in headless Chromium.

While the server pushes live updates (jobs created and completing, phones going busy, idle, paused), the
browser's Long Tasks API must see no main-thread task above ``LONG_TASK_BOUND_MS``, and a click on a job's
expand button and Tab/Enter on "New job" must respond within ``RESPOND_MS``. Screenshots at a laptop and a
tablet width go to ``tests/artifacts/`` (``scale-*.png``). The measured figures are printed (``pytest -s``).
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import RunningServer, eventually
from tests.test_dashboard import ARTIFACTS, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, ViewportSize

pytestmark = pytest.mark.timeout(90)

AGENTS = 10
PHONES_PER_AGENT = 100
FINISHING = [f"rack-{i}" for i in range(6)]  # these agents finish every run at once
HOLDING = [f"rack-{i}" for i in range(6, AGENTS)]  # these never finish: their jobs stay running
LONG_RUNNING_JOBS = 40  # 10 phones each: all 400 holding phones stay busy
PAUSED_JOBS = 40
COMPLETING_JOBS = 120
JOBS = LONG_RUNNING_JOBS + PAUSED_JOBS + COMPLETING_JOBS
WINDOW_SEC = 5.0  # per page: two pages make the ~10 s of live updates
LONG_TASK_BOUND_MS = 200.0
RESPOND_MS = 1000.0
LAPTOP: "ViewportSize" = {"width": 1280, "height": 800}
TABLET: "ViewportSize" = {"width": 768, "height": 1024}

# Installed before the page loads: every main-thread task over 50 ms, with its start on the page's clock.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
}).observe({ type: "longtask", buffered: true });
"""


@pytest.fixture
async def page(browser: "Browser") -> AsyncIterator["Page"]:
    context = await browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(20_000)
    await context.add_init_script(LONG_TASKS)
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def job_body(title: str, count: int, agents: list[str]) -> dict[str, Any]:
    return {"title": title, "plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": 60}],
            "target_type": "device_count", "target_value": count, "filters": {"agents": agents}}


async def create_jobs(server: RunningServer, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(server.ok("POST", "/api/jobs", b) for b in bodies)))


async def all_in(server: RunningServer, ids: list[int], status: str) -> bool:
    jobs = (await server.ok("GET", "/api/jobs?limit=500"))["items"]
    wanted = set(ids)
    return all(j["status"] == status for j in jobs if j["id"] in wanted)


class Driver:
    """Live updates from the server side: completing jobs are created a batch at a time (each batch waited
    for until it completes), and a few phones are paused and resumed each round."""

    def __init__(self, server: RunningServer, finishing_phones: list[int]) -> None:
        self.server = server
        self.finishing_phones = finishing_phones
        self.left = COMPLETING_JOBS
        self.rounds = 0

    async def run(self, seconds: float, jobs: int) -> None:
        """Rounds until ``seconds`` have passed; ``jobs`` completing jobs are spread evenly over them."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        budget = min(jobs, self.left)
        made_here = 0
        while (elapsed := loop.time() - start) < seconds:
            self.rounds += 1
            due = min(budget, round(budget * min(1.0, (elapsed + 0.5) / seconds))) - made_here
            made_here += due
            self.left -= due
            made = await create_jobs(self.server, [job_body(f"wave {self.rounds} job {i}", 20, FINISHING)
                                                  for i in range(due)])
            first = (self.rounds * 10) % (len(self.finishing_phones) - 10)
            toggled = self.finishing_phones[first:first + 10]
            for paused in (True, False):
                await asyncio.gather(*(self.server.ok("PATCH", f"/api/devices/{d}", {"paused": paused})
                                       for d in toggled))
            await self.completed([j["id"] for j in made])

    async def completed(self, ids: list[int]) -> None:
        await eventually(lambda: all_in(self.server, ids, "completed"), timeout=15)


async def long_tasks_since(page: "Page", since: float) -> list[float]:
    durations: list[float] = await page.evaluate(
        "since => window.__longTasks.filter(t => t.start >= since).map(t => t.duration)", since)
    return durations


async def now(page: "Page") -> float:
    t: float = await page.evaluate("performance.now()")
    return t


async def show_all(page: "Page", rows: int) -> None:
    """Press "Show more" until every job is rendered: the worst case for live updates."""
    from playwright.async_api import expect

    more = page.get_by_role("button", name="Show more")
    while await more.count():
        await more.click()
    await expect(page.get_by_test_id("job")).to_have_count(rows)


async def shots(page: "Page", name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("tablet", TABLET)):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(ARTIFACTS / f"scale-{name}-{label}.png"))
    await page.set_viewport_size(LAPTOP)


async def test_a_thousand_phones_and_two_hundred_jobs_keep_the_page_responsive(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    started = time.perf_counter()
    for i in range(AGENTS):
        name = f"rack-{i}"
        await server.sim_agent(name, PHONES_PER_AGENT, auto_finish=name in FINISHING)
    phones = await server.ok("GET", "/api/devices")
    assert len(phones) == AGENTS * PHONES_PER_AGENT
    finishing_phones = sorted(d["id"] for d in phones if d["agent_name"] in FINISHING)

    # long-running jobs take every holding phone; paused jobs wait behind them; a first wave completes
    held = await create_jobs(server, [job_body(f"soak {i}", 10, HOLDING) for i in range(LONG_RUNNING_JOBS)])
    waiting = await create_jobs(server, [job_body(f"held back {i}", 5, HOLDING) for i in range(PAUSED_JOBS)])
    await asyncio.gather(*(server.ok("PATCH", f"/api/jobs/{j['id']}", {"status": "paused"}) for j in waiting))
    driver = Driver(server, finishing_phones)
    first = await create_jobs(server, [job_body(f"first wave {i}", 20, FINISHING) for i in range(20)])
    driver.left -= len(first)
    await eventually(lambda: all_in(server, [j["id"] for j in first], "completed"), timeout=15)

    async def all_held_running() -> bool:
        jobs = (await server.ok("GET", "/api/jobs?limit=500"))["items"]
        by_id = {j["id"]: j for j in jobs}
        return all(by_id[j["id"]]["assigned_count"] == 10 for j in held)

    await eventually(all_held_running, timeout=15)

    # ---- Jobs page: initial load, then live updates
    await sign_in(page, server)
    await expect(page.get_by_test_id("connected-count")).to_have_text(str(AGENTS * PHONES_PER_AGENT))
    await expect(page.get_by_test_id("sum-total")).to_have_text(str(JOBS - driver.left))
    await expect(page.get_by_test_id("sum-paused")).to_have_text(str(PAUSED_JOBS))
    load_tasks = await long_tasks_since(page, 0)
    await shots(page, "jobs")

    await show_all(page, JOBS - driver.left)
    mark = await now(page)
    await driver.run(WINDOW_SEC, jobs=60)
    jobs_tasks = await long_tasks_since(page, mark)

    # responsiveness under load: a job's expand button, and Tab then Enter onto "New job"
    # the newest job's row, by its id: jobs the page hears of later go above it
    controls = await page.get_by_test_id("job").first.get_by_role("button", name="Phones of").get_attribute(
        "aria-controls")
    expander = page.locator(f'button[aria-controls="{controls}"]')
    row = page.get_by_test_id("job").filter(has=expander)
    t = time.perf_counter()
    await expander.click()
    await expect(expander).to_have_attribute("aria-expanded", "true", timeout=RESPOND_MS)
    await expect(row.get_by_test_id("assignment").first).to_be_visible(timeout=RESPOND_MS)
    expand_ms = (time.perf_counter() - t) * 1000
    await page.get_by_role("button", name="Sign out").focus()
    t = time.perf_counter()
    await page.keyboard.press("Tab")
    await expect(page.get_by_test_id("new-job")).to_be_focused(timeout=RESPOND_MS)
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("new-job-dialog")).to_be_visible(timeout=RESPOND_MS)
    keyboard_ms = (time.perf_counter() - t) * 1000
    await page.keyboard.press("Escape")
    await expect(page.get_by_test_id("new-job-dialog")).to_have_count(0)

    # ---- Phones page: switching to it, then live updates
    mark = await now(page)
    await page.get_by_role("link", name="Phones").click()
    await expect(page.get_by_test_id("agent")).to_have_count(AGENTS)
    await expect(page.get_by_test_id("phone").first).to_be_visible()
    switch_tasks = await long_tasks_since(page, mark)
    await shots(page, "phones")
    # the table is windowed: only the rows near the viewport exist, and scrolling brings the others
    rendered = await page.get_by_test_id("phone").count()
    assert rendered < 150, rendered
    await expect(page.get_by_test_id("phones")).to_have_attribute("aria-rowcount", str(AGENTS * PHONES_PER_AGENT + 1))
    t = time.perf_counter()
    await page.evaluate("scrollTo(0, document.body.scrollHeight)")
    last_phone = page.locator(f"[data-testid=phone][data-serial='rack-{AGENTS - 1}-{PHONES_PER_AGENT - 1:03d}']")
    await expect(last_phone).to_be_in_viewport(timeout=RESPOND_MS)
    scroll_ms = (time.perf_counter() - t) * 1000
    await page.mouse.wheel(0, -8000)
    mark = await now(page)
    # The observation window is the time the driver needs for its rounds (each waits on a condition), at
    # least WINDOW_SEC; if the job budget is spent early the rest of the window only toggles phones.
    await driver.run(WINDOW_SEC, jobs=driver.left)
    await page.wait_for_timeout(300)  # the only fixed wait: lets the last throttled render land in the window
    phones_tasks = await long_tasks_since(page, mark)
    assert driver.rounds > 0

    total = (await server.ok("GET", "/api/stats"))["jobs"]
    report = {
        "jobs": sum(total.values()), "jobs by status": total, "driver rounds": driver.rounds,
        "initial load long tasks (ms)": sorted(load_tasks, reverse=True)[:5],
        "jobs page live: long tasks": len(jobs_tasks), "jobs page live: longest (ms)": max(jobs_tasks, default=0),
        "switch to phones: longest (ms)": max(switch_tasks, default=0),
        "phones page live: long tasks": len(phones_tasks),
        "phones page live: longest (ms)": max(phones_tasks, default=0),
        "phones rendered": rendered, "scroll to last phone (ms)": round(scroll_ms),
        "expand click (ms)": round(expand_ms), "Tab+Enter on New job (ms)": round(keyboard_ms),
        "test seconds": round(time.perf_counter() - started, 1),
    }
    print("\ndashboard at scale:", report)
    assert max(jobs_tasks, default=0) <= LONG_TASK_BOUND_MS, report
    assert max(phones_tasks, default=0) <= LONG_TASK_BOUND_MS, report
    assert max(switch_tasks, default=0) <= 2 * LONG_TASK_BOUND_MS, report
    assert expand_ms <= RESPOND_MS and keyboard_ms <= RESPOND_MS and scroll_ms <= RESPOND_MS, report
