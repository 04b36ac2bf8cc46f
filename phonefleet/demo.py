"""``phonefleet-demo`` (the README's run command): a server on the embedded database, an agent with
20 virtual phones, and a first job you can watch reach them."""

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer

cli = typer.Typer(add_completion=False, help=__doc__)


class Child:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def _wait_for(check: Any, what: str, child: Child, seconds: float = 120) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"{child.name} exited; see {child.log}:\n{child.text()[-2000:]}")
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}; see {child.log}")


async def demo(data_dir: Path, port: int, phones: int, adb_port: int) -> None:
    logs = data_dir / "logs"
    py = sys.executable
    typer.echo(f"starting the server (embedded PostgreSQL in {data_dir / 'pg'}) ...")
    server = Child("server", [py, "-m", "phonefleet.server.cli", "--data-dir", str(data_dir), "--port", str(port)],
                   logs / "server.log")
    children = [server]
    try:
        async def banner() -> re.Match[str] | None:
            return re.search(r"admin token: (\S+)", server.text())

        admin = (await _wait_for(banner, "the server", server)).group(1)
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            token = await _agent_token(http, url, data_dir)
            typer.echo(f"starting an agent with {phones} virtual phones (adb server on port {adb_port}) ...")
            agent = Child("agent", [py, "-m", "phonefleet.agent.cli", "run", "--server", url, "--token", token,
                                    "--virtual", str(phones), "--state-dir", str(data_dir / "agent"),
                                    "--adb-port", str(adb_port)], logs / "agent.log")
            children.append(agent)

            async def idle_phones() -> int:
                async with http.get(url + "/api/devices") as r:
                    return sum(d["state"] == "idle" for d in await r.json())

            await _wait_for(lambda: _at_least(idle_phones, phones), f"{phones} idle phones", agent)
            typer.echo(f"{phones} phones connected. Sending a job to half of them ...")
            body = {"title": "demo: open example.com, take a screenshot",
                    "plan": [{"type": "open_url", "url": "https://example.com/", "duration_sec": 3},
                             {"type": "screenshot"}],
                    "target_type": "percentage", "target_value": 50}
            async with http.post(url + "/api/jobs", json=body) as r:
                job = await r.json()
            last = ""
            while True:
                async with http.get(f"{url}/api/jobs/{job['id']}") as r:
                    job = await r.json()
                done = job["completed_count"] + job["failed_count"]
                line = (f"  job {job['id']} {job['status']}: {done}/{job['target_count']} phones "
                        f"({100 * done // max(1, job['target_count'])}%), {job['running_count']} running")
                if line != last:
                    typer.echo(line)
                    last = line
                if job["status"] in ("completed", "cancelled"):
                    break
                await asyncio.sleep(0.5)
        typer.echo("")
        typer.echo(f"dashboard: {url}/   (sign in with the admin token: {admin})")
        typer.echo(f"  jobs:    curl -H 'Authorization: Bearer {admin}' {url}/api/jobs")
        typer.echo(f"  phones:  .venv/bin/phonefleet-agent status --state-dir {data_dir / 'agent'}")
        typer.echo(f"  API:     {url}/api/openapi.json      logs: {logs}")
        typer.echo("Ctrl-C stops everything.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = [asyncio.create_task(asyncio.to_thread(c.proc.wait)) for c in children]
        await asyncio.wait([asyncio.create_task(stop.wait()), *watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for child in reversed(children):
            child.stop()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _agent_token(http: aiohttp.ClientSession, url: str, data_dir: Path) -> str:
    """The demo agent's token, registered once and kept in the data directory."""
    path = data_dir / "demo-agent-token"
    if path.exists():
        return path.read_text().strip()
    name = "demo-pc"
    for n in range(2, 100):
        async with http.post(url + "/api/agents", json={"name": name}) as r:
            if r.status == 201:
                token: str = (await r.json())["token"]
                path.write_text(token + "\n")
                path.chmod(0o600)
                return token
        name = f"demo-pc-{n}"
    raise SystemExit("could not register a demo agent")


@cli.command()
def main(
    data_dir: Annotated[Path, typer.Option(help="Database, agent state, logs.")] = Path("./.phonefleet"),
    port: Annotated[int, typer.Option(help="Server port.")] = 8700,
    phones: Annotated[int, typer.Option(min=1, max=900, help="Virtual phones.")] = 20,
    adb_port: Annotated[int, typer.Option(help="A private adb server's port (yours on 5037 is left alone).")] = 5137,
) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(demo(data_dir.resolve(), port, phones, adb_port))


def run() -> None:
    cli()


if __name__ == "__main__":
    run()
