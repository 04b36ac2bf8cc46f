"""``phonefleet jobs create --wait`` and ``jobs watch``: a progress bar to the end, and an exit code that says how
the job ended (0 every run succeeded, 1 any failed, 2 cancelled), against a real server and a SimAgent."""

import asyncio

from typer.testing import Result

from phonefleet.client import PhonefleetClient
from phonefleet.protocol.models import Job, JobCreate
from tests.conftest import RunningServer, eventually, open_url_job
from tests.test_operator_cli import Cli, cli, client, ok

__all__ = ["cli", "client"]  # the fixtures, shared with test_operator_cli


async def test_wait_exits_0_when_every_run_succeeded(server: RunningServer, cli: Cli,
                                                     client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 2, auto_finish=True)
    result = await cli("jobs", "create", "--url", "https://example.com/a", "--duration", "60", "--count", "2",
                       "--wait")
    out = ok(result)
    assert "created job " in out and "Open example.com for 60 s" in out, out
    last = out.strip().splitlines()[-1]
    assert "2 done · 0 failed · 0 running of 2" in last and last.endswith("completed"), out
    job = (await client.list_jobs()).items[0]
    assert job.title == "Open example.com for 60 s", "--title is made from the plan when left out"


async def test_wait_exits_1_when_a_run_failed(server: RunningServer, cli: Cli, client: PhonefleetClient) -> None:
    agent = await server.sim_agent("pc", 2)
    waiting: asyncio.Future[Result] = asyncio.ensure_future(cli("jobs", "create", "--title", "half fails", "--url", "https://example.com/",
                                      "--max-retries", "0", "--wait"))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    good, bad = sorted(agent.orders)
    await agent.start([good, bad])
    await agent.finish([good])
    await agent.finish([bad], outcome="failed", error="adb: device offline", error_code="adb_offline",
                       retryable=False)
    result = await asyncio.wait_for(waiting, 30)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    last = result.stdout.strip().splitlines()[-1]
    assert "1 done · 1 failed · 0 running of 2" in last and "completed with failures" in last, result.stdout
    assert "━" in last


async def test_watch_exits_2_when_the_job_is_cancelled(server: RunningServer, cli: Cli,
                                                       client: PhonefleetClient) -> None:
    agent = await server.sim_agent("pc", 1)
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="to cancel")))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.start(sorted(agent.orders))
    watching: asyncio.Future[Result] = asyncio.ensure_future(cli("jobs", "watch", str(job.id)))

    async def running() -> bool:
        return (await client.get_job(job.id)).running_count == 1

    await eventually(running)
    await client.cancel_job(job.id)
    result = await asyncio.wait_for(watching, 30)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout.strip().splitlines()[-1].endswith("cancelled")


async def test_watch_json_prints_the_final_job_and_keeps_the_exit_code(server: RunningServer, cli: Cli,
                                                                       client: PhonefleetClient) -> None:
    await server.sim_agent("pc", 1, auto_finish=True)
    job = await client.create_job(JobCreate.model_validate(open_url_job(title="json")))
    result = await cli("--json", "jobs", "watch", str(job.id))
    assert result.exit_code == 0, result.stderr
    final = Job.model_validate_json(result.stdout)
    assert (final.id, final.status, final.completed_count) == (job.id, "completed", 1)


async def test_watch_of_an_unknown_job_exits_1(cli: Cli) -> None:
    result = await cli("jobs", "watch", "999999")
    assert result.exit_code == 1 and "not found" in result.stderr


async def test_jobs_show_prints_the_plan_and_a_progress_bar(server: RunningServer, cli: Cli,
                                                           client: PhonefleetClient) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await client.create_job(JobCreate.model_validate(open_url_job(
        title="two steps", plan=[{"type": "open_url", "url": "https://example.com/", "duration_sec": 5},
                                 {"type": "screenshot"}])))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    first = sorted(agent.orders)[0]
    await agent.start([first])
    await agent.finish([first])

    async def one_done() -> bool:
        return (await client.get_job(job.id)).completed_count == 1

    await eventually(one_done)
    out = ok(await cli("jobs", "show", str(job.id)))
    assert "1. Open example.com for 5 s" in out and "2. Take a screenshot" in out, out
    assert f"job {job.id} ━" in out and "1 done · 0 failed · 0 running of 2" in out, out
