"""Long steps say how far they are while they run: a test run per test, an install by its bytes; each phone's line
reads what its step is doing now (``progress_message``)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from phonefleet.agent.actions import Instrumentation, StepContext
from phonefleet.agent.agent import Agent
from phonefleet.agent.phone import AdbPhone
from phonefleet.virtual.state import InstalledPackage
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job
from tests.test_agent_steps import tiny_apk

RUNNER = "com.example.demo.test/androidx.test.runner.AndroidJUnitRunner"


def with_tests(agent: Agent, *, tests: int, failures: int, each_sec: float) -> None:
    """The agent's (one) virtual phone has an instrumented test package whose tests take ``each_sec`` each."""
    assert agent.fleet is not None
    state = agent.fleet.phones[0].state
    state.packages["com.example.demo.test"] = InstalledPackage("com.example.demo.test", "/data/app/t/base.apk", None)
    state.instrumentation_tests, state.instrumentation_failures = tests, failures
    state.instrumentation_test_sec = each_sec


def adb_phone(agent: Agent) -> AdbPhone:
    assert agent.tracker is not None and agent.fleet is not None
    return agent.tracker.phone(agent.fleet.phones[0].adb_serial)


async def the_run(server: RunningServer, job_id: int) -> dict[str, Any]:
    """The job's one run (an empty dict until the distributor has placed it)."""
    items: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
    assert len(items) <= 1, items
    return items[0] if items else {}


async def test_run_tests_reports_each_test_as_it_ends(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1)
    with_tests(agent, tests=4, failures=1, each_sec=0.7)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "run_tests", "runner": RUNNER}]))
    seen: list[tuple[float, str]] = []

    async def moved_to(done: int) -> bool:
        run = await the_run(server, job["id"])
        if run.get("status") == "running" and run["progress_message"]:
            seen.append((run["progress"], run["progress_message"]))
        return any(f"{done} of 4 tests done" in message for _, message in seen)

    assert await eventually(lambda: moved_to(1), timeout=15, interval=0.05), seen
    assert await eventually(lambda: moved_to(2), timeout=15, interval=0.05), seen
    first = next(p for p, m in seen if "1 of 4 tests done" in m)
    second = next(p for p, m in seen if "2 of 4 tests done" in m)
    assert 0.2 <= first < second <= 0.55, seen  # by tests ended, not by the clock
    assert all(m.startswith("step 1/1 run_tests: ") for _, m in seen), seen

    async def ended() -> dict[str, Any] | None:
        run = await the_run(server, job["id"])
        return run if run.get("finished_at") else None

    run = await eventually(ended, timeout=15)
    assert run is not None and run["status"] == "failed", run
    assert run["error_code"] == "tests_failed" and "1 of 4 tests failed" in run["error"], run


async def test_a_passing_test_run_counts_its_tests(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1)
    with_tests(agent, tests=3, failures=0, each_sec=0)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "run_tests", "runner": RUNNER}]))

    async def ended() -> dict[str, Any] | None:
        run = await the_run(server, job["id"])
        return run if run.get("finished_at") else None

    run = await eventually(ended, timeout=15)
    assert run is not None and run["status"] == "completed", run
    (step,) = run["result"]["steps"]
    assert (step["tests"], step["tests_run"], step["tests_failed"]) == (3, 3, 0), step


@pytest.fixture
async def gated_apk() -> AsyncIterator[tuple[str, asyncio.Event, int]]:
    """An APK server that sends the first half of a 4 MB APK, then holds the rest until the gate opens."""
    body = tiny_apk("com.example.big") + bytes(4_000_000)
    gate = asyncio.Event()

    async def apk(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        half = len(body) // 2
        await response.write(body[:half])
        await gate.wait()
        await response.write(body[half:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big.apk", apk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/big.apk", gate, len(body)
    finally:
        gate.set()
        await runner.cleanup()


async def test_an_install_moves_by_the_bytes_downloaded(
        server: RunningServer, agent_factory: AgentFactory, gated_apk: tuple[str, asyncio.Event, int]) -> None:
    url, gate, size = gated_apk
    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "install_apk", "url": url}]))

    async def half_downloaded() -> dict[str, Any] | None:
        run = await the_run(server, job["id"])
        message = run.get("progress_message") or ""
        return run if run.get("status") == "running" and "downloading" in message else None

    run = await eventually(half_downloaded, timeout=15, interval=0.05)
    assert run is not None
    # held at half of the bytes: half of the download's share of the step, and the message says how many
    assert 0.15 <= run["progress"] <= 0.25, run
    assert f"of {size / 1e6:.1f} MB" in run["progress_message"], run
    assert run["progress_message"].startswith("step 1/1 install_apk: downloading "), run
    gate.set()

    async def ended() -> dict[str, Any] | None:
        run = await the_run(server, job["id"])
        return run if run.get("finished_at") else None

    done = await eventually(ended, timeout=30)
    assert done is not None and done["status"] == "completed", done


async def test_a_push_reports_its_bytes(agent_factory: AgentFactory, tmp_path: Path) -> None:
    agent = await agent_factory("pc", virtual=1)
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    heard: list[tuple[int, int | None]] = []
    await adb_phone(agent).push(local, "/data/local/tmp/big.bin", progress=lambda done, total: heard.append(
        (done, total)))
    assert len(heard) >= 4, heard  # at most once per 256 KiB, so several times for 2 MiB
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)
    assert heard[-1] == (2 * 1024 * 1024, 2 * 1024 * 1024), heard[-1]
    on_phone = await asyncio.to_thread(adb_phone(agent).device.sync.stat, "/data/local/tmp/big.bin")
    assert on_phone.size == 2 * 1024 * 1024


async def test_a_streamed_command_is_heard_line_by_line_and_stops_at_a_cancel(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1)
    with_tests(agent, tests=3, failures=0, each_sec=60)
    phone = adb_phone(agent)
    lines: list[str] = []
    first_test = asyncio.Event()

    def heard(line: str) -> None:
        lines.append(line)
        if line == "INSTRUMENTATION_STATUS_CODE: 1":
            first_test.set()

    task = asyncio.create_task(phone.shell_stream(f"am instrument -w -r {RUNNER}", heard, timeout=None))
    await asyncio.wait_for(first_test.wait(), 10)  # the first test's start, long before the command ends
    assert not task.done()
    assert "INSTRUMENTATION_STATUS: numtests=3" in lines, lines
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)  # no thread holds it: the cancel lands at once

    code, output = await phone.shell_stream("echo one; echo two; false", lines.append)
    assert (code, output) == (1, "one\ntwo\n")
    assert lines[-2:] == ["one", "two"]  # the exit status is never a line


def test_instrumentation_follows_status_blocks_and_skips_stacks(tmp_path: Path) -> None:
    ctx = StepContext(serial="x", phone=None, assignment_id=1, artifacts_dir=tmp_path)  # type: ignore[arg-type]
    tests = Instrumentation(ctx)
    block = ["INSTRUMENTATION_STATUS: class=a.B", "INSTRUMENTATION_STATUS: current=1",
             "INSTRUMENTATION_STATUS: numtests=2", "INSTRUMENTATION_STATUS: test=first"]
    for line in [*block, "INSTRUMENTATION_STATUS_CODE: 1"]:
        tests.line(line)
    assert ctx.step_fraction == 0 and ctx.step_note == "0 of 2 tests done, running first"
    for line in [*block, "INSTRUMENTATION_STATUS: stack=java.lang.AssertionError", "\tat a.B.first(B.java:3)",
                 "INSTRUMENTATION_STATUS_CODE: -2"]:
        tests.line(line)
    assert ctx.step_fraction == 0.5 and ctx.step_note == "1 of 2 tests done · 1 failed"
    tests.line("INSTRUMENTATION_STATUS: id=ActivityManagerService")  # the instrumentation's own error: no test
    tests.line("INSTRUMENTATION_STATUS_CODE: -1")
    assert (tests.ended, tests.failed) == (1, 1)
    assert tests.counts() == {"tests": 2, "tests_run": 1, "tests_failed": 1}
