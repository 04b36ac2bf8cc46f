"""``phonefleet-server``: run the server, manage agents, export the contract's schema."""

import asyncio
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from phonefleet.logs import setup_logging
from phonefleet.server.app import SERVICES, create_app
from phonefleet.server.auth import AGENT_PREFIX, hash_token, new_token
from phonefleet.server.config import Settings
from phonefleet.server.database import EmbeddedPostgres, create_pool, migrate
from phonefleet.server.listener import GuardedTCPSite, app_runner
from phonefleet.server.store import agents as agents_store

cli = typer.Typer(add_completion=False, no_args_is_help=False, help="The phonefleet server.")
agents_cli = typer.Typer(help="Manage agents (works while the server runs).")
cli.add_typer(agents_cli, name="agents")

HostOpt = Annotated[str | None, typer.Option("--host", help="Listen address [env PHONEFLEET_HOST].")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Listen port [env PHONEFLEET_PORT].")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Embedded database and artifacts "
                                                                 "[env PHONEFLEET_DATA_DIR].")]


@cli.callback(invoke_without_command=True)
def run(ctx: typer.Context, host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """Run the server (the default command)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = Settings.from_env(host=host, port=port, data_dir=data_dir)
        return
    settings = Settings.from_env(host=host, port=port, data_dir=data_dir)
    setup_logging(settings.log_level)
    asyncio.run(serve(settings))


async def serve(settings: Settings) -> None:
    """Start, say where (only once the port is really listening), and run until SIGINT/SIGTERM."""
    app = create_app(settings)
    runner = app_runner(app, settings.header_timeout_sec, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = GuardedTCPSite(runner, settings.host, settings.port, header_timeout_sec=settings.header_timeout_sec)
        await site.start()
        services = app[SERVICES]
        where = ("embedded PostgreSQL in " + str(settings.data_dir.resolve() / "pg")
                 if settings.database_url is None else "DATABASE_URL")
        typer.echo(f"phonefleet server on http://{settings.host}:{settings.port}/  (database: {where})")
        if services.admin_token:
            typer.echo(f"admin token: {services.admin_token}")
        typer.echo("add an agent: phonefleet-server agents add NAME")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


@agents_cli.command("add")
def agents_add(ctx: typer.Context, name: str) -> None:
    """Register an agent and print its token (shown once; only its hash is kept)."""
    settings: Settings = ctx.obj

    async def go() -> str:
        embedded = None
        dsn = settings.database_url
        if dsn is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            dsn = embedded.start()
        try:
            pool = await create_pool(dsn, min_size=1, max_size=2)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
                    if await agents_store.name_exists(conn, name):
                        raise typer.BadParameter(f"an agent named {name!r} exists", param_hint="NAME")
                    token = new_token(AGENT_PREFIX)
                    await agents_store.create(conn, name, hash_token(token))
                    return token
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                embedded.stop()

    typer.echo(asyncio.run(go()))


@cli.command("schema")
def schema(out: Annotated[Path | None, typer.Argument(help="File to write; stdout if omitted.")] = None) -> None:
    """Export the JSON Schema of the protocol (REST bodies and Socket.IO payloads)."""
    from phonefleet.protocol.schema import main as export

    export([str(out)] if out else [])


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
