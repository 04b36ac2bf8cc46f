"""The agent reads the server only through the protocol's models: what does not fit is logged and left out,
never a crash; a step it cannot read fails only its run; results an older agent left in the outbox still go."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phonefleet.agent.agent import Agent
from phonefleet.agent.journal import RunJournal
from phonefleet.agent.link import parse
from phonefleet.agent.outbox import Outbox
from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import AssignmentStatus
from phonefleet.protocol.plan import OpenUrlStep, UnknownStep
from tests.agent_fixtures import AgentFactory, stopped_mid_run
from tests.conftest import RunningServer, eventually, open_url_job


def order(assignment_id: int, serial: str, url: str) -> dict[str, Any]:
    return ev.AssignmentOrder(
        assignment_id=assignment_id, job_id=assignment_id, device_id=1, serial=serial, title="pushed",
        plan=[OpenUrlStep.model_validate({"url": url})], priority=0, timeout_sec=30, attempt=1,
        status=AssignmentStatus.pending).model_dump(mode="json")


def poll_with(*orders: Any) -> dict[str, Any]:
    return {"agent_id": 1, "assignments": list(orders), "paused": False, "paused_serials": [],
            "paused_job_ids": [], "poll_sec": 3}


def test_a_malformed_order_is_left_out_and_the_others_are_kept() -> None:
    good = order(5, "phone-1", "https://example.com/good")
    poll = parse(ev.AgentPoll, poll_with({"assignment_id": "five", "plan": 7}, good, {}), "poll")
    assert poll is not None
    assert [o.assignment_id for o in poll.assignments] == [5]
    assert isinstance(poll.assignments[0].plan[0], OpenUrlStep)


def test_a_message_that_does_not_fit_is_none_not_an_exception() -> None:
    assert parse(ev.AgentPoll, "garbage", "poll") is None
    assert parse(ev.AgentPoll, {**poll_with(), "poll_sec": "soon"}, "poll") is None
    assert parse(ev.JobControl, {"job_id": 3, "assignment_ids": "all"}, ev.JOB_PAUSED) is None


def test_a_step_no_model_fits_arrives_as_an_unknown_step_and_travels_unchanged() -> None:
    raw = {"type": "open_url", "url": "not a url", "duration_sec": 1}
    got = parse(ev.JobAssign, {"assignments": [{**order(6, "p", "https://example.com/"), "plan": [raw]}]}, "push")
    assert got is not None
    (step,) = got.assignments[0].plan
    assert step == UnknownStep("open_url", raw)
    assert got.model_dump(mode="json")["assignments"][0]["plan"] == [raw]


def test_a_job_assign_with_plans_once_drops_what_does_not_fit_one_by_one() -> None:
    """A slot that does not fit is dropped alone; a job that does not fit takes its slots with it."""
    good_job = {k: v for k, v in order(1, "p", "https://example.com/a").items() if k in ev.OrderJob.model_fields}
    bad_job = {**good_job, "job_id": 2, "timeout_sec": "soon"}

    def slot(assignment_id: int, job_id: int) -> dict[str, Any]:
        return {"assignment_id": assignment_id, "job_id": job_id, "device_id": assignment_id,
                "serial": f"p{assignment_id}", "attempt": 1, "status": "pending"}

    got = parse(ev.JobAssign, {"jobs": [good_job, bad_job],
                               "slots": [slot(10, 1), {**slot(11, 1), "attempt": "x"}, slot(12, 2), slot(13, 1)]},
                "push")
    assert got is not None
    assert [(o.assignment_id, o.job_id) for o in got.orders()] == [(10, 1), (13, 1)]
    assert isinstance(got.orders()[0].plan[0], OpenUrlStep)


async def _agent_id(server: RunningServer, name: str) -> int:
    agents: list[dict[str, Any]] = await server.ok("GET", "/api/agents")
    return next(int(a["id"]) for a in agents if a["name"] == name)


async def _finished(server: RunningServer, job_id: int) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        rows: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return rows[0] if rows and rows[0]["status"] in ("completed", "failed", "timed_out") else None

    row = await eventually(done, timeout=30)
    assert row is not None
    return row


async def test_malformed_messages_from_the_server_are_ignored_and_the_link_goes_on(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=1)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    realtime = server.services.realtime
    agent_id = await _agent_id(server, "pc")
    await realtime.to_agent(agent_id, ev.JOB_ASSIGN, {"assignments": [
        {"assignment_id": "nope", "plan": 7}, order(999_999, phone.adb_serial, "https://example.com/pushed")]})
    await realtime.to_agent(agent_id, ev.JOB_ASSIGN, {"assignments": "all of them"})
    await realtime.to_agent(agent_id, ev.JOB_PAUSED, {"job_id": "x"})
    await realtime.to_agent(agent_id, ev.DEVICE_PAUSE, {})
    await phone.actions.wait_for(lambda r: "https://example.com/pushed" in r.command, timeout=15)

    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": "https://example.com/after", "duration_sec": 0}]))
    assert (await _finished(server, job["id"]))["status"] == "completed"
    assert agent.link.mode == "socket" and not agent.server_paused_serials


async def test_a_step_the_agent_cannot_read_fails_only_its_assignment(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    """A server newer than the agent may send a known step with fields the agent's model does not have."""
    await agent_factory("pc", virtual=1)
    job = await server.ok("POST", "/api/jobs", open_url_job(max_retries=3, run_at="2999-01-01T00:00:00Z"))
    async with server.services.pool.acquire() as conn:
        await conn.execute("""UPDATE jobs SET run_at = now(), plan = '[{"type": "open_url",
                              "url": "https://example.com/", "colour": "blue"}]' WHERE id = $1""", job["id"])
    row = await _finished(server, job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "invalid_step")
    assert "colour" in row["error"]
    after = await server.ok("POST", "/api/jobs", open_url_job(title="next"))
    assert (await _finished(server, after["id"]))["status"] == "completed", "the phone goes on"


async def test_a_result_an_older_agent_left_in_the_outbox_is_still_sent(
        server: RunningServer, agent_factory: AgentFactory, tmp_path: Path) -> None:
    """Outbox items are the JSON objects the wire carries, as the agent before the typed models wrote them."""
    first = await agent_factory("pc", virtual=1)
    job, aid = await stopped_mid_run(server, first, "https://example.com/once")  # journaled, on its step

    box = Outbox(tmp_path / "pc" / "outbox.sqlite3")
    with box.transaction() as db:  # what the older agent wrote when the run ended: a plain dict, ISO times
        Outbox.insert(db, ev.ASSIGNMENT_FINISHED, {"results": [{
            "assignment_id": aid, "outcome": "completed", "error": None, "error_code": None, "retryable": True,
            "result": {"steps": [{"url": "https://example.com/once"}], "duration_sec": 60.0, "artifacts": []},
            "started_at": datetime.now(UTC).isoformat(), "finished_at": datetime.now(UTC).isoformat()}]})
    journal = RunJournal(box)
    journal.forget([aid])
    journal.close()
    box.close()

    again = await agent_factory("pc", virtual=1, token=first.settings.token, wait_idle=False)

    async def drained() -> bool:
        return len(again.outbox) == 0

    # Once the server took the result it is final. Before that a loaded machine may let the agent's grace run
    # out, so the server ends the run as lost for a while; the late result then wins (LATE_RESULT_RULE).
    await eventually(drained, timeout=30)
    row = await _finished(server, job["id"])
    assert row["status"] == "completed" and row["result"]["duration_sec"] == 60.0
    assert again.fleet is not None
    assert not any("example.com/once" in c for c in again.fleet.phones[0].actions.commands()), "not run twice"
