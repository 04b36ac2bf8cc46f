"""The dashboard as an operator meets it (issue 13, parts 4, 5 and 9), in headless Chromium against real
servers and a real agent with virtual phones:

- a stopped (frozen or killed) server process is shown as offline within 3 s, with every live figure greyed,
  and coming back refreshes everything;
- Delete and Cancel ask once, saying what they will do;
- at 390 px wide nothing overflows the page, and the top bar folds into a menu;
- a dark theme follows ``prefers-color-scheme``, and the top bar's toggle is remembered.

Screenshots (1280x900 and 390x844, light and dark) are saved under ``tests/artifacts/``.
"""

import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from tests.agent_fixtures import AgentFactory
from tests.browser_fixtures import TIMEOUT_MS
from tests.conftest import ADMIN, RunningServer, eventually, free_port
from tests.dashboard_helpers import shot, sign_in
from tests.server_processes import _spawn, healthy

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@asynccontextmanager
async def new_page(browser: "Browser", **options: Any) -> AsyncIterator["Page"]:
    """A page in a context of its own (viewport, colour scheme ...); an uncaught error in it fails the test."""
    context = await browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def _post_job(url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(url + "/api/jobs", json=body,
                                                   headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 201, await r.text()
        job: dict[str, Any] = await r.json()
        return job


# ---------------------------------------------------------------- 4. stale never looks live


async def test_offline_within_3_s_of_the_server_stopping_and_back_refreshed(
        dsn: str, tmp_path: Path, browser: "Browser") -> None:
    from playwright.async_api import expect

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn(dsn, tmp_path, 0, port)
    try:
        await eventually(lambda: healthy(url), timeout=30, interval=0.1)
        job = await _post_job(url, {"title": "before the outage", "plan": [{"type": "wait", "duration_sec": 1}],
                                    "target_type": "device_count", "target_value": 1})
        async with new_page(browser, viewport=DESKTOP) as page:
            await sign_in(page, url)
            await expect(page.get_by_test_id("job-title")).to_have_text("before the outage")
            shell = page.locator(".shell")
            await expect(shell).not_to_have_class(re.compile("stale"))

            # frozen (SIGSTOP): the socket stays open and says nothing; only the page's heartbeat can tell
            os.kill(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                await expect(page.get_by_test_id("offline-banner")).to_be_visible(timeout=3_000)
                took = time.monotonic() - stopped
                assert took <= 3.0, f"offline shown {took:.1f} s after the server stopped"
                await expect(page.get_by_test_id("link-state")).to_have_text("Offline")
                await expect(page.get_by_test_id("offline-banner")).to_contain_text(
                    re.compile(r"Offline since \d{1,2}:\d{2}:\d{2}( [AP]M)?, retrying"))
                await expect(shell).to_have_class(re.compile("stale"))  # every live figure greyed
                assert await page.locator("main").evaluate("m => getComputedStyle(m).filter") == "grayscale(1)"
                await shot(page, "offline-stopped")
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            await expect(page.get_by_test_id("link-state")).to_have_text("Live", timeout=15_000)
            await expect(page.get_by_test_id("offline-banner")).to_have_count(0)
            await expect(shell).not_to_have_class(re.compile("stale"))

            # killed: offline within 3 s; what changed while it was away shows once it is back
            proc.kill()
            stopped = time.monotonic()
            await expect(page.get_by_test_id("offline-banner")).to_be_visible(timeout=3_000)
            assert time.monotonic() - stopped <= 3.0
            proc.wait(10)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("UPDATE jobs SET title = 'renamed while away' WHERE id = $1", job["id"])
            finally:
                await conn.close()
            await expect(page.get_by_test_id("job-title")).to_have_text("before the outage")  # the last live view
            proc = _spawn(dsn, tmp_path, 1, port)
            await eventually(lambda: healthy(url), timeout=30, interval=0.1)
            await expect(page.get_by_test_id("link-state")).to_have_text("Live", timeout=15_000)
            await expect(page.get_by_test_id("job-title")).to_have_text("renamed while away")
            await expect(page.get_by_test_id("offline-banner")).to_have_count(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- 5. destructive actions confirm


async def test_delete_and_cancel_ask_once_saying_what_they_do(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=2)
    job = await server.ok("POST", "/api/jobs", {
        "title": "long wait", "plan": [{"type": "wait", "duration_sec": 120}], "target_type": "device_count",
        "target_value": 2})
    await sign_in(page, server)
    row = page.locator(f"[data-testid=job][data-job-id='{job['id']}']")
    await expect(row).to_contain_text("2 running")

    # Delete, then think better of it: the job stays
    await row.get_by_test_id("delete").click()
    dialog = page.get_by_test_id("confirm-dialog")
    await expect(dialog).to_contain_text(f"Delete job {job['id']}")
    await expect(dialog.get_by_test_id("confirm-message")).to_have_text(
        f"This deletes job {job['id']} and its 2 runs, with their results and files. "
        "It first cancels 2 running runs on 2 phones. It cannot be undone.")
    await shot(page, "confirm-delete")
    await dialog.get_by_test_id("confirm-keep").click()
    await expect(dialog).to_have_count(0)
    await row.get_by_test_id("delete").click()
    await page.keyboard.press("Escape")  # Escape keeps it too
    await expect(dialog).to_have_count(0)
    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "active"
    await expect(row).to_have_count(1)

    # Cancel says what it stops; keeping it changes nothing, confirming cancels
    await row.get_by_test_id("cancel").click()
    await expect(dialog.get_by_test_id("confirm-message")).to_have_text(
        "This cancels 2 running runs on 2 phones. Runs already finished keep their results.")
    await dialog.get_by_test_id("confirm-keep").click()
    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "active"
    await row.get_by_test_id("cancel").click()
    await dialog.get_by_test_id("confirm").click()
    await expect(row.get_by_test_id("job-status")).to_have_text("cancelled")

    # confirmed, Delete deletes
    await row.get_by_test_id("delete").click()
    await dialog.get_by_test_id("confirm").click()
    await expect(row).to_have_count(0)
    await server.ok("GET", f"/api/jobs/{job['id']}", expect=404)


# ---------------------------------------------------------------- 9. phones (390 px) and dark


async def _no_overflow(page: "Page", what: str) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{what}: the page is {width} px wide at {PHONE['width']} px"


async def test_phone_width_dark_theme_and_its_toggle(
        server: RunningServer, agent_factory: AgentFactory, browser: "Browser") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=2)
    await server.ok("POST", "/api/jobs", {"title": "done", "plan": [{"type": "wait", "duration_sec": 0}],
                                          "target_type": "device_count", "target_value": 1})
    job = await server.ok("POST", "/api/jobs", {
        "title": "Open https://example.com/a-rather-long-path/that-goes-on-and-on?campaign=spring-sale-2026 for 60 s",
        "plan": [{"type": "open_url", "url": "https://example.com/a-rather-long-path/that-goes-on-and-on",
                  "duration_sec": 60}],
        "target_type": "device_count", "target_value": 1})
    device = (await server.ok("GET", "/api/devices"))[0]
    pages = {"jobs": "#/jobs", "phones": "#/phones", "job": f"#/jobs/{job['id']}",
             "phone": f"#/phones/{device['id']}", "grid": "#/grid", "schedules": "#/schedules", "audit": "#/audit"}

    # 390 x 844, light: no horizontal overflow on any page; the top bar is one row with a menu
    async with new_page(browser, viewport=PHONE, color_scheme="light") as page:
        await sign_in(page, server)
        await expect(page.get_by_test_id("job")).to_have_count(2)
        for name, hash_ in pages.items():
            await page.goto(f"{server.url}/{hash_}")
            await expect(page.get_by_test_id("link-state")).to_have_text("Live")
            await expect(page.locator("h1")).to_be_visible()
            await _no_overflow(page, name)
            await shot(page, f"mobile-{name}")
        bar = await page.locator(".topbar").bounding_box()
        assert bar is not None and bar["height"] < 60, f"the top bar wraps: {bar}"
        nav = page.get_by_role("navigation", name="Pages")
        await expect(nav).to_be_hidden()
        await page.get_by_test_id("menu-toggle").click()
        await expect(nav).to_be_visible()
        await shot(page, "mobile-menu")
        await nav.get_by_role("link", name="Jobs").click()
        await expect(nav).to_be_hidden()  # choosing a page closes the menu
        await expect(page.get_by_test_id("job")).to_have_count(2)
        await _no_overflow(page, "jobs after the menu")
        # the new-job form and a confirmation fit too
        await page.get_by_test_id("new-job").click()
        form = page.get_by_test_id("new-job-dialog")
        await expect(form).to_be_visible()
        assert await form.evaluate("d => d.scrollWidth <= d.clientWidth"), "the new-job form scrolls sideways"
        await _no_overflow(page, "new-job form")
        await shot(page, "mobile-new-job")
        await page.keyboard.press("Escape")
        await page.locator(f"[data-testid=job][data-job-id='{job['id']}']").get_by_test_id("cancel").click()
        await expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
        await _no_overflow(page, "confirmation")
        await shot(page, "mobile-confirm")
        await page.get_by_test_id("confirm-keep").click()

    # the same pages at 1280 x 900, light
    async with new_page(browser, viewport=DESKTOP, color_scheme="light") as page:
        await sign_in(page, server)
        await expect(page.locator("html")).to_have_attribute("data-theme", "light")
        await expect(page.get_by_test_id("menu-toggle")).to_be_hidden()  # the top bar is one row: no menu
        for name, hash_ in pages.items():
            await page.goto(f"{server.url}/{hash_}")
            await expect(page.locator("h1")).to_be_visible()
            await shot(page, f"desktop-{name}")

    # the system's dark setting is followed; the toggle switches and is remembered
    async with new_page(browser, viewport=DESKTOP, color_scheme="dark") as page:
        await sign_in(page, server)
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        dark_bg = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert dark_bg == "rgb(18, 21, 27)", dark_bg
        await expect(page.get_by_test_id("theme-toggle")).to_have_attribute("aria-pressed", "true")
        for name, hash_ in pages.items():
            await page.goto(f"{server.url}/{hash_}")
            await expect(page.locator("h1")).to_be_visible()
            await shot(page, f"dark-{name}")
        await page.get_by_test_id("theme-toggle").click()
        await expect(page.locator("html")).to_have_attribute("data-theme", "light")
        assert await page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == "rgb(246, 247, 249)"
        await page.reload()
        await expect(page.locator("html")).to_have_attribute("data-theme", "light")  # remembered
        await expect(page.get_by_test_id("theme-toggle")).to_have_attribute("aria-pressed", "false")
        await page.get_by_test_id("theme-toggle").click()
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")

    async with new_page(browser, viewport=PHONE, color_scheme="dark") as page:
        await sign_in(page, server)
        await page.goto(f"{server.url}/{pages['job']}")
        await expect(page.locator("h1")).to_be_visible()
        await _no_overflow(page, "job, dark")
        await shot(page, "mobile-dark-job")
