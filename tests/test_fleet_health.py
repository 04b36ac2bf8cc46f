"""Fleet health on the server: the quarantine policy (flapping, failure streaks, long illness), quarantine and
release by hand and by self-test, recovery rungs asked and reported, each phone's timeline and reliability
record, the fleet's "needs attention" list, and the policy itself. Agents are protocol clients
(``SimAgent``) against a real server and database; the agent side runs in tests/test_health_probe.py."""

from typing import Any

import asyncpg
import pytest

from phonefleet.protocol import health
from phonefleet.sim.agent import SimAgent, SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job


async def device_id(server: RunningServer, serial: str) -> int:
    (found,) = [d["id"] for d in await server.ok("GET", "/api/devices") if d["serial"] == serial]
    return int(found)


async def state_of(server: RunningServer, serial: str) -> str:
    (found,) = [d["state"] for d in await server.ok("GET", "/api/devices") if d["serial"] == serial]
    return str(found)


async def events_of(server: RunningServer, phone: int, **query: Any) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return list((await server.ok("GET", f"/api/devices/{phone}/events?{params}"))["items"])


async def set_policy(server: RunningServer, **quarantine: Any) -> dict[str, Any]:
    return dict(await server.ok("PATCH", "/api/fleet/policy", {"quarantine": quarantine}))


async def run_job(server: RunningServer, agent: SimAgent, outcomes: dict[str, tuple[str, str | None]],
                  title: str) -> int:
    """A job on every phone of ``agent``, each run ended as ``outcomes[serial]`` (outcome, error_code)."""
    before = set(agent.orders)
    job = await server.ok("POST", "/api/jobs", open_url_job(title=title, max_retries=0,
                                                            filters={"agents": [agent_name(agent)]}))
    await agent.wait_for(lambda: len(set(agent.orders) - before) == len(outcomes))
    for aid in set(agent.orders) - before:
        serial = agent.orders[aid]["serial"]
        outcome, code = outcomes[serial]
        await agent.start([aid])
        await agent.finish([aid], outcome, error_code=code, error=code)
    return int(job["id"])


def agent_name(agent: SimAgent) -> str:
    assert agent.hello_ack is not None
    return str(agent.hello_ack["agent_name"])


# ------------------------------------------------------------------------------------------------- flapping


async def test_a_flapping_phone_is_quarantined_within_the_policy_and_gets_no_more_work(server: RunningServer) -> None:
    dashboard = SimDashboard(server.url, ADMIN)
    await dashboard.connect()
    try:
        agent = await server.sim_agent("rack-flap", 2)
        flappy, steady = agent.serials
        phone = await device_id(server, flappy)
        unplugged = [{**agent.devices()[0], "online": False}]
        for n in range(4):
            await agent.report(unplugged)
            if n < 3:
                assert await state_of(server, flappy) == "offline"
                await agent.report(agent.devices()[:1])
        await eventually(lambda: _is(server, flappy, "quarantined"))
        detail = await server.ok("GET", f"/api/devices/{phone}")
        assert detail["quarantine_reason"] == "flapping: 4 disconnects in 10 min"
        assert detail["quarantined_by"] == "policy"
        assert detail["reliability"]["disconnects_24h"] == 4

        await agent.report(agent.devices()[:1])  # plugged back in: still quarantined
        assert await state_of(server, flappy) == "quarantined"
        job = await server.ok("POST", "/api/jobs", open_url_job(title="after the flapping"))
        assert job["target_count"] == 1, "only the steady phone counts"
        await agent.wait_for(lambda: any(o["job_id"] == job["id"] for o in agent.orders.values()))
        assert {o["serial"] for o in agent.orders.values() if o["job_id"] == job["id"]} == {steady}

        kinds = [e["kind"] for e in await events_of(server, phone)]
        assert kinds[0] == "connected" and kinds.count("disconnected") == 4 and "quarantined" in kinds
        await dashboard.wait_for(lambda: any(e["kind"] == "quarantined" and e["device_id"] == phone
                                             for e in dashboard.events(health.DEVICE_EVENT)))
        await dashboard.wait_for(lambda: any(d.get("id") == phone and d.get("state") == "quarantined"
                                             for u in dashboard.events("device:update") for d in _devices(u)))
    finally:
        await dashboard.disconnect()


def _devices(update: Any) -> list[dict[str, Any]]:
    return list(update.get("devices", [])) if isinstance(update, dict) else list(update)


async def _is(server: RunningServer, serial: str, state: str) -> bool:
    return await state_of(server, serial) == state


async def test_an_agent_going_away_is_not_its_phones_flapping(server_factory: Any) -> None:
    server = await server_factory(agent_grace_sec=0.5)
    await set_policy(server, flap_disconnects=2)
    agent = await server.sim_agent("rack-away", 1)
    phone = await device_id(server, agent.serials[0])
    for _ in range(2):
        await agent.disconnect()
        await eventually(lambda: _is(server, agent.serials[0], "offline"), timeout=15)
        await agent.connect()
        await eventually(lambda: _is(server, agent.serials[0], "idle"))
    events = await events_of(server, phone, kind="disconnected")
    assert len(events) == 2 and {e["actor"] for e in events} == {"server"}
    assert await state_of(server, agent.serials[0]) == "idle"


# ------------------------------------------------------------------------------------------- failure streaks


async def test_three_phone_failures_in_a_row_quarantine_the_phone_and_a_success_breaks_the_streak(
        server: RunningServer) -> None:
    agent = await server.sim_agent("rack-streak", 3)
    bad, good1, good2 = agent.serials
    fine = ("completed", None)
    await run_job(server, agent, {bad: ("failed", "device_lost"), good1: fine, good2: fine}, "one")
    await run_job(server, agent, {bad: ("failed", "adb_error"), good1: fine, good2: fine}, "two")
    await run_job(server, agent, {bad: fine, good1: fine, good2: fine}, "a success in between")
    await run_job(server, agent, {bad: ("timed_out", "timeout"), good1: fine, good2: fine}, "three")
    await run_job(server, agent, {bad: ("failed", "step_failed"), good1: fine, good2: fine}, "not the phone's")
    await run_job(server, agent, {bad: ("failed", "device_lost"), good1: fine, good2: fine}, "four")
    phone = await device_id(server, bad)
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["state"] == "idle" and detail["reliability"]["failure_streak"] == 2
    await run_job(server, agent, {bad: ("failed", "adb_error"), good1: fine, good2: fine}, "five")

    await eventually(lambda: _is(server, bad, "quarantined"))
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["quarantine_reason"] == "3 phone failures in a row (adb_error, device_lost, timeout)"
    record = detail["reliability"]
    assert record["runs"] == 7 and record["success_rate_50"] == pytest.approx(1 / 7, abs=1e-4)
    assert record["failures_by_code"]["device_lost"] == {"phone": 2, "job": 0, "none": 0}
    assert record["failures_by_code"]["step_failed"] == {"phone": 0, "job": 0, "none": 1}
    assert record["last_failure"]["error_code"] == "adb_error" and record["last_failure"]["blame"] == "phone"
    for serial in (good1, good2):
        assert await state_of(server, serial) == "idle"


async def test_a_phone_that_fails_what_works_elsewhere_is_quarantined_as_an_outlier(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-outlier", 3)
    odd, good1, good2 = agent.serials
    fine = ("completed", None)
    for n in range(5):
        await run_job(server, agent, {odd: ("failed", "step_failed"), good1: fine, good2: fine}, f"works {n}")
    phone = await device_id(server, odd)
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["state"] == "idle", "step failures are not the phone's, until they stand out"
    assert (detail["reliability"]["failure_streak"], detail["reliability"]["outlier_streak"]) == (0, 5)
    await run_job(server, agent, {odd: ("failed", "step_failed"), good1: fine, good2: fine}, "works 5")
    await eventually(lambda: _is(server, odd, "quarantined"))
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["quarantine_reason"] == "6 failures in a row of jobs that succeed on other phones (step_failed)"


async def test_a_job_whose_plan_fails_on_every_phone_quarantines_no_phone(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-badplan", 3)
    for n in range(4):
        outcome = ("timed_out", "timeout") if n % 2 else ("failed", "device_lost")
        await run_job(server, agent, dict.fromkeys(agent.serials, outcome), f"broken plan {n}")
    for serial in agent.serials:
        phone = await device_id(server, serial)
        detail = await server.ok("GET", f"/api/devices/{phone}")
        assert detail["state"] == "idle", detail
        assert detail["reliability"]["failure_streak"] == 0
        blamed = detail["reliability"]["failures_by_code"]
        assert blamed["device_lost"]["job"] == 2 and blamed["timeout"]["job"] == 2


# ------------------------------------------------------------------------------------------------ illness


async def test_a_phone_unhealthy_for_longer_than_the_policy_allows_is_quarantined(server: RunningServer) -> None:
    await set_policy(server, unhealthy_max_sec=1)
    agent = await server.sim_agent("rack-ill", 2)
    hot = agent.serials[0]
    reason = "battery 52.0 °C above 45.0 °C"
    await agent.report([{**agent.devices()[0], "healthy": False, "health_reason": reason,
                         "battery_temp_c": 52.0, "broken": [reason]}])
    assert await state_of(server, hot) == "unhealthy"
    report = await server.ok("GET", "/api/fleet/health")
    (item,) = [i for i in report["attention"] if i["serial"] == hot]
    assert (item["problem"], item["reason"]) == ("hot", reason)

    await eventually(lambda: _is(server, hot, "quarantined"), timeout=15)
    phone = await device_id(server, hot)
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["quarantine_reason"] == f"unhealthy for more than 0 min: {reason}"
    assert detail["health"]["battery_temp_c"] == 52.0 and detail["broken"] == [reason]
    report = await server.ok("GET", "/api/fleet/health")
    assert report["devices"]["quarantined"] == 1 and report["devices"]["idle"] == 1
    assert [(i["serial"], i["problem"]) for i in report["attention"]] == [(hot, "quarantined")]


# --------------------------------------------------------------------------------- by hand, and self-test


async def test_quarantine_by_hand_hands_work_back_and_release_lets_the_phone_work_again(
        server: RunningServer) -> None:
    agent = await server.sim_agent("rack-hand", 1, auto_ack=False)
    (serial,) = agent.serials
    phone = await device_id(server, serial)
    job = await server.ok("POST", "/api/jobs", open_url_job(title="waits for the phone"))
    await agent.wait_for(lambda: len(agent.orders) == 1)

    status, body = await server.request("POST", f"/api/devices/{phone}/quarantine", json={})
    assert status == 422 and body["error"]["details"][0]["field"] == "reason"
    detail = await server.ok("POST", f"/api/devices/{phone}/quarantine", {"reason": "cracked screen"}, expect=200)
    assert (detail["state"], detail["quarantine_reason"], detail["quarantined_by"]) == (
        "quarantined", "cracked screen", "env")
    rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
    assert [r["error_code"] for r in rows] == ["handed_back"]
    status, body = await server.request("POST", f"/api/devices/{phone}/quarantine", json={"reason": "again"})
    assert status == 409 and "cracked screen" in body["error"]["message"]

    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["assigned_count"] == 0, "its slot is open again"
    assert (await server.ok("POST", "/api/jobs", open_url_job(title="no phone")))["target_count"] == 0

    detail = await server.ok("POST", f"/api/devices/{phone}/release", expect=200)
    assert detail["state"] == "idle" and detail["quarantine_reason"] is None
    after = await server.ok("POST", "/api/jobs", open_url_job(title="after the release"))
    assert after["target_count"] == 1
    await agent.wait_for(lambda: any(o["job_id"] == after["id"] for o in agent.orders.values()))
    status, _ = await server.request("POST", f"/api/devices/{phone}/release")
    assert status == 409
    status, _ = await server.request("POST", "/api/devices/999999/release")
    assert status == 404
    kinds = [(e["kind"], e["actor"], e["reason"]) for e in await events_of(server, phone)][:2]
    assert kinds == [("released", "env", "released by an operator"), ("quarantined", "env", "cracked screen")]


async def test_a_quarantined_phone_is_released_by_a_passed_self_test_after_its_cool_down(
        server: RunningServer) -> None:
    await set_policy(server, cooldown_sec=0, selftest_every_sec=1)
    agent = await server.sim_agent("rack-selftest", 1)
    (serial,) = agent.serials
    phone = await device_id(server, serial)
    await server.ok("POST", f"/api/devices/{phone}/quarantine", {"reason": "testing"}, expect=200)
    await agent.wait_for(lambda: len(agent.events(health.DEVICE_SELFTEST)) >= 1, timeout=10)
    assert agent.events(health.DEVICE_SELFTEST)[0] == {"serial": serial}
    failed = {"serial": serial, "passed": False, "checks": [
        {"name": "boot_completed", "passed": True}, {"name": "screenshot", "passed": False, "detail": "all black"}]}
    ack = await agent.call(health.DEVICE_SELFTEST_RESULT, failed)
    assert ack == {"ok": True, "data": {"device_id": phone, "released": False}}
    assert await state_of(server, serial) == "quarantined"
    await agent.wait_for(lambda: len(agent.events(health.DEVICE_SELFTEST)) >= 2, timeout=10)  # asked again
    ack = await agent.call(health.DEVICE_SELFTEST_RESULT, {**failed, "passed": True, "checks": []})
    assert ack["data"]["released"] is True
    assert await state_of(server, serial) == "idle"
    events = await events_of(server, phone)
    assert [(e["kind"], e["reason"]) for e in events[:3]] == [
        ("released", "the self-test passed after the cool-down"), ("selftest", "passed"),
        ("selftest", "failed: screenshot")]


# ---------------------------------------------------------------------------------------------- recovery


async def test_an_operator_runs_a_rung_and_the_agent_reports_it_in_the_timeline(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-recover", 1)
    (serial,) = agent.serials
    phone = await device_id(server, serial)
    status, body = await server.request("POST", f"/api/devices/{phone}/recover", json={"rung": "kick"})
    assert status == 422 and body["error"]["details"][0]["field"] == "rung"
    accepted = await server.ok("POST", f"/api/devices/{phone}/recover", {"rung": "reboot"}, expect=202)
    assert accepted == {"device_id": phone, "serial": serial, "rung": "reboot", "sent": True}
    await agent.wait_for(lambda: bool(agent.events(health.DEVICE_RECOVER)))
    assert agent.events(health.DEVICE_RECOVER) == [{"serial": serial, "rung": "reboot", "by": "env"}]

    ack = await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "started",
                                                    "by": "env"})
    assert ack["ok"], ack
    assert await state_of(server, serial) == "recovering"
    status, _ = await server.request("POST", f"/api/devices/{phone}/recover", json={"rung": "reconnect"})
    assert status == 409
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "ended",
                                              "outcome": "healed", "detail": "booted in 21 s", "by": "env"})
    assert await state_of(server, serial) == "idle"
    events = await events_of(server, phone, kind="recovery_started&kind=recovery_ended")
    assert [(e["kind"], e["data"]) for e in events] == [
        ("recovery_ended", {"rung": "reboot", "outcome": "healed"}), ("recovery_started", {"rung": "reboot"})]
    metrics = await server.session.get(server.url + "/metrics")
    text = await metrics.text()
    assert 'phonefleet_recovery_attempts_total{outcome="healed",rung="reboot"} 1.0' in text


async def test_a_refused_rung_leaves_the_running_one_and_a_rungs_disconnects_are_not_flapping(
        server: RunningServer) -> None:
    await set_policy(server, flap_disconnects=2)
    agent = await server.sim_agent("rack-rungs", 1)
    (serial,) = agent.serials
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "started"})
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reconnect", "phase": "ended",
                                              "outcome": "skipped", "detail": "a rung is already running"})
    assert await state_of(server, serial) == "recovering"
    for _ in range(3):  # the reboot takes it off the adb server and back, more than once
        await agent.report([{**agent.devices()[0], "online": False}])
        await agent.report(agent.devices())
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "ended",
                                              "outcome": "healed"})
    assert await state_of(server, serial) == "idle", "not quarantined as flapping"
    disconnects = await events_of(server, await device_id(server, serial), kind="disconnected")
    assert [e["data"] for e in disconnects] == [{"recovering": "reboot"}] * 3


async def test_a_ladder_that_gives_up_quarantines_its_phone_and_an_agent_restart_ends_a_rung(
        server: RunningServer) -> None:
    agent = await server.sim_agent("rack-giveup", 2)
    stuck, looping = agent.serials
    await agent.call(health.DEVICE_RECOVERY, {"serial": stuck, "rung": "usb_reset", "phase": "started"})
    assert await state_of(server, stuck) == "recovering"
    await agent.hello()  # the agent started again: no rung of its runs any more
    assert await state_of(server, stuck) == "idle"
    ended = await events_of(server, await device_id(server, stuck), kind="recovery_ended")
    assert ended[0]["data"] == {"rung": "usb_reset", "outcome": "abandoned"}

    ack = await agent.call(health.DEVICE_RECOVERY, {
        "serial": looping, "rung": "reboot", "phase": "ended", "outcome": "failed",
        "detail": "reboot budget spent (3 in 24 h)", "give_up": True})
    assert ack["ok"], ack
    phone = await device_id(server, looping)
    detail = await server.ok("GET", f"/api/devices/{phone}")
    assert detail["state"] == "quarantined"
    assert detail["quarantine_reason"] == "recovery failed: reboot failed: reboot budget spent (3 in 24 h)"
    ack = await agent.call(health.DEVICE_RECOVERY, {"serial": "nobody", "rung": "reboot", "phase": "started"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"


# ------------------------------------------------------------------------------------------ the policy


async def test_the_policy_reads_defaults_changes_by_field_refuses_bad_values_and_reaches_agents(
        server_factory: Any) -> None:
    server = await server_factory(health_max_probe_sec=5.0)  # the default (the tests' servers relax it)
    agent = await server.sim_agent("rack-policy", 1)
    policy = await server.ok("GET", "/api/fleet/policy")
    assert policy["thresholds"] == {"min_battery": 15, "max_battery_temp_c": 45.0, "min_data_free_mb": 500,
                                    "max_probe_sec": 5.0}
    assert policy["quarantine"]["consecutive_failures"] == 3 and policy["quarantine"]["cooldown_sec"] == 900
    changed = await server.ok("PATCH", "/api/fleet/policy", {"thresholds": {"max_battery_temp_c": 40.5}})
    assert changed["thresholds"]["max_battery_temp_c"] == 40.5 and changed["thresholds"]["min_battery"] == 15
    assert changed["changed_by"] == "env"
    await agent.wait_for(lambda: bool(agent.events(health.FLEET_THRESHOLDS)))
    assert agent.events(health.FLEET_THRESHOLDS)[-1]["max_battery_temp_c"] == 40.5

    for body, field in [({"thresholds": {"min_battery": 101}}, "thresholds.min_battery"),
                        ({"quarantine": {"consecutive_failures": 0}}, "quarantine.consecutive_failures"),
                        ({"quarantine": {"typo": 1}}, "quarantine.typo")]:
        status, error = await server.request("PATCH", "/api/fleet/policy", json=body)
        assert status == 422 and error["error"]["details"][0]["field"] == field, error
    assert (await server.ok("GET", "/api/fleet/policy"))["thresholds"]["max_battery_temp_c"] == 40.5


async def test_the_timeline_pages_and_is_append_only(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-pages", 1)
    phone = await device_id(server, agent.serials[0])
    for _ in range(3):
        await agent.report([{**agent.devices()[0], "online": False}])
        await agent.report(agent.devices())
    first = await server.ok("GET", f"/api/devices/{phone}/events?limit=4")
    assert len(first["items"]) == 4 and first["next_before"] == first["items"][-1]["id"]
    rest = await server.ok("GET", f"/api/devices/{phone}/events?limit=4&before={first['next_before']}")
    assert [e["kind"] for e in rest["items"]] == ["connected", "disconnected", "connected"]
    assert rest["next_before"] is None
    status, body = await server.request("GET", f"/api/devices/{phone}/events?kind=exploded")
    assert status == 422 and body["error"]["details"][0]["field"] == "kind.0"

    async with server.services.pool.acquire() as conn:
        for sql in ("UPDATE device_events SET reason = 'rewritten'", "DELETE FROM device_events"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql)


async def test_a_phones_runs_are_listed_newest_first_by_device_id(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-runs", 2)
    mine, other = agent.serials
    fine = ("completed", None)
    first = await run_job(server, agent, {mine: fine, other: fine}, "first")
    second = await run_job(server, agent, {mine: ("failed", "device_lost"), other: fine}, "second")
    phone = await device_id(server, mine)
    runs = await server.ok("GET", f"/api/assignments?device_id={phone}")
    assert runs["total"] == 2
    assert [(r["job_id"], r["serial"], r["status"], r["error_code"]) for r in runs["items"]] == [
        (second, mine, "failed", "device_lost"), (first, mine, "completed", None)]
    completed = await server.ok("GET", f"/api/assignments?device_id={phone}&status=completed")
    assert [r["job_id"] for r in completed["items"]] == [first]
    assert (await server.ok("GET", "/api/assignments?device_id=999999"))["items"] == []


async def test_metrics_carry_each_phones_health_and_success(server: RunningServer) -> None:
    agent = await server.sim_agent("rack-metrics", 2)
    hot, fine = agent.serials
    reason = "battery 52.0 °C above 45.0 °C"
    await agent.report([{**agent.devices()[0], "healthy": False, "health_reason": reason, "battery_temp_c": 52.0,
                         "broken": [reason]}])
    await run_job(server, agent, {fine: ("completed", None)}, "counted")
    async with server.session.get(server.url + "/metrics") as r:
        text = await r.text()
    assert f'phonefleet_device_battery_celsius{{agent="rack-metrics",serial="{hot}"}} 52.0' in text
    assert f'phonefleet_device_available{{agent="rack-metrics",serial="{hot}"}} 0.0' in text
    assert f'phonefleet_device_available{{agent="rack-metrics",serial="{fine}"}} 1.0' in text
    assert f'phonefleet_device_success_ratio{{agent="rack-metrics",serial="{fine}"}} 1.0' in text
    assert f'phonefleet_device_battery_percent{{agent="rack-metrics",serial="{fine}"}} 90.0' in text
    assert 'phonefleet_devices{state="unhealthy"} 1.0' in text
