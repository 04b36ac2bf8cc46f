"""Every plan step reaches the phone as the right ADB command; failures fail only their assignment."""

import asyncio
import io
import itertools
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from phonefleet.agent.agent import Agent
from phonefleet.protocol import events as ev
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job


def tiny_apk(package: str) -> bytes:
    """A zip with a (plain-text) manifest: enough for the virtual phone's package manager."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as apk:
        apk.writestr("AndroidManifest.xml", f'<manifest package="{package}"/>')
        apk.writestr("classes.dex", b"dex\n035\x00" + bytes(64))
    return buf.getvalue()


@pytest.fixture
async def apk_url() -> AsyncIterator[str]:
    app = web.Application()

    async def apk(request: web.Request) -> web.Response:
        return web.Response(body=tiny_apk(request.match_info["package"]))

    app.router.add_get("/{package}.apk", apk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def finished(server: RunningServer, job_id: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        job = await server.ok("GET", f"/api/jobs/{job_id}")
        if job["status"] != "completed":
            return None
        items: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return items

    rows = await eventually(done, timeout=30)
    assert rows is not None
    return rows


async def test_each_step_reaches_the_phone_as_the_right_adb_command(
    server: RunningServer, agent_factory: AgentFactory, apk_url: str
) -> None:
    agent: Agent = await agent_factory("pc", virtual=1)
    plan = [
        {"type": "open_url", "url": "https://example.com/a?b=c", "duration_sec": 0},
        {"type": "wait", "duration_sec": 0.05},
        {"type": "tap", "x": 10, "y": 20},
        {"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 250},
        {"type": "keyevent", "key": "KEYCODE_HOME"},
        {"type": "text", "text": "hello world"},
        {"type": "install_apk", "url": apk_url + "com.example.demo.apk"},
        {"type": "install_apk", "url": apk_url + "com.example.demo.test.apk", "grant_permissions": True},
        {"type": "launch_app", "package": "com.example.demo"},
        {"type": "launch_app", "package": "com.example.demo", "activity": ".Main", "stop_first": True},
        {"type": "stop_app", "package": "com.example.demo"},
        {"type": "run_tests", "runner": "com.example.demo.test/androidx.test.runner.AndroidJUnitRunner"},
        {"type": "screenshot"},
        {"type": "shell", "command": "echo from-the-plan"},
    ]
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=plan))
    (row,) = await finished(server, job["id"])
    assert row["status"] == "completed", (row["error"], row["error_code"])
    assert agent.fleet is not None
    commands = agent.fleet.phones[0].actions.commands()
    expected = [
        "am start -a android.intent.action.VIEW -d 'https://example.com/a?b=c'",
        "input tap 10 20",
        "input swipe 1 2 3 4 250",
        "input keyevent KEYCODE_HOME",
        "input text hello%sworld",
        f"pm install -r /data/local/tmp/phonefleet-{row['id']}.apk",
        f"pm install -r -g /data/local/tmp/phonefleet-{row['id']}.apk",
        "monkey -p com.example.demo -c android.intent.category.LAUNCHER 1",
        "am force-stop com.example.demo",
        "am start -n com.example.demo/.Main",
        "am instrument -w -r com.example.demo.test/androidx.test.runner.AndroidJUnitRunner",
        "screencap -p",
        "echo from-the-plan",
    ]
    for command in expected:
        assert any(c.startswith(command) for c in commands), (command, commands)
    positions = [next(i for i, c in enumerate(commands) if c.startswith(e)) for e in expected]
    assert positions == sorted(positions), "steps run in plan order"
    assert row["result"]["artifacts"][0]["kind"] == "screenshot"

    async def uploaded() -> list[dict[str, Any]]:  # the screenshot and the run's logcat
        listing: list[dict[str, Any]] = await server.ok("GET", f"/api/assignments/{row['id']}/artifacts")
        return [a for a in listing if a["name"].endswith(".png") and a["status"] == "stored"]

    (artifact,) = await eventually(uploaded, timeout=10)
    async with server.session.get(f"{server.url}/api/assignments/{row['id']}/artifacts/{artifact['name']}",
                                  headers={"Authorization": "Bearer pfadm_test-admin-token"}) as r:
        assert r.status == 200
        assert (await r.read()).startswith(b"\x89PNG\r\n\x1a\n")


async def test_failing_command_fails_only_that_assignment_and_the_phone_goes_on(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    await agent_factory("pc", virtual=1)
    bad = await server.ok("POST", "/api/jobs", open_url_job(
        title="bad", plan=[{"type": "shell", "command": "no-such-tool --now"}]))
    (row,) = await finished(server, bad["id"])
    assert row["status"] == "failed"
    assert "exited 127" in row["error"]
    good = await server.ok("POST", "/api/jobs", open_url_job(title="good"))
    (row,) = await finished(server, good["id"])
    assert row["status"] == "completed"


async def test_unknown_step_fails_with_a_clear_error_and_is_not_retried(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    """A server newer than the agent may send a step the agent does not know."""
    await agent_factory("pc", virtual=2)
    job = await server.ok("POST", "/api/jobs", open_url_job(
        target_type="device_count", target_value=1, max_retries=3,
        run_at="2999-01-01T00:00:00Z"))
    async with server.services.pool.acquire() as conn:
        await conn.execute("""UPDATE jobs SET plan = '[{"type": "teleport"}]', run_at = now() WHERE id = $1""",
                           job["id"])
    (row,) = await finished(server, job["id"])
    assert row["status"] == "failed"
    assert row["error_code"] == "unknown_step"
    assert "teleport" in row["error"]
    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["failed_count"] == 1


async def test_assignment_past_its_timeout_ends_timed_out(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(
        timeout_sec=1, plan=[{"type": "open_url", "url": "https://example.com/slow", "duration_sec": 30}]))
    (row,) = await finished(server, job["id"])
    assert row["status"] == "timed_out" and row["error_code"] == "timeout"
    assert agent.status()["phones"][0]["running"] is None, "the phone is free again"


async def test_screenshots_on_more_phones_than_the_agent_has_threads_all_complete(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    """The virtual phones encode their PNGs beside the agent's adb calls; they must never wait on each other."""
    phones = 12  # twice asyncio's default executor on a 2-core machine
    await agent_factory(virtual=phones)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "screenshot"}]))
    rows = await finished(server, job["id"])
    assert [r["status"] for r in rows] == ["completed"] * phones, [(r["error_code"], r["error"]) for r in rows]


async def test_a_long_step_reports_progress_at_least_once_a_second(
    server: RunningServer, agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 s wait is not silent until it ends: the agent's ticker reports its (time-based) progress, and the
    server's row moves while the run runs."""
    agent: Agent = await agent_factory("pc", virtual=1)
    seen: list[tuple[float, float, str | None]] = []
    kept: list[str] = []
    progress, put = agent.link.progress, agent.outbox.put
    loop = asyncio.get_running_loop()

    def spy(report: ev.AssignmentProgress) -> None:
        seen.extend((loop.time(), i.progress, i.message) for i in report.items)
        progress(report)

    def durable(event: str, data: Any) -> int:
        kept.append(event)
        return put(event, data)

    monkeypatch.setattr(agent.link, "progress", spy)
    monkeypatch.setattr(agent.outbox, "put", durable)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "wait", "duration_sec": 3}]))

    async def moving() -> bool:
        rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return bool(rows) and rows[0]["status"] == "running" and 0.2 < rows[0]["progress"] < 0.95

    assert await eventually(moving, timeout=10)  # the server saw the run move mid-step
    (row,) = await finished(server, job["id"])
    assert row["status"] == "completed"
    times = [t for t, _, _ in seen]
    values = [p for _, p, _ in seen]
    assert len(seen) >= 4, seen  # 3 s at least once a second, and the step's end
    # once a second (the ticker beats every 0.8 s; a loaded test host's loop may run one beat a little late)
    assert max(b - a for a, b in itertools.pairwise(times)) <= 1.0 + 0.15, seen
    assert values == sorted(values) and values[-1] == 1.0, values
    assert any(m and re.fullmatch(r"step 1/1 wait: \d+ s", m) for _, _, m in seen), seen
    assert seen[-1][2] == "step 1/1 wait: done", seen
    assert ev.ASSIGNMENT_STARTED in kept and ev.ASSIGNMENT_PROGRESS not in kept, "progress is memory, not a row"
