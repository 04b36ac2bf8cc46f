"""``phonefleet-demo`` (the README's run command): a server on the embedded database, an agent with
20 virtual phones, and a first job you can watch reach them. Ctrl-C stops everything it started."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import aiohttp
import typer

from phonefleet.cli_help import APP_SETTINGS

cli = typer.Typer(**APP_SETTINGS, help=__doc__)

FIRST_JOB_AFTER_SEC = 5.0  # time to open the dashboard before the first job starts
JOB_STEP_SEC = 10  # the first job stays on its page this long: long enough to watch the bars move
PROGRESS_SEC = 10.0  # a long wait says it is still waiting this often
STOP_SEC = 30.0


class DemoFailed(Exception):
    """A step did not come about; the message says which, and where its log is."""


def say(line: str) -> None:
    typer.echo(line)


class Child:
    """A process the demo started, in a session of its own: a Ctrl-C at the terminal reaches only the
    demo, which stops its children in order. Its log starts fresh each run (the previous one is kept)."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists():
            log.replace(log.with_name(log.stem + ".previous" + log.suffix))
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def exited(self) -> str | None:
        """Why the process is gone, with the end of its log, or None while it runs."""
        if self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-2000:]
        return f"the {self.name} exited (code {self.proc.returncode}); see {self.log}:\n{tail}"

    def stop(self) -> None:
        """SIGTERM (its own clean shutdown), then SIGKILL if it has not gone within STOP_SEC."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_SEC)
            except subprocess.TimeoutExpired:
                say(f"  the {self.name} did not stop within {STOP_SEC:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, child: Child, seconds: float = 300) -> None:
    """Poll ``check`` until it holds; fail at once if ``child`` exits; say every PROGRESS_SEC that it waits."""
    start = time.monotonic()
    said = start
    while not await check():
        if (why := child.exited()) is not None:
            raise DemoFailed(why)
        now = time.monotonic()
        if now - start > seconds:
            raise DemoFailed(f"timed out after {seconds:.0f} s waiting for {what}; see {child.log}")
        if now - said >= PROGRESS_SEC:
            say(f"  still waiting for {what} ({now - start:.0f} s) ...")
            said = now
        await asyncio.sleep(0.25)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def healthy(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def admin_token(data_dir: Path) -> str:
    """The environment's admin token, else the one the server keeps in its data dir (never its log)."""
    if token := os.environ.get("PHONEFLEET_ADMIN_TOKEN"):
        return token
    path = data_dir / "admin_token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DemoFailed(f"the server is up but wrote no admin token to {path}: {exc}") from None


async def agent_token(http: aiohttp.ClientSession, url: str, data_dir: Path) -> str:
    """The demo agent's token, registered once and kept in the data dir (again if the database lost it)."""
    path = data_dir / "demo-agent-token"
    if path.exists():
        token = path.read_text().strip()
        async with http.get(url + "/api/agent/assignments", headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status == 200:
                return token
    for n in range(1, 100):
        name = "demo-pc" if n == 1 else f"demo-pc-{n}"
        async with http.post(url + "/api/agents", json={"name": name}) as r:
            if r.status == 201:
                token = str((await r.json())["token"])
                path.write_text(token + "\n")
                path.chmod(0o600)
                return token
    raise DemoFailed("could not register a demo agent")


async def demo_person(http: aiohttp.ClientSession, url: str, data_dir: Path) -> tuple[str, str]:
    """The person to sign the dashboard in with, an admin: (name, password), made once and kept in the data dir
    (made again, under the next free name, if the database lost them or the password no longer works)."""
    path = data_dir / "demo-person"
    if path.exists():
        name, _, password = path.read_text().strip().partition(" ")
        async with http.post(url + "/api/session", json={"name": name, "password": password}) as r:
            if r.status == 201:
                return name, password
    for n in range(1, 100):
        name = "demo" if n == 1 else f"demo-{n}"
        async with http.post(url + "/api/users", json={"name": name, "role": "admin"}) as r:
            if r.status == 201:
                password = str((await r.json())["password"])
                path.write_text(f"{name} {password}\n")
                path.chmod(0o600)
                return name, password
    raise DemoFailed("could not add a demo person")


class Demo:
    """The server, the agent and its private adb server, started in order and stopped in reverse."""

    def __init__(self, data_dir: Path, port: int, phones: int, adb_port: int,
                 first_job_after: float = FIRST_JOB_AFTER_SEC) -> None:
        import adbutils

        self.first_job_after = first_job_after
        self.data_dir = data_dir
        self.port = port
        self.phones = phones
        self.adb_port = adb_port
        self.adb = str(adbutils.adb_path())  # given to the agent too, so kill-server reaches its server
        self.url = f"http://127.0.0.1:{port}"
        self.logs = data_dir / "logs"
        self.embedded = not os.environ.get("DATABASE_URL")
        self.server: Child | None = None
        self.agent: Child | None = None

    async def show(self) -> None:
        """Start the server and say where to look (URL, and whom to sign in as) at once; start the phones; a few
        seconds later send a first job to watch run live; then keep running until a process exits."""
        if port_in_use(self.port):
            raise DemoFailed(f"port {self.port} is in use (another phonefleet?); pick one with --port or "
                             "PHONEFLEET_PORT")
        await self._start_server()
        admin = admin_token(self.data_dir)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as http:
            name, password = await demo_person(http, self.url, self.data_dir)
            say("")
            say(f"  dashboard:    {self.url}/")
            say(f"  sign in as:   {name}   password: {password}   (an admin; kept in "
                f"{self.data_dir / 'demo-person'})")
            say(f"  scripts and the CLI: the admin token in {self.data_dir / 'admin_token'}, or a personal token "
                "made in the dashboard")
            say("  Ctrl-C stops everything (agent, virtual phones, server, its database).")
            say("")
            token = await agent_token(http, self.url, self.data_dir)
            await self._start_agent(http, token)
            say(f"sending a first job in {self.first_job_after:g} s: open the dashboard to watch it run ...")
            await asyncio.sleep(self.first_job_after)
            await self._run_job(http)
        say("")
        say("the demo keeps running; try:")
        say(f"  .venv/bin/phonefleet --url {self.url} jobs create --url https://example.com --duration 10 --percent 50 "
            "--wait")
        say(f"  .venv/bin/phonefleet-agent status --state-dir {self.data_dir / 'agent'}")
        say(f"  API: {self.url}/api/openapi.json      logs: {self.logs}")
        say("Ctrl-C stops everything.")
        children = [c for c in (self.server, self.agent) if c is not None]
        exits = [asyncio.create_task(asyncio.to_thread(c.proc.wait)) for c in children]
        try:
            await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in exits:
                task.cancel()  # the threads end when stop() ends the processes
        raise DemoFailed(next(why for c in children if (why := c.exited())))

    async def _start_server(self) -> None:
        where = f"embedded PostgreSQL in {self.data_dir / 'pg'}" if self.embedded else "DATABASE_URL"
        first = self.embedded and not (self.data_dir / "pg" / "PG_VERSION").exists()
        say(f"starting the server on port {self.port} ({where}"
            + ("; this first start creates the database" if first else "") + ") ...")
        self.server = Child("server", [sys.executable, "-m", "phonefleet.server.cli", "--data-dir",
                                       str(self.data_dir), "--port", str(self.port)], self.logs / "server.log")
        async with aiohttp.ClientSession() as anonymous:
            await wait_for(lambda: healthy(anonymous, self.url), "the server to answer /healthz", self.server)
        say(f"server up at {self.url}")

    async def _start_agent(self, http: aiohttp.ClientSession, token: str) -> None:
        say(f"starting an agent with {self.phones} virtual phones (private adb server on port {self.adb_port}) ...")
        self.agent = Child("agent", [sys.executable, "-m", "phonefleet.agent.cli", "run", "--server", self.url,
                                     "--virtual", str(self.phones), "--state-dir", str(self.data_dir / "agent"),
                                     "--adb-port", str(self.adb_port), "--adb-path", self.adb],
                           self.logs / "agent.log", env={"PHONEFLEET_AGENT_TOKEN": token})
        last = -1

        async def all_idle() -> bool:
            nonlocal last
            async with http.get(self.url + "/api/devices") as r:
                devices: list[dict[str, object]] = await r.json()
            idle = sum(d["state"] == "idle" for d in devices)
            if idle != last and idle:
                say(f"  {idle}/{self.phones} phones connected")
                last = idle
            return idle >= self.phones

        await wait_for(all_idle, f"{self.phones} idle phones", self.agent)

    async def _run_job(self, http: aiohttp.ClientSession) -> None:
        assert self.agent is not None and self.server is not None
        body = {"title": f"demo: open example.com for {JOB_STEP_SEC} s, take a screenshot",
                "plan": [{"type": "open_url", "url": "https://example.com/", "duration_sec": JOB_STEP_SEC},
                         {"type": "screenshot"}],
                "target_type": "percentage", "target_value": 50}
        async with http.post(self.url + "/api/jobs", json=body) as r:
            job = await r.json()
            if r.status != 201:
                raise DemoFailed(f"the server refused the demo job: {job}")
        say(f"sent job {job['id']} to half of the phones (dashboard: {self.url}/#/jobs)")
        last = ""

        async def finished() -> bool:
            nonlocal job, last
            async with http.get(f"{self.url}/api/jobs/{job['id']}") as r:
                job = await r.json()
            state = "completed with failures" if job["status"] == "completed" and job["failed_count"] else job["status"]
            line = (f"  job {job['id']} {state}: {job['completed_count']} done · {job['failed_count']} failed · "
                    f"{job['running_count']} running of {job['target_count']}")
            if line != last:
                say(line)
                last = line
            return job["status"] in ("completed", "cancelled")

        await wait_for(finished, f"job {job['id']}", self.agent)

    def stop(self) -> None:
        """Agent first (it stops its virtual phones), then the server (it stops its PostgreSQL), then the
        private adb server; then make sure no PostgreSQL of this data dir is left behind."""
        if self.agent is not None:
            say(f"stopping the agent and its {self.phones} virtual phones ...")
            self.agent.stop()
        if self.server is not None:
            say("stopping the server" + (" and its PostgreSQL ..." if self.embedded else " ..."))
            self.server.stop()
        if self.agent is not None:
            say(f"stopping the private adb server on port {self.adb_port} ...")
            subprocess.run([self.adb, "-P", str(self.adb_port), "kill-server"], capture_output=True,
                           timeout=STOP_SEC, check=False)
        if self.embedded and self.server is not None:
            from phonefleet.server.embedded_postgres import EmbeddedPostgres

            if EmbeddedPostgres(self.data_dir).stop_orphan():
                say("  stopped a PostgreSQL the server left running")
        say("stopped.")


async def demo(data_dir: Path, port: int, phones: int, adb_port: int,
               first_job_after: float = FIRST_JOB_AFTER_SEC) -> None:
    """Run the show until Ctrl-C (SIGINT or SIGTERM) or a failure; stop everything either way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    run = Demo(data_dir, port, phones, adb_port, first_job_after)
    show = asyncio.create_task(run.show())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([show, stopped], return_when=asyncio.FIRST_COMPLETED)
        if show.done():
            show.result()  # raises DemoFailed: the show only ends on a failure
        else:
            say("")
    finally:
        for task in (show, stopped):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, DemoFailed):
            await show
        await asyncio.to_thread(run.stop)


@cli.command()
def main(
    data_dir: Annotated[Path, typer.Option(metavar="DIR", envvar="PHONEFLEET_DATA_DIR",
                                           help="Database, agent state, logs.")] = Path("./.phonefleet"),
    port: Annotated[int, typer.Option(metavar="PORT", envvar="PHONEFLEET_PORT", help="Server port.")] = 8700,
    phones: Annotated[int, typer.Option(metavar="N", min=1, max=900, help="Virtual phones.")] = 20,
    adb_port: Annotated[int, typer.Option(metavar="PORT", help="A private adb server's port (yours on 5037 is left "
                                                                "alone).")] = 5137,
    first_job_after: Annotated[float, typer.Option(metavar="SECONDS", min=0, help="Wait this long, once the phones "
                                                   "are up, before sending the first job.")] = FIRST_JOB_AFTER_SEC,
) -> None:
    """A server on the embedded database, an agent with virtual phones, and a first job to watch."""
    try:
        asyncio.run(demo(data_dir.resolve(), port, phones, adb_port, first_job_after))
    except DemoFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None


def run() -> None:
    cli()


if __name__ == "__main__":
    run()
