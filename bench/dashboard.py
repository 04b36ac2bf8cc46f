"""The dashboard at fleet scale in headless Chromium: main-thread long tasks while live updates stream, and how
long a click, a key press and a scroll take to show (the figures that left ``tests/test_dashboard_scale.py``).

Each run: a fresh database and server (a child process, default settings), 1,000 simulated phones and 200
jobs, the scenario of ``phonefleet.sim.dashboard_scale``, then the floor: the same page and fleet with no live
updates for the same window. Needs ``/usr/bin/chromium``, Playwright for Python and a built dashboard.

    python -m bench.dashboard [--runs 3]
"""

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.harness import ADMIN, postgres_root, print_header, run, running_server, scratch_database, verdict
from phonefleet.server.auth import AGENT_PREFIX, hash_token, new_token
from phonefleet.sim.agent import SimAgent
from phonefleet.sim.dashboard_scale import WINDOW_SEC, ScaleReport, long_tasks_since, now, open_page, run_scenario

MODULE = "bench.dashboard"
CHROMIUM = Path("/usr/bin/chromium")
LONG_TASK_GOAL_MS = 200.0  # on a live page; twice that when switching pages
RESPOND_GOAL_MS = 1000.0
RESPOND_TIMEOUT_MS = 30_000.0  # a bound on a hang, not a goal


class BenchServer:
    """The scenario's view of the server: admin REST calls and simulated agents registered in its database."""

    def __init__(self, url: str, dsn: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.dsn = dsn
        self.http = http
        self.agents: list[SimAgent] = []

    async def ok(self, method: str, path: str, json: Any = None, expect: int | None = None) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.http.request(method, self.url + path, json=json, headers=headers) as r:
            body = await r.json()
            if r.status != (expect or {"POST": 201}.get(method, 200)):
                raise RuntimeError(f"{method} {path} answered {r.status}: {body}")
            return body

    async def sim_agent(self, name: str, phones: int, *, auto_finish: bool) -> SimAgent:
        from phonefleet.server.store import agents as agents_store

        token = new_token(AGENT_PREFIX)
        conn = await asyncpg.connect(self.dsn)
        try:
            await agents_store.create(conn, name, hash_token(token))
        finally:
            await conn.close()
        agent = SimAgent(self.url, token, [f"{name}-{i:03d}" for i in range(phones)], auto_finish=auto_finish)
        self.agents.append(agent)
        await agent.connect()
        return agent


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    import playwright.async_api as playwright

    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser
        finally:
            await browser.close()


async def one_run(root: str, browser: Any) -> tuple[ScaleReport, list[float]]:
    """The scenario on a fresh database and server, then the quiet window (the floor)."""
    async with scratch_database(root) as dsn, running_server(dsn) as process, aiohttp.ClientSession() as http:
        server = BenchServer(process.url, dsn, http)
        context, page, errors = await open_page(browser)
        try:
            report = await run_scenario(server, page, respond_timeout_ms=RESPOND_TIMEOUT_MS)
            mark = await now(page)
            await page.wait_for_timeout(WINDOW_SEC * 1000)
            quiet = await long_tasks_since(page, mark)
        finally:
            await context.close()
            for agent in server.agents:
                with contextlib.suppress(Exception):
                    await agent.disconnect()
        if errors:
            raise RuntimeError(f"uncaught errors in the page: {errors}")
        return report, quiet


def longest(values: list[float]) -> float:
    return max(values, default=0.0)


def print_run(n: int, r: ScaleReport, quiet: list[float]) -> None:
    print(f"run {n}: {r.seconds:.1f} s, {r.driver_rounds} driver rounds, jobs {r.jobs_by_status}")
    print(f"  long tasks (ms): initial load {[round(t) for t in r.load_tasks_ms[:5]]}; jobs page live "
          f"{len(r.jobs_live_tasks_ms)}, longest {longest(r.jobs_live_tasks_ms):.0f}; switch to phones longest "
          f"{longest(r.switch_tasks_ms):.0f}; phones page live {len(r.phones_live_tasks_ms)}, longest "
          f"{longest(r.phones_live_tasks_ms):.0f}; floor (same page, no updates) {len(quiet)}, longest "
          f"{longest(quiet):.0f}")
    print(f"  respond (ms): expand click {r.expand_ms:.0f}, Tab+Enter on New job {r.keyboard_ms:.0f}, scroll to "
          f"the last of 1,000 phones {r.scroll_ms:.0f}; phone rows rendered {r.phones_rendered}")


def print_goals(reports: list[ScaleReport]) -> None:
    live = max(longest(r.jobs_live_tasks_ms + r.phones_live_tasks_ms) for r in reports)
    switch = max(longest(r.switch_tasks_ms) for r in reports)
    respond = max(max(r.expand_ms, r.keyboard_ms, r.scroll_ms) for r in reports)
    print(f"goal longest task on a live page <= {LONG_TASK_GOAL_MS:.0f} ms: {live:.0f} ms, "
          f"{verdict(live, LONG_TASK_GOAL_MS)}")
    print(f"goal longest task switching pages <= {2 * LONG_TASK_GOAL_MS:.0f} ms: {switch:.0f} ms, "
          f"{verdict(switch, 2 * LONG_TASK_GOAL_MS)}")
    print(f"goal slowest click / key / scroll <= {RESPOND_GOAL_MS:.0f} ms: {respond:.0f} ms, "
          f"{verdict(respond, RESPOND_GOAL_MS)}")


async def main_async(runs: int) -> None:
    reports = []
    with postgres_root() as root:
        async with chromium() as browser:
            for n in range(1, runs + 1):
                report, quiet = await one_run(root, browser)
                print_run(n, report, quiet)
                reports.append(report)
    print_goals(reports)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    print_header(MODULE, "dashboard at fleet scale (1,000 phones, 200 jobs) in headless Chromium")
    run(main_async(1 if args.quick else args.runs), limit_sec=900)


if __name__ == "__main__":
    main()
