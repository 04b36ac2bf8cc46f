"""The web dashboard: static serving, generated types, and end-to-end runs in headless Chromium
(Playwright) against a real server with a real agent driving virtual phones.

The browser tests need ``/usr/bin/chromium`` (Debian package ``chromium``), the ``playwright`` Python
package, and a built dashboard (``cd dashboard && npm ci && npm run build``). Screenshots of every page are
saved under ``tests/artifacts/``.
"""

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from phonefleet.agent.agent import Agent
from phonefleet.protocol.schema import main as export_schema
from phonefleet.server.static import add_dashboard_routes, dashboard_dist
from tests.agent_fixtures import AgentFactory
from tests.browser_fixtures import DASHBOARD, ROOT
from tests.conftest import RunningServer, eventually
from tests.dashboard_helpers import admin_person, shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page


# ---------------------------------------------------------------- serving (no browser needed)


async def _client(dist: Path) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_dashboard_routes(app, dist)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_root_explains_how_to_build_when_dist_is_missing(tmp_path: Path) -> None:
    client = await _client(tmp_path / "nothing")
    try:
        r = await client.get("/")
        assert r.status == 200 and r.content_type == "text/html"
        assert "npm ci &amp;&amp; npm run build" in await r.text()
        assert (await client.get("/assets/app.js")).status == 404
    finally:
        await client.close()


async def test_serves_index_and_assets_but_nothing_outside(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>pf</title>")
    (tmp_path / "assets" / "app-1234.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    client = await _client(tmp_path)
    try:
        r = await client.get("/")
        assert r.status == 200 and "<title>pf</title>" in await r.text()
        assert r.headers["Cache-Control"] == "no-cache"
        r = await client.get("/assets/app-1234.js")
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
        for bad in ("/assets/../secret.txt", "/assets/%2e%2e/secret.txt", "/assets/missing.js"):
            assert (await client.get(bad)).status == 404, bad
    finally:
        await client.close()


def test_dist_resolution_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHONEFLEET_DASHBOARD_DIST", str(tmp_path))
    assert dashboard_dist() == tmp_path
    monkeypatch.delenv("PHONEFLEET_DASHBOARD_DIST")
    assert dashboard_dist() in (ROOT / "dashboard" / "dist", ROOT / "phonefleet" / "_dashboard")


def test_generated_types_match_the_protocol(tmp_path: Path) -> None:
    """``npm run gen-types`` on the current schema gives the committed ``src/generated/protocol.ts``."""
    node = shutil.which("node")
    if node is None or not (DASHBOARD / "node_modules" / "json-schema-to-typescript").is_dir():
        pytest.skip("node and dashboard/node_modules (cd dashboard && npm ci) are needed to regenerate the types")
    schema, out = tmp_path / "schema.json", tmp_path / "protocol.ts"
    export_schema([str(schema)])
    subprocess.run([node, "scripts/gen-types.mjs"], cwd=DASHBOARD, check=True, capture_output=True, timeout=120,
                   env={**os.environ, "PHONEFLEET_SCHEMA": str(schema), "PHONEFLEET_TYPES_OUT": str(out)})
    committed = (DASHBOARD / "src" / "generated" / "protocol.ts").read_text()
    assert out.read_text() == committed, "protocol changed: run `npm run gen-types` in dashboard/ and commit"


# ---------------------------------------------------------------- browser


async def test_sign_in_rejects_a_wrong_password_survives_a_reload_and_signs_out_on_the_server(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    name, password = await admin_person(server.url, "operator")
    await page.goto(server.url + "/")
    await shot(page, "sign-in")
    await page.fill("#name", name)
    await page.fill("#password", "not-the-password")
    await page.click("button[type=submit]")
    await expect(page.get_by_test_id("signin-error")).to_contain_text("Wrong name or password")
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await expect(page.get_by_test_id("link-state")).to_have_text("Live")
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    await expect(page.get_by_test_id("signed-in-as")).to_have_text(f"{name} operator")
    cookies = [c for c in await page.context.cookies() if c["name"] == "pf_session"]
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == "", "the session cookie is out of the page's scripts' reach"
    await page.reload()
    await expect(page.get_by_test_id("link-state")).to_have_text("Live")
    await expect(page.locator("#password")).to_have_count(0)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#password")).to_be_visible()
    status, _ = await server.request("GET", "/api/session", token=None)
    assert status == 401
    async with server.session.get(server.url + "/api/session",
                                  headers={"Cookie": f"pf_session={cookies[0]['value']}"}) as r:
        assert r.status == 401, "signing out ended the session on the server, not only in the page"
    await page.reload()
    await expect(page.locator("#password")).to_be_visible()


async def test_job_for_half_the_phones_runs_to_100_percent(server: RunningServer, agent_factory: AgentFactory,
                                                           page: "Page") -> None:
    from playwright.async_api import expect

    await agent_factory("pc", virtual=4)
    await sign_in(page, server)
    await expect(page.get_by_test_id("connected-count")).to_have_text("4")
    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    await dialog.locator("#url").fill("https://example.com/half")
    await dialog.locator("#duration_sec").fill("1")
    await expect(dialog.get_by_test_id("title")).to_have_value("Open example.com for 1 s")
    await dialog.get_by_test_id("target-percentage").check()
    await dialog.get_by_test_id("percent").fill("0")
    await dialog.get_by_test_id("create").click()  # checked before sending, named beside the field
    await expect(dialog.get_by_test_id("error-target_value")).to_have_text("Enter a whole number from 1 to 100")
    await dialog.get_by_test_id("percent").fill("50")
    await expect(dialog.get_by_test_id("expected")).to_contain_text("4 phones connected now")
    await expect(dialog.get_by_test_id("expected")).to_contain_text("expected: 2 phones")
    await dialog.get_by_test_id("percent").fill("30")
    await expect(dialog.get_by_test_id("expected")).to_contain_text("expected: 2 phones")  # ceil(1.2)
    await dialog.get_by_test_id("percent").fill("50")
    await shot(page, "new-job-dialog")
    await dialog.get_by_test_id("create").click()
    await expect(dialog).to_have_count(0)

    row = page.get_by_test_id("job").first
    await expect(row.get_by_test_id("progress")).to_have_text("2 done · 0 failed · 0 running of 2")
    await expect(row.get_by_test_id("job-status")).to_have_text("completed")
    await expect(page.get_by_test_id("sum-completed")).to_have_text("1")
    jobs = (await server.ok("GET", "/api/jobs"))["items"]
    assert [(j["target_type"], j["target_value"], j["target_count"], j["completed_count"]) for j in jobs] == [
        ("percentage", 50, 2, 2)]
    await row.get_by_role("button", name=re.compile("Phones of")).click()
    await expect(row.get_by_test_id("assignment")).to_have_count(2)
    await expect(row.locator("[data-testid=assignment][data-status=completed]")).to_have_count(2)
    await shot(page, "jobs")

    # a screenshot job: its detail page shows the picture, fetched with the token
    await page.get_by_test_id("new-job").click()
    await dialog.get_by_test_id("preset").select_option("screenshot")
    await dialog.get_by_test_id("target-count").check()
    await dialog.get_by_test_id("count").fill("1")
    await dialog.get_by_test_id("create").click()
    shot_row = page.locator("[data-testid=job]", has_text="Take a screenshot")
    await expect(shot_row.get_by_test_id("job-status")).to_have_text("completed")
    await shot_row.get_by_test_id("job-title").click()
    detail = page.get_by_test_id("job-detail")
    await expect(detail.get_by_test_id("assignment")).to_have_count(1)
    image = detail.get_by_test_id("artifact")
    await expect(image).to_have_count(1)
    await expect(image).to_have_attribute("src", re.compile("^blob:"))
    assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    await shot(page, "job-detail")

    await page.get_by_test_id("delete").click()  # delete from the detail page (asked once): it says the job is gone
    await page.get_by_test_id("confirm-dialog").get_by_test_id("confirm").click()
    await expect(page.get_by_text("does not exist")).to_be_visible()
    assert len((await server.ok("GET", "/api/jobs"))["items"]) == 1


async def _workers_queued(agent: Agent, serial: str) -> list[int]:
    return agent.workers[serial].queued_ids()


async def test_pause_and_resume_reach_the_agent_and_agent_pauses_reach_the_page(
        server: RunningServer, agent_factory: AgentFactory, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await agent_factory("pc", virtual=2)
    assert agent.fleet is not None
    held, runner = (p.adb_serial for p in agent.fleet.phones)
    await sign_in(page, server)
    await page.get_by_role("link", name="Phones").click()
    await expect(page.get_by_test_id("connected-count")).to_have_text("2")
    await expect(page.get_by_test_id("agent")).to_contain_text("connected")

    # a pause made at the PC (`phonefleet-agent pause --device ...`) appears on the page
    from tests.agent_processes import agent_cli

    await asyncio.to_thread(agent_cli, agent.state_dir, "pause", "--device", held)
    held_row = page.locator(f"[data-testid=phone][data-serial='{held}']")
    await expect(held_row).to_have_attribute("data-state", "paused")
    await expect(held_row).to_contain_text("paused at PC pc by operator")
    await shot(page, "phones")
    # the server overrides it: the phone takes work, which the agent queues while the PC holds it
    await held_row.get_by_test_id("phone-toggle").click()
    await expect(held_row).to_have_attribute("data-state", "idle")

    await page.get_by_role("link", name="Jobs").click()
    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    await dialog.locator("#url").fill("https://example.com/long")
    await dialog.locator("#duration_sec").fill("120")
    await expect(dialog.get_by_test_id("expected")).to_contain_text("expected: 2 phones")
    await dialog.get_by_test_id("create").click()
    row = page.get_by_test_id("job").first
    await expect(row.get_by_test_id("job-status")).to_have_text("active")
    await expect(row).to_contain_text("1 running")
    await eventually(lambda: _workers_queued(agent, held))

    await row.get_by_test_id("pause").click()
    await expect(row.get_by_test_id("job-status")).to_have_text("paused")
    await expect(page.get_by_test_id("sum-paused")).to_have_text("1")
    job = (await server.ok("GET", "/api/jobs"))["items"][0]
    assert job["status"] == "paused"

    async def set_aside() -> bool:
        return not agent.workers[held].queued_ids()

    await eventually(set_aside)  # the agent took the queued run off the phone's queue
    await shot(page, "jobs-paused")

    await row.get_by_test_id("resume").click()
    await expect(row.get_by_test_id("job-status")).to_have_text("active")
    await eventually(lambda: _workers_queued(agent, held))  # back on the phone's queue
    current = agent.workers[runner].current
    assert current is not None and current.job_id == job["id"], "the running phone went on meanwhile"

    # a phone going offline changes the connected count without a reload
    await expect(page.get_by_test_id("connected-count")).to_have_text("2")
    await agent.fleet.phones[0].go_offline()
    await expect(page.get_by_test_id("connected-count")).to_have_text("1", timeout=30_000)

    await row.get_by_test_id("cancel").click()
    await expect(page.get_by_test_id("confirm-message")).to_contain_text("cancels 1 running run on 1 phone")
    await page.get_by_test_id("confirm").click()
    await expect(row.get_by_test_id("job-status")).to_have_text("cancelled")


async def test_page_says_when_the_live_link_drops_and_recovers(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    job: dict[str, Any] = await server.ok("POST", "/api/jobs", {
        "title": "made elsewhere", "plan": [{"type": "wait", "duration_sec": 1}], "target_type": "device_count",
        "target_value": 1})
    await expect(page.get_by_test_id("job")).to_have_count(1)  # pushed over the socket
    realtime = server.services.realtime
    for sid in list(realtime.dashboards):
        await realtime.sio.disconnect(sid, namespace="/dashboard")
    await expect(page.get_by_test_id("offline-banner")).to_be_visible()
    await expect(page.get_by_test_id("link-state")).to_have_text("Offline")
    await expect(page.get_by_test_id("offline-banner")).to_contain_text(re.compile(r"Offline since .+, retrying"))
    await expect(page.locator(".shell")).to_have_class(re.compile(r"\bstale\b"))  # live figures greyed
    await shot(page, "offline")
    await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "paused"})
    await expect(page.get_by_test_id("job-status")).to_have_text("paused", timeout=15_000)  # REST refresh or new socket
    await expect(page.get_by_test_id("link-state")).to_have_text("Live")
    await expect(page.get_by_test_id("offline-banner")).to_have_count(0)
    await expect(page.locator(".shell")).not_to_have_class(re.compile(r"\bstale\b"))


async def test_a_viewer_sees_jobs_without_the_buttons_and_makes_a_personal_token(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await server.ok("POST", "/api/jobs", {"title": "look only", "plan": [{"type": "wait", "duration_sec": 1}],
                                          "target_type": "device_count", "target_value": 1})
    await sign_in(page, server, "viewer")
    await expect(page.get_by_test_id("job-title")).to_have_text("look only")
    await expect(page.get_by_test_id("new-job")).to_have_count(0)
    await expect(page.get_by_role("button", name="Pause look only")).to_have_count(0)
    await expect(page.get_by_test_id("scheduler-stop")).to_have_count(0)
    await expect(page.get_by_role("link", name="Jobs")).to_have_count(1)
    await expect(page.get_by_role("link", name="Audit")).to_have_count(0)  # the trail is the admins'

    await page.get_by_test_id("signed-in-as").click()
    await expect(page.get_by_test_id("account-who")).to_contain_text("role viewer")
    await page.fill("#token-name", "laptop")
    await page.get_by_test_id("create-token").click()
    secret = await page.get_by_test_id("new-token-secret").inner_text()
    assert secret.startswith("pfusr_")
    await expect(page.get_by_test_id("token-row")).to_have_count(1)
    status, me = await server.request("GET", "/api/session", token=secret)
    assert status == 200 and me["role"] == "viewer"
    await shot(page, "account")
    await page.get_by_role("button", name="Revoke").click()
    await expect(page.get_by_test_id("token-row")).to_have_count(0)
    assert (await server.request("GET", "/api/session", token=secret))[0] == 401
