"""Real phonefleet processes for tests, and what they leave behind: a server started as
``phonefleet-server`` would be, and the PostgreSQL processes that serve a data dir."""

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def spawn_server(data_dir: Path, port: int, log: Path, **env: str) -> "subprocess.Popen[bytes]":
    """``phonefleet-server`` on an embedded database in ``data_dir`` (DATABASE_URL is removed), logging to
    ``log`` (appended); ``env`` adds ``PHONEFLEET_*`` settings."""
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full = {**base, "PHONEFLEET_PORT": str(port), "PHONEFLEET_DATA_DIR": str(data_dir), **env}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "phonefleet.server.cli"], env=full,
                                stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: "subprocess.Popen[bytes]", timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it will not go: for ``finally`` blocks."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """Every live postmaster whose command line names ``pgdata`` (its children die with it)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if (info["name"] == "postgres" and info["status"] != psutil.STATUS_ZOMBIE
                and str(pgdata) in " ".join(info["cmdline"] or [])):
            found.append(proc)
    return found


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid on the first line of ``postmaster.pid``, if the file is there."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
