"""Artifacts on the server: a run's result says what its files will be, each upload is kept only when its size
and sha256 match (exactly once), a run says when its files are still uploading, a phone lists its artifacts
newest first, and retention deletes by age and by total size (oldest first), recording what it deleted."""

import asyncio
import hashlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from phonefleet.protocol import artifacts as pa
from phonefleet.server.duties.artifact_retention import ArtifactRetention
from phonefleet.server.store import artifacts as artifacts_store
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def info(name: str, data: bytes, *, kind: str = "screenshot", step: int | None = 0) -> dict[str, Any]:
    return {"name": name, "kind": kind, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "step_index": step, "taken_at": datetime.now(UTC).isoformat()}


async def _run(server: RunningServer, agent: SimAgent | None = None) -> tuple[SimAgent, int]:
    agent = agent or await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) >= 1)
    return agent, max(agent.orders)


async def upload(server: RunningServer, agent: SimAgent, assignment_id: int, name: str, data: bytes, *,
                 claim: bytes | None = None, kind: str = "screenshot") -> tuple[int, Any]:
    claimed = data if claim is None else claim
    headers = {"Authorization": f"Bearer {agent.token}", pa.HEADER_SHA256: hashlib.sha256(claimed).hexdigest(),
               pa.HEADER_BYTES: str(len(claimed)), pa.HEADER_KIND: kind, pa.HEADER_STEP: "0"}
    async with server.session.put(f"{server.url}/api/agent/artifacts/{assignment_id}/{name}", data=data,
                                  headers=headers) as r:
        return r.status, await r.json()


async def listing(server: RunningServer, assignment_id: int) -> dict[str, dict[str, Any]]:
    rows = await server.ok("GET", f"/api/assignments/{assignment_id}/artifacts")
    return {r["name"]: r for r in rows}


async def pending(server: RunningServer, job_id: int = 1) -> int:
    page = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    return int(page["items"][0]["artifacts_pending"])


def folder(server: RunningServer, assignment_id: int) -> list[str]:
    path = server.services.settings.data_dir / "artifacts" / str(assignment_id)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


async def test_the_result_says_what_to_expect_and_the_upload_stores_it_once(server: RunningServer) -> None:
    agent, aid = await _run(server)
    other = PNG[::-1]
    ack = await agent.finish([aid], artifacts=[info("a.png", PNG), info("b.png", other, step=1)])
    assert ack["ok"], ack
    rows = await listing(server, aid)
    assert {n: r["status"] for n, r in rows.items()} == {"a.png": "uploading", "b.png": "uploading"}
    assert rows["a.png"]["sha256"] == hashlib.sha256(PNG).hexdigest() and rows["a.png"]["bytes"] == len(PNG)
    assert await pending(server) == 2

    status, body = await upload(server, agent, aid, "a.png", PNG)
    assert status == 201 and body["status"] == "stored", body
    status, body = await upload(server, agent, aid, "a.png", PNG)  # the agent never heard the answer
    assert status == 200 and body["status"] == "stored", body
    assert await pending(server) == 1
    assert folder(server, aid) == ["a.png"]

    status, body = await upload(server, agent, aid, "b.png", other)
    assert status == 201
    rows = await listing(server, aid)
    assert [r["status"] for r in rows.values()] == ["stored", "stored"]
    assert rows["b.png"]["step_index"] == 1 and rows["b.png"]["kind"] == "screenshot"
    assert rows["b.png"]["stored_at"] is not None
    assert await pending(server) == 0
    async with server.session.get(f"{server.url}/api/assignments/{aid}/artifacts/b.png",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200 and await r.read() == other


async def test_a_mismatch_is_a_422_naming_it_and_nothing_is_kept(server: RunningServer) -> None:
    agent, aid = await _run(server)
    await agent.finish([aid], artifacts=[info("a.png", PNG)])
    damaged = PNG[:-1] + b"\x00"
    status, body = await upload(server, agent, aid, "a.png", damaged, claim=PNG)  # same size, other bytes
    assert status == 422 and body["error"]["details"][0]["field"] == "sha256", body
    status, body = await upload(server, agent, aid, "a.png", PNG[:-5], claim=PNG)  # short
    assert status == 422 and body["error"]["details"][0]["field"] == "bytes", body
    status, body = await upload(server, agent, aid, "a.png", PNG + b"more", claim=PNG)  # long
    assert status == 422 and body["error"]["details"][0]["field"] == "bytes", body
    # Honest headers, but not the bytes the run's result described.
    status, body = await upload(server, agent, aid, "a.png", damaged)
    assert status == 422 and body["error"]["details"][0]["field"] == "sha256", body
    assert folder(server, aid) == []
    assert (await listing(server, aid))["a.png"]["status"] == "uploading"
    status, _ = await upload(server, agent, aid, "a.png", PNG)
    assert status == 201 and folder(server, aid) == ["a.png"]


async def test_an_upload_before_its_result_is_recorded_and_the_result_keeps_it(server: RunningServer) -> None:
    agent, aid = await _run(server)
    status, body = await upload(server, agent, aid, "early.log", b"log\n", kind="logcat")
    assert status == 201 and body["status"] == "stored" and body["kind"] == "logcat", body
    await agent.finish([aid], artifacts=[info("early.log", b"log\n", kind="logcat")])
    rows = await listing(server, aid)
    assert rows["early.log"]["status"] == "stored" and await pending(server) == 0


async def test_an_upload_racing_its_runs_result_waits_for_it_and_never_deadlocks(server: RunningServer) -> None:
    """A batch holds the run's row (a progress report locks it ``FOR UPDATE``) and then records the run's files as
    expected, while the file's upload comes in: the upload waits for the batch (it takes the run's row before the
    file's key), so neither is chosen as a deadlock's victim."""
    agent, aid = await _run(server)
    pool = server.services.pool
    async with pool.acquire() as batch, pool.acquire() as watcher:

        async def upload_waits() -> bool:  # another connection: a transaction sees pg_stat_activity as it first was
            return bool(await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%INSERT INTO artifacts%'"))

        async with batch.transaction():
            await batch.execute("SELECT 1 FROM assignments WHERE id = $1 FOR UPDATE", aid)
            racing = asyncio.ensure_future(upload(server, agent, aid, "run.log", b"log\n", kind="logcat"))
            await eventually(upload_waits)
            expected = {**info("run.log", b"log\n", kind="logcat"), "taken_at": None}
            await artifacts_store.record_expected(batch, [{"assignment_id": aid, "agent_id": None,
                                                           "artifacts": [expected]}])
        status, body = await asyncio.wait_for(racing, 10)
    assert status == 201 and body["status"] == "stored", body
    assert (await listing(server, aid))["run.log"]["status"] == "stored"


async def test_an_older_agents_upload_without_headers_is_kept(server: RunningServer) -> None:
    agent, aid = await _run(server)
    status, body = await server.request("PUT", f"/api/agent/artifacts/{aid}/old.png", token=agent.token, data=PNG)
    assert status == 201 and body["sha256"] == hashlib.sha256(PNG).hexdigest() and body["kind"] == "screenshot"


async def test_a_file_lost_on_the_agent_lists_as_deleted(server: RunningServer) -> None:
    agent, aid = await _run(server)
    await agent.finish([aid], artifacts=[info("a.png", PNG)])
    status, body = await server.request("POST", f"/api/agent/artifacts/{aid}/a.png/lost", token=agent.token,
                                        json={"reason": "its file is gone"})
    assert status == 200 and body["status"] == "deleted" and "gone" in body["deleted_reason"], body
    assert await pending(server) == 0


async def test_a_phone_lists_its_screenshots_newest_first_a_page_at_a_time(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    names = []
    for run in range(3):
        agent, aid = await _run(server, agent)
        files = [info(f"{aid}-{i}.png", PNG + bytes([i])) for i in range(2)]
        await agent.finish([aid], artifacts=[*files, info(f"{aid}.log", b"x", kind="logcat")])
        names += [f["name"] for f in files]
        del run
    device_id = (await server.ok("GET", "/api/devices"))[0]["id"]
    page = await server.ok("GET", f"/api/devices/{device_id}/artifacts?kind=screenshot&limit=4")
    assert [a["name"] for a in page["items"]] == names[::-1][:4]
    rest = await server.ok("GET", f"/api/devices/{device_id}/artifacts?kind=screenshot&limit=4"
                                  f"&before={page['next_before']}")
    assert [a["name"] for a in rest["items"]] == names[::-1][4:] and rest["next_before"] is None
    status, body = await server.request("GET", f"/api/devices/{device_id}/artifacts?kind=video")
    assert status == 422 and body["error"]["details"][0]["field"] == "kind"


async def _stored(server: RunningServer, agent: SimAgent, aid: int, files: dict[str, bytes]) -> None:
    await agent.finish([aid], artifacts=[info(n, d) for n, d in files.items()])
    for name, data in files.items():
        assert (await upload(server, agent, aid, name, data))[0] == 201


async def _age(server: RunningServer, names: list[str], days: float) -> None:
    async with server.services.pool.acquire() as conn:
        await conn.execute("UPDATE artifacts SET created_at = now() - make_interval(secs => $2) WHERE name = ANY($1)",
                           names, days * 86_400)


async def _metric(server: RunningServer, reason: str) -> float:
    status, text = await server.request("GET", "/metrics", token=None)
    assert status == 200
    for line in text.splitlines():
        if line.startswith(f'phonefleet_artifacts_deleted_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_retention_deletes_by_age_and_records_it(server_factory: Any) -> None:
    server = await server_factory(artifact_max_age_days=7)
    agent, aid = await _run(server)
    await _stored(server, agent, aid, {"old.png": PNG, "new.png": PNG[::-1]})
    await _age(server, ["old.png"], 8)
    duty = next(d for d in server.services.maintenance.duties if isinstance(d, ArtifactRetention))
    assert await duty.run_once() == 1
    rows = await listing(server, aid)
    assert rows["old.png"]["status"] == "deleted" and rows["old.png"]["deleted_reason"].startswith("age")
    assert rows["old.png"]["deleted_at"] is not None and rows["new.png"]["status"] == "stored"
    assert folder(server, aid) == ["new.png"]
    assert await _metric(server, "age") == 1
    assert await duty.run_once() == 0
    # A late repeat of the deleted upload changes nothing and keeps nothing.
    status, body = await upload(server, agent, aid, "old.png", PNG)
    assert status == 200 and body["status"] == "deleted" and folder(server, aid) == ["new.png"]


async def test_retention_deletes_the_oldest_beyond_the_total_size(server_factory: Any) -> None:
    size = len(PNG)
    server = await server_factory(artifact_max_bytes=2 * size + 10)
    agent, aid = await _run(server)
    files = {f"{i}.png": PNG[:-1] + bytes([i]) for i in range(5)}
    await _stored(server, agent, aid, files)
    for i, name in enumerate(files):  # 0.png the oldest
        await _age(server, [name], 5 - i)
    duty = next(d for d in server.services.maintenance.duties if isinstance(d, ArtifactRetention))
    assert await duty.run_once() == 3
    rows = await listing(server, aid)
    assert {n: r["status"] for n, r in rows.items()} == {
        "0.png": "deleted", "1.png": "deleted", "2.png": "deleted", "3.png": "stored", "4.png": "stored"}
    assert all(rows[n]["deleted_reason"].startswith("size") for n in ("0.png", "1.png", "2.png"))
    assert folder(server, aid) == ["3.png", "4.png"]
    assert await _metric(server, "size") == 3
    assert await duty.run_once() == 0


async def test_retention_removes_what_uploads_cut_off_by_a_dead_server_left(server: RunningServer) -> None:
    duty = next(d for d in server.services.maintenance.duties if isinstance(d, ArtifactRetention))
    folder_of_run = server.services.settings.data_dir / "artifacts" / "424242"
    folder_of_run.mkdir(parents=True, exist_ok=True)
    dead, live, whole = (folder_of_run / n for n in ("a.png.0badc0ffee00.part", "b.png.0123456789ab.part", "c.png"))
    for path in (dead, live, whole):
        path.write_bytes(PNG)
    two_hours_ago = time.time() - 7200
    for path in (dead, whole):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert await duty.sweep_partials() == 1
    assert sorted(p.name for p in folder_of_run.iterdir()) == sorted([whole.name, live.name]), "only the dead upload"


async def test_an_upload_cut_by_its_client_keeps_nothing_and_logs_no_error(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """An agent stopped mid-upload: the server drops the partial file, keeps serving, and says so quietly (an
    info line, not aiohttp's error traceback)."""
    agent, aid = await _run(server)
    assert (await agent.finish([aid], artifacts=[info("cut.png", PNG)]))["ok"]
    host, port = server.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"PUT /api/agent/artifacts/{aid}/cut.png HTTP/1.1\r\nHost: {host}\r\n"
                  f"Authorization: Bearer {agent.token}\r\nContent-Length: {len(PNG)}\r\n"
                  f"{pa.HEADER_SHA256}: {hashlib.sha256(PNG).hexdigest()}\r\n{pa.HEADER_BYTES}: {len(PNG)}\r\n\r\n"
                  ).encode() + PNG[:100])
    await writer.drain()

    async def reading() -> bool:  # the server is reading the body: its .part file exists
        return any(name.endswith(".part") for name in folder(server, aid))

    assert await eventually(reading, timeout=10)
    writer.transport.abort()  # a reset, as a killed agent's socket

    async def dropped() -> bool:
        return not folder(server, aid)

    assert await eventually(dropped, timeout=10)
    assert (await listing(server, aid))["cut.png"]["status"] == "uploading"  # still expected, never half-stored
    status, _ = await upload(server, agent, aid, "cut.png", PNG)  # the agent's retry stores it
    assert status == 201
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
