"""``phonefleet-agent devices|status|pause|resume|virtual`` against a real agent with virtual phones: tables and
one-line confirmations for people, the agent's JSON with ``--json`` for scripts."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from phonefleet.agent.agent import Agent
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually


def agent_text(state_dir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "phonefleet.agent.cli", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


async def test_agent_cli_prints_tables_lines_and_json(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("rack-1", virtual=2)
    assert agent.fleet is not None
    serials = sorted(p.adb_serial for p in agent.fleet.phones)

    async def both_tracked() -> bool:
        return len(agent.devices()) == 2

    await eventually(both_tracked, timeout=30)
    run = asyncio.to_thread

    devices = (await run(agent_text, agent.state_dir, "devices")).splitlines()
    assert devices[0].split()[:3] == ["SERIAL", "ADB", "MODEL"] and "HEALTH" in devices[0]
    assert sorted(line.split()[0] for line in devices[1:]) == serials
    as_json = json.loads(await run(agent_text, agent.state_dir, "devices", "--json"))
    assert sorted(p["serial"] for p in as_json) == serials

    status = (await run(agent_text, agent.state_dir, "status")).splitlines()
    assert status[0].startswith(f"server {server.url}") and "paused here: nothing" in status[0]
    assert status[1].split() == ["SERIAL", "STATE", "RUNNING", "QUEUED", "DONE"]
    assert any(line.startswith("VIRTUAL") for line in status)
    assert json.loads(await run(agent_text, agent.state_dir, "status", "--json"))["paused"] is False

    line = await run(agent_text, agent.state_dir, "pause", "--device", serials[0])
    assert line.strip() == f"paused phone {serials[0]}: no new work starts there; runs already going finish"
    assert f"paused here: phone {serials[0]}" in await run(agent_text, agent.state_dir, "status")
    assert (await run(agent_text, agent.state_dir, "resume", "--device", serials[0])).strip() \
        == f"resumed phone {serials[0]}"
    paused = json.loads(await run(agent_text, agent.state_dir, "pause", "--json"))
    assert paused["paused"] is True, "--json answers the agent's status"
    assert (await run(agent_text, agent.state_dir, "resume")).strip() == "resumed the whole agent"

    listing = (await run(agent_text, agent.state_dir, "virtual")).splitlines()
    assert listing[0].split()[:2] == ["SERIAL", "SERIALNO"] and len(listing) == 3
    offline = await run(agent_text, agent.state_dir, "virtual", serials[1], "--offline")
    assert offline.strip() == f"virtual phone {serials[1]} is offline"
    back = json.loads(await run(agent_text, agent.state_dir, "virtual", serials[1], "--online", "--json"))
    assert back["online"] is True
    fault = await run(agent_text, agent.state_dir, "virtual", serials[1], "--fault", "none")
    assert fault.strip() == f"virtual phone {serials[1]}: fault none (online)"
    log = (await run(agent_text, agent.state_dir, "virtual", serials[1])).splitlines()
    assert log[0].startswith(f"virtual phone {serials[1]} (online, fault none): last ")
