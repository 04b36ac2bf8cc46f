"""Unit tests of the distribution policies against a real database, with no server and no sockets:
target resolution at job creation, and which phone a due retry goes to (a fresh one first; back to a phone
that ran the job only when no connected eligible fresh phone is left)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from phonefleet.protocol.enums import TargetType
from phonefleet.server.database import create_pool
from phonefleet.server.job_control import resolve_target
from phonefleet.server.store import DEFAULT_TEAM, Conn
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store.records import ClaimedRow

# ---------------------------------------------------------------- target resolution, the arithmetic


@pytest.mark.parametrize(("eligible", "expected"), [(0, 0), (1, 1), (7, 7), (1000, 1000)])
def test_all_devices_is_every_eligible_phone(eligible: int, expected: int) -> None:
    assert resolve_target(TargetType.all_devices, None, eligible) == expected


@pytest.mark.parametrize(("eligible", "percent", "expected"), [
    (10, 50, 5), (10, 25, 3), (10, 21, 3), (10, 20, 2), (7, 50, 4), (3, 1, 1), (200, 1, 2), (201, 1, 3),
    (10, 100, 10), (1, 100, 1), (0, 50, 1), (0, 100, 1),
], ids=str)
def test_percentage_rounds_up_and_is_at_least_one(eligible: int, percent: int, expected: int) -> None:
    assert resolve_target(TargetType.percentage, percent, eligible) == expected


@pytest.mark.parametrize(("eligible", "count"), [(0, 5), (3, 5), (10, 5), (10, 1)])
def test_device_count_is_the_value_whatever_is_eligible_now(eligible: int, count: int) -> None:
    assert resolve_target(TargetType.device_count, count, eligible) == count


# ---------------------------------------------------------------- a fleet written straight into the database


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            yield connection
    finally:
        await pool.close()


@dataclass
class Fleet:
    """Agents, phones, a job and its earlier runs as rows, in the states a test needs."""

    conn: Conn

    async def agent(self, name: str, status: str = "online") -> int:
        agent_id: int = await self.conn.fetchval(
            "INSERT INTO agents (name, token_hash, status) VALUES ($1, $2, $3) RETURNING id", name, f"h-{name}", status)
        return agent_id

    async def phone(self, agent_id: int, serial: str, state: str = "idle", tags: tuple[str, ...] = ()) -> int:
        """A phone; idle ones became idle in the order they were made (the claim takes the longest idle first)."""
        device_id: int = await self.conn.fetchval(
            """INSERT INTO devices (agent_id, serial, state, tags, connected, idle_since)
               VALUES ($1, $2, $3, $4, $3 IN ('idle', 'busy'),
                       CASE WHEN $3 = 'idle' THEN clock_timestamp() END) RETURNING id""",
            agent_id, serial, state, list(tags))
        return device_id

    async def job(self, target: int, filters: dict[str, Any] | None = None) -> int:
        job_id: int = await self.conn.fetchval(
            """INSERT INTO jobs (title, plan, target_type, target_value, target_count, filters, status, timeout_sec,
                                 max_retries, activated_at)
               VALUES ('policy', '[]', 'device_count', $1, $1, $2, 'active', 60, 3, now()) RETURNING id""",
            target, filters or {})
        return job_id

    async def failed_run(self, job_id: int, device_id: int, *, due: bool = True) -> int:
        """A run of the job on the phone that failed and left a retry (due now, or in an hour)."""
        run_id: int = await self.conn.fetchval(
            """INSERT INTO assignments (job_id, device_id, agent_id, status, attempt, error, retry_at, finished_at)
               SELECT $1, d.id, d.agent_id, 'failed', 1, 'flaky', now() + CASE WHEN $3 THEN interval '-1 second'
                      ELSE interval '1 hour' END, now()
               FROM devices d WHERE d.id = $2 RETURNING id""",
            job_id, device_id, due)
        await self.conn.execute(
            "UPDATE jobs SET assigned_count = assigned_count + 1, retry_pending = retry_pending + 1 WHERE id = $1",
            job_id)
        return run_id

    async def claim(self, job_id: int, limit: int = 10) -> list[ClaimedRow]:
        """One claim as the distributor makes it on its general path (the job row locked in a transaction)."""
        async with self.conn.transaction():
            job = await jobs_store.get_for_fill(self.conn, job_id)
            assert job is not None
            assert job.target_count is not None
            room = max(0, job.target_count - job.assigned_count) + job.retry_pending
            return await assignments_store.claim(self.conn, job, min(limit, room))

    async def run(self, run_id: int) -> asyncpg.Record:
        row = await self.conn.fetchrow("SELECT retry_at, retried, superseded FROM assignments WHERE id = $1", run_id)
        assert row is not None
        return row

    async def retry_pending(self, job_id: int) -> int:
        return int(await self.conn.fetchval("SELECT retry_pending FROM jobs WHERE id = $1", job_id))


@pytest.fixture
def fleet(conn: Conn) -> Fleet:
    return Fleet(conn)


# ---------------------------------------------------------------- target resolution over the phones in the database


async def test_targets_count_only_connected_phones_that_match_the_filters(fleet: Fleet) -> None:
    online, offline = await fleet.agent("pc-online"), await fleet.agent("pc-gone", status="offline")
    for i, state in enumerate(["idle", "idle", "busy", "paused", "offline", "unhealthy"]):
        await fleet.phone(online, f"p{i}", state, tags=("lab",) if i % 2 == 0 else ())
    await fleet.phone(offline, "gone-0")  # idle in the table, but its agent is offline
    eligible = await jobs_store.count_eligible_connected(fleet.conn, {}, DEFAULT_TEAM)
    assert eligible == 3, "idle and busy phones of online agents"
    assert resolve_target(TargetType.percentage, 50, eligible) == 2
    assert resolve_target(TargetType.all_devices, None, eligible) == 3
    in_lab = await jobs_store.count_eligible_connected(fleet.conn, {"tags": ["lab"]}, DEFAULT_TEAM)
    assert in_lab == 2, "p0 idle and p2 busy carry the tag"
    assert resolve_target(TargetType.percentage, 10, in_lab) == 1


# ---------------------------------------------------------------- where a due retry goes


async def test_a_fresh_idle_phone_takes_the_retry_before_the_phone_that_ran_the_job(fleet: Fleet) -> None:
    agent = await fleet.agent("pc")
    ran_it = await fleet.phone(agent, "ran-it")  # idle longest: first in line for anything else
    fresh = await fleet.phone(agent, "fresh")
    job = await fleet.job(target=1)
    failed = await fleet.failed_run(job, ran_it)

    claimed = await fleet.claim(job)
    assert [(c["device_id"], c["attempt"]) for c in claimed] == [(fresh, 2)]
    old = await fleet.run(failed)
    assert (old["retried"], old["superseded"], old["retry_at"]) == (True, False, None)
    assert await fleet.retry_pending(job) == 0


async def test_a_retry_waits_for_a_busy_fresh_phone_rather_than_go_back(fleet: Fleet) -> None:
    agent = await fleet.agent("pc")
    ran_it = await fleet.phone(agent, "ran-it")
    await fleet.phone(agent, "fresh-but-busy", "busy")
    job = await fleet.job(target=1)
    failed = await fleet.failed_run(job, ran_it)

    assert await fleet.claim(job) == []
    assert (await fleet.run(failed))["retry_at"] is not None, "still due"
    assert await fleet.retry_pending(job) == 1


@pytest.mark.parametrize("why", ["offline", "paused", "unhealthy", "agent offline", "filtered out"])
async def test_a_retry_goes_back_to_the_phone_that_ran_it_when_no_eligible_fresh_phone_is_connected(
        fleet: Fleet, why: str) -> None:
    agent = await fleet.agent("pc")
    ran_it = await fleet.phone(agent, "ran-it", tags=("lab",))
    if why == "agent offline":
        await fleet.phone(await fleet.agent("pc-gone", status="offline"), "fresh", tags=("lab",))
    elif why == "filtered out":
        await fleet.phone(agent, "fresh")  # idle, but without the job's tag
    else:
        await fleet.phone(agent, "fresh", why, tags=("lab",))
    job = await fleet.job(target=1, filters={"tags": ["lab"]})
    failed = await fleet.failed_run(job, ran_it)

    claimed = await fleet.claim(job)
    assert [(c["device_id"], c["attempt"]) for c in claimed] == [(ran_it, 2)]
    old = await fleet.run(failed)
    assert (old["retried"], old["superseded"]) == (True, True), "the earlier run becomes history"
    assert await fleet.retry_pending(job) == 0


async def test_a_retry_not_yet_due_is_not_claimed(fleet: Fleet) -> None:
    agent = await fleet.agent("pc")
    ran_it = await fleet.phone(agent, "ran-it")
    await fleet.phone(agent, "fresh")
    job = await fleet.job(target=1)
    await fleet.failed_run(job, ran_it, due=False)
    assert await fleet.claim(job) == []
    assert await fleet.retry_pending(job) == 1


async def test_retries_take_the_fresh_phones_then_go_back_once_none_is_left(fleet: Fleet) -> None:
    agent = await fleet.agent("pc")
    first, second = await fleet.phone(agent, "ran-it-1"), await fleet.phone(agent, "ran-it-2")
    fresh = await fleet.phone(agent, "fresh")
    job = await fleet.job(target=2)
    await fleet.failed_run(job, first)
    await fleet.failed_run(job, second)

    claimed = await fleet.claim(job)
    assert [c["device_id"] for c in claimed] == [fresh], "one retry to the fresh phone; the other waits"
    assert await fleet.retry_pending(job) == 1
    again = await fleet.claim(job)  # the fresh phone has run the job now: none is left
    assert len(again) == 1 and again[0]["device_id"] in {first, second} and again[0]["attempt"] == 2
    assert await fleet.retry_pending(job) == 0
