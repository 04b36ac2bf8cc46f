"""A run's evidence, end to end with a real agent, virtual phones and the real server: its step timeline
(exit codes and output tails, the failing step, a timeout), its logcat span (captured by the phone's own
clock, filtered on the server by level, tag and text) and the crashes flagged from it."""

import gzip
import time
from typing import Any

from phonefleet.agent.agent import Agent
from phonefleet.protocol.timeline import LOGCAT_KIND, logcat_artifact_name
from phonefleet.virtual import VirtualPhone
from tests.agent_fixtures import AgentFactory
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job


async def _ended(server: RunningServer, job_id: int) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = await server.ok("GET", f"/api/jobs/{job_id}")
        if job["status"] != "completed":
            return None
        rows: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return rows[0]

    row = await eventually(done, timeout=30)
    assert row is not None
    return row


async def _logcat(server: RunningServer, assignment_id: int, query: str = "") -> dict[str, Any]:
    async def uploaded() -> dict[str, Any] | None:
        status, body = await server.request("GET", f"/api/assignments/{assignment_id}/logcat{query}")
        assert status in (200, 404, 409), (status, body)  # 409: still uploading from the agent
        return body if status == 200 else None

    answer = await eventually(uploaded, timeout=15)
    assert answer is not None
    return answer


def _phone(agent: Agent) -> VirtualPhone:
    assert agent.fleet is not None
    phone: VirtualPhone = agent.fleet.phones[0]
    return phone


async def test_a_failed_run_records_each_step_its_failing_step_its_logcat_and_its_crash(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    agent = await agent_factory("pc", virtual=1)
    state = _phone(agent).state
    state.clock_offset_sec = -7200.0  # the phone's clock is two hours behind this host's: -T must use the phone's
    assert agent.tracker is not None
    (serial,) = agent.tracker.phones

    async def clock_known() -> bool:  # the health probe reads the phone's clock: a run's start costs no round trip
        now = agent.tracker.phone_clock(serial) if agent.tracker else None
        return now is not None and abs(now - (time.time() - 7200)) < 2

    await eventually(clock_known, timeout=10)
    await state.actions.wait_for(lambda r: r.argv[:1] == ("date",), since=len(state.actions))  # a probe read it
    mark = len(state.actions)
    state.crashing_packages.add("com.android.settings")
    # A line from a minute before the run is not in its span (the span may start up to one probe early, to
    # never miss the run's own first lines, but never a minute early).
    state.log.add(state.now() - 60, "I", "Earlier", "before-the-run", pid=99)
    plan = [
        {"type": "tap", "x": 10, "y": 20, "name": "poke"},
        {"type": "shell", "command": "echo from-the-plan"},
        {"type": "launch_app", "package": "com.android.settings"},
        {"type": "shell", "command": "no-such-tool --now"},
        {"type": "tap", "x": 1, "y": 2},
    ]
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=plan, max_retries=0))
    row = await _ended(server, job["id"])
    assert row["status"] == "failed"
    ran = state.actions.records[mark:]
    dates = sum(r.argv[:1] == ("date",) for r in ran)
    probes = sum(r.argv == ("echo", ":pf:clock") for r in ran)
    assert dates <= probes, [r.command for r in ran]  # only the probes read the clock: the run asked nothing
    assert any(r.command.startswith("logcat -d -v threadtime -T") for r in ran)
    assert [c["process"] for c in row["crashes"]] == ["com.android.settings"]
    assert "FATAL EXCEPTION" in row["crashes"][0]["line"]

    timeline = await server.ok("GET", f"/api/assignments/{row['id']}/steps")
    steps = timeline["steps"]
    assert [s["step_index"] for s in steps] == [0, 1, 2, 3, 4]
    assert [s["outcome"] for s in steps] == ["completed", "completed", "completed", "failed", "not_run"]
    assert [s["exit_code"] for s in steps] == [0, 0, 0, 127, None]
    assert steps[0]["name"] == "poke" and steps[0]["type"] == "tap"
    assert steps[1]["output_tail"] == "from-the-plan\n"
    assert "not found" in steps[3]["output_tail"] and "exited 127" in steps[3]["error"]
    assert all(s["started_at"] <= s["finished_at"] for s in steps[:4])
    assert steps[4]["started_at"] is None
    assert timeline["failed_step"] == 3 and timeline["crashes"] == row["crashes"]

    everything = await _logcat(server, row["id"])
    messages = [line["message"] for line in everything["lines"]]
    assert "before-the-run" not in messages  # the span starts at the run's start by the phone's clock
    assert any("Start proc" in m and "com.android.settings" in m for m in messages)
    assert everything["total"] == everything["matched"] == len(messages) and not everything["truncated"]
    assert everything["artifact"] == logcat_artifact_name(row["id"])

    errors = await _logcat(server, row["id"], "?level=E")
    assert errors["lines"] and {line["level"] for line in errors["lines"]} <= {"E", "F"}
    assert errors["matched"] < everything["total"]
    info_up = await _logcat(server, row["id"], "?level=I")
    assert info_up["matched"] > errors["matched"] and "D" not in {line["level"] for line in info_up["lines"]}
    tagged = await _logcat(server, row["id"], "?tag=AndroidRuntime")
    assert tagged["lines"] and {line["tag"] for line in tagged["lines"]} == {"AndroidRuntime"}
    found = await _logcat(server, row["id"], "?q=VIRTUAL%20CRASH&level=E")
    assert len(found["lines"]) == 1 and "virtual crash" in found["lines"][0]["message"]
    one = await _logcat(server, row["id"], "?limit=1")
    assert len(one["lines"]) == 1 and one["truncated"] and one["matched"] == everything["total"]

    status, body = await server.request("GET", f"/api/assignments/{row['id']}/logcat?level=X")
    assert status == 422 and body["error"]["details"][0]["field"] == "level"
    status, body = await server.request("GET", "/api/assignments/999999/logcat")
    assert status == 404 and body["error"]["code"] == "not_found"

    artifacts = row["result"]["artifacts"]
    assert [a["kind"] for a in artifacts] == [LOGCAT_KIND]
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with server.session.get(f"{server.url}/api/assignments/{row['id']}/artifacts/{artifacts[0]['file']}",
                                  headers=headers) as r:
        assert r.status == 200
        raw = gzip.decompress(await r.read()).decode()
    assert "FATAL EXCEPTION" in raw and "before-the-run" not in raw


async def test_a_run_past_its_timeout_marks_its_running_step_and_keeps_its_logcat(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    await agent_factory("pc", virtual=1)
    plan = [{"type": "open_url", "url": "https://example.com/slow", "duration_sec": 60}]
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=plan, timeout_sec=1, max_retries=0))
    row = await _ended(server, job["id"])
    assert row["status"] == "timed_out" and row["crashes"] == []
    (step,) = (await server.ok("GET", f"/api/assignments/{row['id']}/steps"))["steps"]
    assert step["outcome"] == "timed_out" and step["exit_code"] == 0
    assert "Starting: Intent" in step["output_tail"] and "timed out" in step["error"]
    answer = await _logcat(server, row["id"], "?q=com.android.chrome&tag=ActivityManager")
    assert answer["lines"] and answer["lines"][0]["tag"] == "ActivityManager"


async def test_a_completed_run_lists_its_steps_and_an_unknown_run_is_not_found(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "keyevent", "key": "KEYCODE_HOME"}, {"type": "wait", "duration_sec": 0.01}]))
    row = await _ended(server, job["id"])
    timeline = await server.ok("GET", f"/api/assignments/{row['id']}/steps")
    assert [(s["type"], s["outcome"], s["exit_code"]) for s in timeline["steps"]] == [
        ("keyevent", "completed", 0), ("wait", "completed", None)]
    assert timeline["failed_step"] is None and timeline["status"] == "completed"
    status, body = await server.request("GET", "/api/assignments/999999/steps")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_a_logcat_still_uploading_or_deleted_says_so(server: RunningServer, agent_factory: AgentFactory) -> None:
    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(plan=[{"type": "keyevent", "key": "KEYCODE_HOME"}]))
    row = await _ended(server, job["id"])
    assert (await _logcat(server, row["id"]))["total"] > 0
    name = logcat_artifact_name(row["id"])
    async with server.services.pool.acquire() as conn:  # as if its bytes were still on their way
        await conn.execute("UPDATE artifacts SET status = 'uploading' WHERE assignment_id = $1 AND name = $2",
                           row["id"], name)
    status, body = await server.request("GET", f"/api/assignments/{row['id']}/logcat")
    assert status == 409 and body["error"]["code"] == "uploading", body
    async with server.services.pool.acquire() as conn:  # as retention leaves it
        await conn.execute("""UPDATE artifacts SET status = 'deleted', deleted_at = now(),
                                  deleted_reason = 'age: older than 30 days'
                              WHERE assignment_id = $1 AND name = $2""", row["id"], name)
    status, body = await server.request("GET", f"/api/assignments/{row['id']}/logcat")
    assert status == 410 and body["error"]["code"] == "deleted", body
    assert "older than 30 days" in body["error"]["message"]
