"""Real agent processes for fault tests: started with ``phonefleet-agent run``, killed with SIGKILL, and read
through their state directory (outbox, run journal) and their local control CLI."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


class AgentProcess:
    """``phonefleet-agent run`` as a real process (killed with SIGKILL in tests)."""

    def __init__(self, server: str, token: str, state_dir: Path, adb_port: int, virtual: int) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = state_dir / f"agent-{len(list(state_dir.glob('agent-*.log')))}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "phonefleet.agent.cli", "run", "--server", server,
                 "--virtual", str(virtual), "--state-dir", str(state_dir), "--adb-port", str(adb_port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PHONEFLEET_AGENT_TOKEN": token})

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def _count(state_dir: Path, sql: str) -> int:
    with sqlite3.connect(state_dir / "outbox.sqlite3") as db:
        try:
            return int(db.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # the agent has not created the table yet
            return 0


def outbox_size(state_dir: Path) -> int:
    return _count(state_dir, "SELECT count(*) FROM outbox WHERE event = 'assignment:finished'")


def journal_size(state_dir: Path) -> int:
    """Runs the agent has started a step of and not yet finished."""
    return _count(state_dir, "SELECT count(*) FROM run_journal")


async def finished_in_outbox(state: Path, count: int, *, exact: bool = False) -> bool:
    n = await asyncio.to_thread(outbox_size, state)
    return n == count if exact else n >= count


def agent_cli(state_dir: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "phonefleet.agent.cli", *args, "--state-dir", str(state_dir),
                           *([] if "--json" in args else ["--json"])],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
