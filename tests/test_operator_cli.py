"""The operator's tools against a real server: the typed client, and the ``phonefleet`` CLI run in-process.

The CLI runs its own event loop (``asyncio.run``), so it is invoked in a worker thread while the server
keeps serving on the test's loop.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner, Result

from phonefleet.cli import app
from phonefleet.client import ApiError, PhonefleetClient, ServerUnreachable
from phonefleet.protocol.health import DeviceDetail, DeviceEventList
from phonefleet.protocol.models import (
    Agent,
    AssignmentList,
    Device,
    Job,
    JobBatch,
    JobBatchResult,
    JobCreate,
    JobList,
    JobPatch,
    RequeueResult,
    Schedule,
    ScheduleCreate,
    ScheduleList,
    SchedulePatch,
    SchedulerStatus,
    Stats,
)
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, RunningServer, eventually, free_port, open_url_job

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[PhonefleetClient]:
    async with PhonefleetClient(server.url, ADMIN, timeout=10) as c:
        yield c


@pytest.fixture
def cli(server: RunningServer, tmp_path: Path) -> Cli:
    """Run ``phonefleet ARGS`` with the server's URL and the admin token in the environment, nothing else:
    no user config file, no local data dir. Keyword arguments override environment variables (None unsets)."""
    runner = CliRunner()
    base: dict[str, str | None] = {
        "PHONEFLEET_URL": server.url, "PHONEFLEET_TOKEN": ADMIN, "PHONEFLEET_TIMEOUT": None,
        "PHONEFLEET_CLI_CONFIG": str(tmp_path / "no-such-cli.toml"),
        "PHONEFLEET_DATA_DIR": str(tmp_path / "no-such-data-dir"),
    }

    async def invoke(*args: str, **env: str | None) -> Result:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env={**base, **env})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        return result

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout


async def one_phone_failed(server: RunningServer, client: PhonefleetClient) -> tuple[Job, SimAgent]:
    """A job whose only phone failed for good (no retries), so it has a dead letter."""
    agent = await server.sim_agent("pc-fail", 1)
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="doomed", max_retries=0)))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    ids = sorted(agent.orders)
    await agent.start(ids)
    await agent.finish(ids, outcome="failed", error="adb: device offline", error_code="adb_offline",
                       retryable=False)

    async def failed() -> bool:
        return (await client.get_job(job.id)).failed_count == 1

    await eventually(failed)
    return job, agent


# ---------------------------------------------------------------------- the client


async def test_client_creates_lists_and_gets_jobs(client: PhonefleetClient) -> None:
    created = await client.create_job(JobCreate.model_validate(open_url_job(title="client smoke", priority=7)))
    assert isinstance(created, Job) and created.title == "client smoke" and created.priority == 7
    await client.create_job(JobCreate.model_validate(open_url_job(title="another")))
    page = await client.list_jobs(search="smoke")
    assert isinstance(page, JobList)
    assert [j.id for j in page.items] == [created.id] and page.total == 1
    assert (await client.list_jobs(limit=1)).total == 2
    assert (await client.get_job(created.id)).title == "client smoke"


async def test_client_pauses_resumes_and_cancels_a_job(server: RunningServer, client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 2)
    job = await client.create_job(JobCreate.model_validate(open_url_job()))
    assert job.status == "active"
    assert (await client.pause_job(job.id)).status == "paused"
    assert (await client.list_jobs(status=["paused"])).total == 1
    assert (await client.resume_job(job.id)).status == "active"
    assert (await client.cancel_job(job.id)).status == "cancelled"
    await client.delete_job(job.id)
    with pytest.raises(ApiError) as missing:
        await client.get_job(job.id)
    assert missing.value.status == 404


async def test_client_patch_sends_only_the_fields_set(client: PhonefleetClient) -> None:
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="keep me", max_parallel=3)))
    patched = await client.update_job(job.id, JobPatch(priority=9))
    assert (patched.title, patched.priority, patched.max_parallel) == ("keep me", 9, 3)
    unlimited = await client.update_job(job.id, JobPatch(max_parallel=None))
    assert unlimited.max_parallel is None and unlimited.priority == 9


async def test_client_raises_api_error_with_code_message_and_field(client: PhonefleetClient) -> None:
    with pytest.raises(ApiError) as refused:
        await client.create_job(JobCreate.model_validate(open_url_job(depends_on=[999_999])))
    assert refused.value.status == 422 and refused.value.code == "validation_error"
    assert refused.value.fields == ["depends_on"]
    assert "999999" in refused.value.message
    with pytest.raises(ApiError) as missing:
        await client.get_job(999_999)
    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_client_wrong_token_is_an_api_error(server: RunningServer) -> None:
    async with PhonefleetClient(server.url, "pfadm_wrong") as c:
        with pytest.raises(ApiError) as refused:
            await c.list_jobs()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


async def test_client_unreachable_server_raises_server_unreachable() -> None:
    async with PhonefleetClient(f"http://127.0.0.1:{free_port()}", ADMIN, timeout=5) as c:
        with pytest.raises(ServerUnreachable):
            await c.health()


async def test_client_lists_devices_and_agents_and_pauses_a_phone(server: RunningServer,
                                                                   client: PhonefleetClient) -> None:
    await server.sim_agent("rack-1", 2)

    async def two_phones() -> list[Device]:
        devices = await client.list_devices()
        return devices if len(devices) == 2 else []

    devices = await eventually(two_phones)
    assert sorted(d.serial for d in devices) == ["rack-1-000", "rack-1-001"]
    agents = await client.list_agents()
    assert [a.name for a in agents] == ["rack-1"] and isinstance(agents[0], Agent)
    paused = await client.pause_device(devices[0].id)
    assert paused.state == "paused" and paused.paused_by == "server"
    assert (await client.resume_device(devices[0].id)).paused_by is None


async def test_client_creates_an_agent_with_its_token(client: PhonefleetClient) -> None:
    created = await client.create_agent("bench-3")
    assert created.agent.name == "bench-3" and created.token
    with pytest.raises(ApiError) as exists:
        await client.create_agent("bench-3")
    assert exists.value.status == 409


async def test_client_lists_dead_letters(server: RunningServer, client: PhonefleetClient) -> None:
    job, _agent = await one_phone_failed(server, client)
    failed = await client.list_assignments(status="failed")
    assert isinstance(failed, AssignmentList)
    assert [(a.job_id, a.error_code) for a in failed.items] == [(job.id, "adb_offline")]
    assert (await client.job_assignments(job.id, status="failed")).total == 1


async def test_client_stats_and_health(client: PhonefleetClient) -> None:
    await client.create_job(JobCreate.model_validate(open_url_job()))
    stats = await client.stats(window_sec=3600)
    assert isinstance(stats, Stats) and stats.window_sec == 3600
    assert sum(stats.jobs.values()) == 1
    assert (await client.health()).status == "ok"


async def test_client_requeues_failed_slots(server: RunningServer, client: PhonefleetClient) -> None:
    job, agent = await one_phone_failed(server, client)
    result = await client.requeue_job(job.id, "failed")
    assert isinstance(result, RequeueResult) and result.requeued == 1 and result.job.id == job.id
    await agent.wait_for(lambda: len(agent.orders) == 2)


async def test_client_batch_pauses_several_jobs(server: RunningServer, client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 1)
    a = await client.create_job(JobCreate.model_validate(open_url_job(title="a")))
    b = await client.create_job(JobCreate.model_validate(open_url_job(title="b")))
    result = await client.batch(JobBatch.model_validate({"action": "pause", "ids": [a.id, b.id, 999_999]}))
    assert isinstance(result, JobBatchResult)
    assert sorted(result.changed) == [a.id, b.id]
    assert [(f.id, f.code) for f in result.failed] == [(999_999, "not_found")]
    assert (await client.list_jobs(status=["paused"])).total == 2


async def test_client_sets_and_clears_an_agents_running_limit(server: RunningServer,
                                                              client: PhonefleetClient) -> None:
    agent = await server.sim_agent("hub", 4)
    assert agent.agent_id is not None
    limited = await client.set_agent_max_running(agent.agent_id, 2)
    assert limited.max_running == 2
    assert (await client.set_agent_max_running(agent.agent_id, None)).max_running is None


async def test_client_schedule_lifecycle(client: PhonefleetClient) -> None:
    body = ScheduleCreate.model_validate({"name": "hourly smoke", "interval_sec": 3600,
                                          "template": open_url_job(title="from schedule")})
    schedule = await client.create_schedule(body)
    assert isinstance(schedule, Schedule) and schedule.enabled and schedule.next_run_at is not None
    listed = await client.list_schedules()
    assert isinstance(listed, ScheduleList) and [s.id for s in listed.items] == [schedule.id]
    disabled = await client.update_schedule(schedule.id, SchedulePatch(enabled=False))
    assert not disabled.enabled and disabled.name == "hourly smoke"
    job = await client.run_schedule(schedule.id)
    assert job.title == "from schedule" and job.schedule_id == schedule.id
    assert (await client.get_schedule(schedule.id)).last_job_id == job.id
    assert [j.id for j in (await client.schedule_jobs(schedule.id)).items] == [job.id]
    assert (await client.list_schedules(enabled=True)).total == 0
    await client.delete_schedule(schedule.id)
    with pytest.raises(ApiError) as gone:
        await client.get_schedule(schedule.id)
    assert gone.value.status == 404


async def test_client_stops_and_starts_the_scheduler(client: PhonefleetClient) -> None:
    assert (await client.scheduler_status()).running
    stopped = await client.stop_scheduler()
    assert isinstance(stopped, SchedulerStatus) and not stopped.running
    assert not (await client.scheduler_status()).running
    assert (await client.start_scheduler()).running


# ---------------------------------------------------------------------- the CLI: jobs


async def test_cli_json_create_parses_back_into_the_job(cli: Cli, client: PhonefleetClient) -> None:
    out = ok(await cli("--json", "jobs", "create", "--title", "cli job", "--url", "https://example.com/a",
                       "--duration", "2", "--count", "3", "--priority", "5", "--max-retries", "2"))
    job = Job.model_validate_json(out)
    assert (job.title, job.target_type, job.target_value, job.priority, job.max_retries) == (
        "cli job", "device_count", 3, 5, 2)
    assert json.loads(out)["plan"] == [{"type": "open_url", "url": "https://example.com/a", "duration_sec": 2.0}]
    assert (await client.get_job(job.id)).title == "cli job"


async def test_cli_jobs_list_table_shows_the_titles(cli: Cli, client: PhonefleetClient) -> None:
    await client.create_job(JobCreate.model_validate(open_url_job(title="nightly smoke")))
    await client.create_job(JobCreate.model_validate(open_url_job(title="weekly soak", priority=3)))
    out = ok(await cli("jobs", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PRIO", "TARGET", "DONE", "FAILED", "RUNNING", "CREATED", "TITLE"]
    assert any(line.endswith("nightly smoke") for line in lines)
    assert "weekly soak" in out
    searched = JobList.model_validate_json(ok(await cli("--json", "jobs", "list", "--search", "weekly")))
    assert [j.title for j in searched.items] == ["weekly soak"]


async def test_cli_jobs_create_from_a_file_and_a_plan_file(cli: Cli, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(open_url_job(title="from file", target_type="percentage", target_value=50)))
    job = Job.model_validate_json(ok(await cli("--json", "jobs", "create", "--file", str(job_file))))
    assert (job.title, job.target_type, job.target_value) == ("from file", "percentage", 50)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps([{"type": "wait", "duration_sec": 1}, {"type": "screenshot"}]))
    out = ok(await cli("jobs", "create", "--title", "two steps", "--plan-file", str(plan_file),
                       "--depends-on", str(job.id)))
    assert "two steps" in out
    both = await cli("jobs", "create", "--file", str(job_file), "--title", "x")
    assert both.exit_code == 2 and "--file" in both.stderr


async def test_cli_jobs_show_counts_assignments(server: RunningServer, cli: Cli,
                                                client: PhonefleetClient) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="shown")))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    out = ok(await cli("jobs", "show", str(job.id)))
    assert out.startswith(f"job {job.id}\n") and "shown" in out
    assert "assignments" in out and ("pending=2" in out or "delivered=2" in out)
    assert Job.model_validate_json(ok(await cli("--json", "jobs", "show", str(job.id)))).id == job.id


async def test_cli_pauses_resumes_and_cancels_one_job(server: RunningServer, cli: Cli,
                                                      client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 1)
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="steered")))
    assert ok(await cli("jobs", "pause", str(job.id))).strip() == f"job {job.id} paused: steered"
    assert Job.model_validate_json(ok(await cli("--json", "jobs", "resume", str(job.id)))).status == "active"
    ok(await cli("jobs", "cancel", str(job.id)))
    assert (await client.get_job(job.id)).status == "cancelled"


async def test_cli_404_exits_1_with_the_servers_message(cli: Cli) -> None:
    result = await cli("jobs", "show", "999999")
    assert result.exit_code == 1
    assert "job 999999 not found" in result.stderr and "404" in result.stderr
    assert result.stdout == ""


async def test_cli_422_exits_1_naming_the_field(cli: Cli) -> None:
    result = await cli("jobs", "create", "--title", "t", "--url", "https://example.com", "--depends-on", "999999")
    assert result.exit_code == 1
    assert "depends_on" in result.stderr and "validation_error" in result.stderr


async def test_cli_body_failing_the_contract_locally_is_a_usage_error(cli: Cli) -> None:
    result = await cli("jobs", "create", "--title", "t", "--url", "https://example.com", "--percent", "300")
    assert result.exit_code == 2 and "target_value" in result.stderr
    missing = await cli("jobs", "create", "--title", "no plan")
    assert missing.exit_code == 2 and "--url or --plan-file" in missing.stderr
    bad_url = await cli("jobs", "create", "--url", "example.com")  # no title to make from it: the URL is named
    assert bad_url.exit_code == 2 and "plan.0.open_url.url" in bad_url.stderr


async def test_cli_unreachable_server_is_a_clear_error(cli: Cli) -> None:
    result = await cli("jobs", "list", PHONEFLEET_URL=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and "cannot reach" in result.stderr


async def test_cli_lists_dead_letters(server: RunningServer, cli: Cli, client: PhonefleetClient) -> None:
    job, _agent = await one_phone_failed(server, client)
    out = ok(await cli("jobs", "failed"))
    assert "adb_offline" in out and "adb: device offline" in out and "pc-fail-000" in out
    page = AssignmentList.model_validate_json(ok(await cli("--json", "jobs", "failed")))
    assert [a.job_id for a in page.items] == [job.id]


async def test_cli_requeues_a_jobs_failed_slots(server: RunningServer, cli: Cli,
                                               client: PhonefleetClient) -> None:
    job, agent = await one_phone_failed(server, client)
    result = RequeueResult.model_validate_json(ok(await cli("--json", "jobs", "requeue", str(job.id))))
    assert result.requeued == 1
    await agent.wait_for(lambda: len(agent.orders) == 2)


async def test_cli_steers_several_jobs_in_one_batch(server: RunningServer, cli: Cli,
                                                    client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 1)
    a = await client.create_job(JobCreate.model_validate(open_url_job(title="a")))
    b = await client.create_job(JobCreate.model_validate(open_url_job(title="b")))
    out = ok(await cli("--json", "jobs", "pause", str(a.id), str(b.id)))
    assert sorted(JobBatchResult.model_validate_json(out).changed) == [a.id, b.id]
    partly = await cli("jobs", "resume", str(a.id), "999999")
    assert partly.exit_code == 1 and "999999" in partly.stderr
    assert (await client.get_job(a.id)).status == "active"


# ---------------------------------------------------------------------- the CLI: token and URL


async def test_cli_token_from_the_environment(cli: Cli) -> None:
    assert ok(await cli("jobs", "list")).strip() == "no jobs"
    refused = await cli("jobs", "list", PHONEFLEET_TOKEN="pfadm_wrong")
    assert refused.exit_code == 1 and "unknown token" in refused.stderr


async def test_cli_token_and_url_from_the_config_file(server: RunningServer, cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'url = "{server.url}"\ntoken = "{ADMIN}"\n')
    out = ok(await cli("devices", "list", PHONEFLEET_URL=None, PHONEFLEET_TOKEN=None,
                       PHONEFLEET_CLI_CONFIG=str(config)))
    assert out.strip() == "no phones"


async def test_cli_token_from_the_servers_data_dir(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_token").write_text(ADMIN + "\n")
    assert ok(await cli("agents", "list", PHONEFLEET_TOKEN=None, PHONEFLEET_DATA_DIR=str(data))).strip() == \
        "no agents"


async def test_cli_without_a_token_says_how_to_give_one(cli: Cli) -> None:
    result = await cli("jobs", "list", PHONEFLEET_TOKEN=None)
    assert result.exit_code == 1
    assert "401" in result.stderr and "PHONEFLEET_TOKEN" in result.stderr


# ---------------------------------------------------------------------- the CLI: fleet, schedules, scheduler


async def test_cli_lists_devices_and_agents(server: RunningServer, cli: Cli, client: PhonefleetClient) -> None:
    await server.sim_agent("rack-7", 2)

    async def listed() -> bool:
        return len(await client.list_devices()) == 2

    await eventually(listed)
    out = ok(await cli("devices", "list"))
    assert out.splitlines()[0].startswith("ID") and "rack-7-000" in out and "rack-7-001" in out
    devices = TypeAdapter(list[Device]).validate_json(ok(await cli("--json", "devices", "list")))
    assert {d.agent_name for d in devices} == {"rack-7"}
    agents = TypeAdapter(list[Agent]).validate_json(ok(await cli("--json", "agents", "list")))
    assert [a.device_count for a in agents] == [2]
    assert "rack-7" in ok(await cli("agents", "list"))


async def test_cli_stats(cli: Cli, client: PhonefleetClient) -> None:
    await client.create_job(JobCreate.model_validate(open_url_job()))
    stats = Stats.model_validate_json(ok(await cli("--json", "stats", "--window", "600")))
    assert stats.window_sec == 600 and sum(stats.jobs.values()) == 1
    assert "success rate" in ok(await cli("stats"))


async def test_cli_limits_an_agents_running_phones(server: RunningServer, cli: Cli) -> None:
    agent = await server.sim_agent("hub", 2)
    out = ok(await cli("agents", "limit", str(agent.agent_id), "1"))
    assert out.strip() == f"agent {agent.agent_id} hub: max running 1"
    cleared = Agent.model_validate_json(ok(await cli("--json", "agents", "limit", str(agent.agent_id), "none")))
    assert cleared.max_running is None
    bad = await cli("agents", "limit", str(agent.agent_id), "zero")
    assert bad.exit_code == 2


async def test_cli_schedule_lifecycle(cli: Cli, client: PhonefleetClient) -> None:
    out = ok(await cli("--json", "schedules", "create", "--name", "morning", "--cron", "0 6 * * 1-5",
                       "--timezone", "Europe/Berlin", "--title", "wake up", "--url", "https://example.com",
                       "--percent", "10"))
    schedule = Schedule.model_validate_json(out)
    assert (schedule.cron, schedule.timezone, schedule.template.target_value) == ("0 6 * * 1-5", "Europe/Berlin", 10)
    listed = ok(await cli("schedules", "list"))
    assert "morning" in listed and "Europe/Berlin" in listed
    job = Job.model_validate_json(ok(await cli("--json", "schedules", "run-now", str(schedule.id))))
    assert job.schedule_id == schedule.id and job.title == "wake up"
    assert "disabled" in ok(await cli("schedules", "disable", str(schedule.id)))
    assert (await client.get_schedule(schedule.id)).enabled is False
    ok(await cli("schedules", "enable", str(schedule.id)))
    assert (await client.get_schedule(schedule.id)).enabled is True
    ok(await cli("schedules", "delete", str(schedule.id)))
    assert (await client.list_schedules()).total == 0


async def test_cli_schedule_every_seconds_and_bad_cron(cli: Cli) -> None:
    out = ok(await cli("--json", "schedules", "create", "--name", "often", "--every", "900", "--title", "t",
                       "--url", "https://example.com"))
    assert Schedule.model_validate_json(out).interval_sec == 900
    bad = await cli("schedules", "create", "--name", "bad", "--cron", "every tuesday", "--title", "t",
                    "--url", "https://example.com")
    assert bad.exit_code == 2 and "cron" in bad.stderr
    missing = await cli("schedules", "run-now", "999999")
    assert missing.exit_code == 1 and "404" in missing.stderr


async def test_cli_stops_and_starts_the_scheduler(cli: Cli) -> None:
    assert "running" in ok(await cli("scheduler", "status"))
    stopped = SchedulerStatus.model_validate_json(ok(await cli("--json", "scheduler", "stop")))
    assert not stopped.running
    assert "stopped" in ok(await cli("scheduler", "status"))
    assert SchedulerStatus.model_validate_json(ok(await cli("--json", "scheduler", "start"))).running


# ---------------------------------------------------------------------- fleet health from the terminal


async def test_cli_quarantines_shows_releases_and_recovers_a_phone(server: RunningServer, cli: Cli,
                                                                   client: PhonefleetClient) -> None:
    agent = await server.sim_agent("rack-cli", 2)
    (phone, other) = sorted(await client.list_devices(), key=lambda d: d.serial)
    out = ok(await cli("devices", "quarantine", str(phone.id), "--reason", "cracked screen"))
    assert out.strip() == f"device {phone.id} {phone.serial}: quarantined (cracked screen)"
    listed = ok(await cli("devices", "list"))
    assert "WHY" in listed and "cracked screen" in listed

    shown = ok(await cli("devices", "show", str(phone.id)))
    assert "quarantined: cracked screen" in shown and "by env" in shown
    assert "thresholds" in shown and "battery >= 15%" in shown and "runs" in shown
    detail = DeviceDetail.model_validate_json(ok(await cli("--json", "devices", "show", str(phone.id))))
    assert (detail.state, detail.quarantine_reason) == ("quarantined", "cracked screen")

    health = ok(await cli("fleet", "health"))
    assert "1 idle, 1 quarantined" in health
    assert phone.serial in health and "cracked screen" in health and other.serial not in health

    ok(await cli("devices", "release", str(phone.id)))
    events = ok(await cli("devices", "events", str(phone.id)))
    lines = events.splitlines()
    assert lines[0].split() == ["ID", "WHEN", "EVENT", "BY", "REASON", "DATA"]
    assert "released" in lines[1] and "quarantined" in lines[2] and "cracked screen" in lines[2]
    page = DeviceEventList.model_validate_json(ok(await cli("--json", "devices", "events", str(phone.id),
                                                            "--limit", "1")))
    assert [e.kind for e in page.items] == ["released"] and page.next_before == page.items[0].id

    out = ok(await cli("devices", "recover", str(phone.id), "--rung", "reboot"))
    assert out.strip() == (f"device {phone.id} {phone.serial}: reboot sent to its agent; follow it with: "
                           f"phonefleet devices events {phone.id}")
    await agent.wait_for(lambda: bool(agent.events("device:recover")))
    bad = await cli("devices", "recover", str(phone.id), "--rung", "kick")
    assert bad.exit_code == 2 and "kick" in bad.stderr
    policy = ok(await cli("fleet", "policy"))
    assert "quarantine.consecutive_failures  3" in policy and "changed                          never" in policy
    missing = await cli("devices", "show", "999999")
    assert missing.exit_code == 1 and "device 999999 not found" in missing.stderr
