"""The dashboard at fleet scale: 1,000 simulated phones (10 agents x 100) and 200 jobs in headless Chromium.

One scenario, two users: ``tests/test_dashboard_scale.py`` checks that the page keeps up and responds, and
``bench/dashboard.py`` prints how fast (main-thread long tasks from the browser's Long Tasks API, and the time a
click, a key press and a scroll take to show). Playwright is imported only when the scenario runs.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from phonefleet.sim.agent import SimAgent

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

AGENTS = 10
PHONES_PER_AGENT = 100
FINISHING = [f"rack-{i}" for i in range(6)]  # these agents finish every run at once
HOLDING = [f"rack-{i}" for i in range(6, AGENTS)]  # these never finish: their jobs stay running
LONG_RUNNING_JOBS = 40  # 10 phones each: all 400 holding phones stay busy
PAUSED_JOBS = 40
COMPLETING_JOBS = 120
JOBS = LONG_RUNNING_JOBS + PAUSED_JOBS + COMPLETING_JOBS
WINDOW_SEC = 5.0  # per page: two pages make the ~10 s of live updates
SETTLE_SEC = 15.0  # bound on each wait for the server (a wave of jobs completing, the held jobs running)
LAPTOP: "ViewportSize" = {"width": 1280, "height": 800}
TABLET: "ViewportSize" = {"width": 768, "height": 1024}

# Installed before the page loads: every main-thread task over 50 ms, with its start on the page's clock.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
}).observe({ type: "longtask", buffered: true });
"""


class FleetServer(Protocol):
    """A running server the scenario drives: its URL, admin REST calls, and simulated agents."""

    url: str

    async def ok(self, method: str, path: str, json: Any = None, expect: int | None = None) -> Any: ...

    async def sim_agent(self, name: str, phones: int, *, auto_finish: bool) -> SimAgent: ...


@dataclass
class ScaleReport:
    """What the scenario saw: long tasks (ms) per phase, and how long each interaction took to show."""

    jobs_by_status: dict[str, int]
    driver_rounds: int
    load_tasks_ms: list[float]
    jobs_live_tasks_ms: list[float]
    switch_tasks_ms: list[float]
    phones_live_tasks_ms: list[float]
    phones_rendered: int
    expand_ms: float
    keyboard_ms: float
    scroll_ms: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = SETTLE_SEC) -> None:
    """Re-check ``check`` on a short interval until it holds; TimeoutError after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def job_body(title: str, count: int, agents: list[str]) -> dict[str, Any]:
    return {"title": title, "plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": 60}],
            "target_type": "device_count", "target_value": count, "filters": {"agents": agents}}


async def create_jobs(server: FleetServer, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(server.ok("POST", "/api/jobs", b) for b in bodies)))


async def all_in(server: FleetServer, ids: list[int], status: str) -> bool:
    jobs = (await server.ok("GET", "/api/jobs?limit=500"))["items"]
    wanted = set(ids)
    return all(j["status"] == status for j in jobs if j["id"] in wanted)


class Driver:
    """Live updates from the server side: completing jobs are created a batch at a time (each batch waited
    for until it completes), and a few phones are paused and resumed each round."""

    def __init__(self, server: FleetServer, finishing_phones: list[int]) -> None:
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
        await until(lambda: all_in(self.server, ids, "completed"))


async def open_page(browser: "Browser") -> tuple["BrowserContext", "Page", list[str]]:
    """A laptop-sized page that records long tasks from its first script on; the list collects page errors."""
    context = await browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(20_000)
    await context.add_init_script(LONG_TASKS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


async def admin_person(server: FleetServer, name: str = "scale-admin") -> tuple[str, str]:
    """An admin person to sign the dashboard in with: (name, one-time password)."""
    created = await server.ok("POST", "/api/users", {"name": name, "role": "admin"})
    return name, str(created["password"])


async def sign_in(page: "Page", url: str, name: str, password: str) -> None:
    """Sign in with a person's name and password and wait until the live link is up."""
    from playwright.async_api import expect

    await page.goto(url + "/")
    await page.fill("#name", name)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await expect(page.get_by_test_id("link-state")).to_have_text("Live")


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


async def shots(page: "Page", name: str, artifacts: Path | None) -> None:
    """Screenshots at a laptop and a tablet width (``scale-<name>-<width>.png``), when a folder is given."""
    if artifacts is None:
        return
    await asyncio.to_thread(artifacts.mkdir, exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("tablet", TABLET)):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(artifacts / f"scale-{name}-{label}.png"))
    await page.set_viewport_size(LAPTOP)


async def start_fleet(server: FleetServer) -> Driver:
    """Agents and phones; long-running jobs take every holding phone, paused jobs wait, a first wave completes."""
    for i in range(AGENTS):
        name = f"rack-{i}"
        await server.sim_agent(name, PHONES_PER_AGENT, auto_finish=name in FINISHING)
    phones = await server.ok("GET", "/api/devices")
    assert len(phones) == AGENTS * PHONES_PER_AGENT, len(phones)
    driver = Driver(server, sorted(d["id"] for d in phones if d["agent_name"] in FINISHING))
    held = await create_jobs(server, [job_body(f"soak {i}", 10, HOLDING) for i in range(LONG_RUNNING_JOBS)])
    waiting = await create_jobs(server, [job_body(f"held back {i}", 5, HOLDING) for i in range(PAUSED_JOBS)])
    await asyncio.gather(*(server.ok("PATCH", f"/api/jobs/{j['id']}", {"status": "paused"}) for j in waiting))
    first = await create_jobs(server, [job_body(f"first wave {i}", 20, FINISHING) for i in range(20)])
    driver.left -= len(first)
    await until(lambda: all_in(server, [j["id"] for j in first], "completed"))

    async def all_held_running() -> bool:
        by_id = {j["id"]: j for j in (await server.ok("GET", "/api/jobs?limit=500"))["items"]}
        return all(by_id[j["id"]]["assigned_count"] == 10 for j in held)

    await until(all_held_running)
    return driver


async def respond(page: "Page", timeout_ms: float) -> tuple[float, float]:
    """A job's expand button, then Tab and Enter onto "New job": milliseconds until each showed."""
    from playwright.async_api import expect

    # the newest job's row, by its id: jobs the page hears of later go above it
    controls = await page.get_by_test_id("job").first.get_by_role("button", name="Phones of").get_attribute(
        "aria-controls")
    expander = page.locator(f'button[aria-controls="{controls}"]')
    row = page.get_by_test_id("job").filter(has=expander)
    t = time.perf_counter()
    await expander.click()
    await expect(expander).to_have_attribute("aria-expanded", "true", timeout=timeout_ms)
    await expect(row.get_by_test_id("assignment").first).to_be_visible(timeout=timeout_ms)
    expand_ms = (time.perf_counter() - t) * 1000
    await page.get_by_role("button", name="Sign out").focus()
    t = time.perf_counter()
    await page.keyboard.press("Tab")
    await expect(page.get_by_test_id("new-job")).to_be_focused(timeout=timeout_ms)
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("new-job-dialog")).to_be_visible(timeout=timeout_ms)
    keyboard_ms = (time.perf_counter() - t) * 1000
    await page.keyboard.press("Escape")
    await expect(page.get_by_test_id("new-job-dialog")).to_have_count(0)
    return expand_ms, keyboard_ms


async def scroll_to_last_phone(page: "Page", timeout_ms: float) -> tuple[int, float]:
    """The windowed phones table: rows rendered, and milliseconds until the last phone scrolls into view."""
    from playwright.async_api import expect

    rendered = await page.get_by_test_id("phone").count()
    rows = AGENTS * PHONES_PER_AGENT + AGENTS + 1  # every phone, a header per agent, the column headers
    await expect(page.get_by_test_id("phones")).to_have_attribute("aria-rowcount", str(rows))
    t = time.perf_counter()
    await page.evaluate("scrollTo(0, document.body.scrollHeight)")
    last_phone = page.locator(f"[data-testid=phone][data-serial='rack-{AGENTS - 1}-{PHONES_PER_AGENT - 1:03d}']")
    await expect(last_phone).to_be_in_viewport(timeout=timeout_ms)
    scroll_ms = (time.perf_counter() - t) * 1000
    await page.mouse.wheel(0, -8000)
    return rendered, scroll_ms


async def run_scenario(server: FleetServer, page: "Page", *, respond_timeout_ms: float,
                       artifacts: Path | None = None) -> ScaleReport:
    """The whole scenario on ``page`` (from ``open_page``); every wait is bounded, every figure is returned."""
    from playwright.async_api import expect

    started = time.perf_counter()
    driver = await start_fleet(server)

    await sign_in(page, server.url, *await admin_person(server))  # the jobs page: initial load, then live updates
    await expect(page.get_by_test_id("connected-count")).to_have_text(str(AGENTS * PHONES_PER_AGENT))
    await expect(page.get_by_test_id("sum-total")).to_have_text(str(JOBS - driver.left))
    await expect(page.get_by_test_id("sum-paused")).to_have_text(str(PAUSED_JOBS))
    load_tasks = await long_tasks_since(page, 0)
    await shots(page, "jobs", artifacts)
    await show_all(page, JOBS - driver.left)
    mark = await now(page)
    await driver.run(WINDOW_SEC, jobs=60)
    jobs_tasks = await long_tasks_since(page, mark)
    expand_ms, keyboard_ms = await respond(page, respond_timeout_ms)

    mark = await now(page)  # the phones page: switching to it, then live updates
    await page.get_by_role("link", name="Phones").click()
    await expect(page.get_by_test_id("agent")).to_have_count(AGENTS)
    await expect(page.get_by_test_id("phone").first).to_be_visible()
    switch_tasks = await long_tasks_since(page, mark)
    await shots(page, "phones", artifacts)
    rendered, scroll_ms = await scroll_to_last_phone(page, respond_timeout_ms)
    mark = await now(page)
    # The observation window is the time the driver needs for its rounds (each waits on a condition), at
    # least WINDOW_SEC; if the job budget is spent early the rest of the window only toggles phones.
    await driver.run(WINDOW_SEC, jobs=driver.left)
    await page.wait_for_timeout(300)  # the only fixed wait: lets the last throttled render land in the window
    phones_tasks = await long_tasks_since(page, mark)

    return ScaleReport(
        jobs_by_status=(await server.ok("GET", "/api/stats"))["jobs"], driver_rounds=driver.rounds,
        load_tasks_ms=sorted(load_tasks, reverse=True), jobs_live_tasks_ms=jobs_tasks,
        switch_tasks_ms=switch_tasks, phones_live_tasks_ms=phones_tasks, phones_rendered=rendered,
        expand_ms=expand_ms, keyboard_ms=keyboard_ms, scroll_ms=scroll_ms, seconds=time.perf_counter() - started)
