"""The ``phonefleet-server`` command: embedded database by default, agents added while it runs,
data kept across restarts."""

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from phonefleet.sim.agent import SimAgent
from tests.conftest import eventually, free_port, open_url_job


class ServerProcess:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PHONEFLEET_ADMIN_TOKEN")}
        self.log = data_dir.parent / f"server-{port}-{time.monotonic_ns()}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "phonefleet.server.cli", "--data-dir", str(data_dir), "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"

    async def banner(self) -> tuple[str, str]:
        """The URL and admin token the server prints once it is up."""

        async def printed() -> re.Match[str] | None:
            return re.search(r"admin token: (\S+)", self.log.read_text())

        token = await eventually(printed, timeout=60, interval=0.1)
        url = re.search(r"server on (\S+)", self.log.read_text())
        assert url is not None and token is not None
        return url.group(1), token.group(1)

    async def kept_banner(self) -> None:
        """A start that did not generate the token says where it is kept, not what it is."""

        async def printed() -> re.Match[str] | None:
            return re.search(r"admin token kept in (\S+) \(not shown again\)", self.log.read_text())

        await eventually(printed, timeout=60, interval=0.1)
        assert "admin token:" not in self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "data"


def cli(data_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "phonefleet.server.cli", "--data-dir", str(data_dir), *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_server_runs_on_embedded_database_and_keeps_data_across_restarts(data_dir: Path) -> None:
    port = free_port()
    server = ServerProcess(data_dir, port)
    try:
        url, admin = await server.banner()
        assert url == f"http://127.0.0.1:{port}/"
        token = (await asyncio.to_thread(cli, data_dir, "agents", "add", "pc1")).strip()
        assert token.startswith("pfagt_")
        agent = SimAgent(server.url, token, ["emb-1", "emb-2"], auto_finish=True)
        await agent.connect()
        headers = {"Authorization": f"Bearer {admin}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(server.url + "/api/jobs", json=open_url_job()) as r:
                assert r.status == 201
                job = await r.json()

            async def completed() -> bool:
                async with session.get(f"{server.url}/api/jobs/{job['id']}") as r:
                    return bool((await r.json())["status"] == "completed")

            await eventually(completed)
        await agent.disconnect()
    finally:
        server.stop()

    assert (data_dir / "admin_token").read_text().strip() == admin
    assert (data_dir / "admin_token").stat().st_mode & 0o777 == 0o600
    again = ServerProcess(data_dir, port)
    try:
        await again.kept_banner()
        assert admin not in again.log.read_text(), "a kept token is never printed again"
        assert (data_dir / "admin_token").read_text().strip() == admin, "the admin token survives a restart"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            async with session.get(f"{again.url}/api/jobs/{job['id']}") as r:
                assert r.status == 200
                assert (await r.json())["completed_count"] == 2
            async with session.get(f"{again.url}/api/agents") as r:
                assert [a["name"] for a in await r.json()] == ["pc1"]
    finally:
        again.stop()


async def test_agents_add_refuses_a_duplicate_name(data_dir: Path) -> None:
    await asyncio.to_thread(cli, data_dir, "agents", "add", "twice")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "phonefleet.server.cli", "--data-dir", str(data_dir),
                         "agents", "add", "twice"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "exists" in done.stderr


async def test_tokens_are_revoked_and_rotated_while_the_embedded_server_runs(data_dir: Path) -> None:
    """The CLI reaches the running server's embedded database, and the server hears its revocations at once."""
    server = ServerProcess(data_dir, free_port())
    try:
        _url, _admin = await server.banner()
        token = (await asyncio.to_thread(cli, data_dir, "agents", "add", "pc1")).strip()
        agent = SimAgent(server.url, token, ["emb-1"])
        await agent.connect()

        async def dropped() -> bool:
            return not agent.sio.connected

        new = (await asyncio.to_thread(cli, data_dir, "agents", "rotate", "pc1")).strip()
        assert new.startswith("pfagt_") and new != token
        await eventually(dropped, timeout=5)
        agent = SimAgent(server.url, new, ["emb-1"])
        await agent.connect()
        await asyncio.to_thread(cli, data_dir, "agents", "revoke", "pc1")
        await eventually(dropped, timeout=5)

        ci = (await asyncio.to_thread(cli, data_dir, "admins", "add", "ci")).strip()
        listed = await asyncio.to_thread(cli, data_dir, "admins", "list")
        names = [line.split()[0] for line in listed.splitlines()[1:]]
        assert [n for n in names if n != "env"] == ["ci", "initial"]  # env: if this shell sets one
        assert ci not in listed
    finally:
        server.stop()


def test_schema_command_exports_every_payload(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    cli(tmp_path, "schema", str(out))
    text = out.read_text()
    for name in ("JobCreate", "AssignmentOrder", "AgentHello", "AssignmentFinished", "JobStatusUpdate",
                 "OpenUrlStep", "ScreenshotStep", "PauseRequest", "FleetStats"):
        assert f'"{name}"' in text, name
    assert '"job:assign"' in text


async def test_agents_add_takes_the_data_dir_after_the_subcommand(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "phonefleet.server.cli", "agents", "add", "late", "--data-dir",
                         str(data_dir)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("pfagt_")
    assert (data_dir / "pg").is_dir(), "the database is the one in the given data dir"
    again = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "phonefleet.server.cli", "--data-dir", str(data_dir),
                         "agents", "add", "late"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "exists" in again.stderr, "both orders reach the same database"
