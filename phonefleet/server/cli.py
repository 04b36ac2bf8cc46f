"""``phonefleet-server``: run the server, manage agents, export the contract's schema."""

import asyncio
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from phonefleet import gc_policy
from phonefleet.cli_help import APP_SETTINGS, env_help
from phonefleet.logs import setup_logging
from phonefleet.protocol.enums import Role
from phonefleet.protocol.people import PersonPatch
from phonefleet.protocol.teams import DEFAULT_TEAM_NAME
from phonefleet.server import audit, people, teams, tokens
from phonefleet.server.app import SERVICES, AdminTokenAtStart, create_app
from phonefleet.server.auth import ENV_ADMIN
from phonefleet.server.config import ENV_PREFIX, Settings
from phonefleet.server.database import EmbeddedPostgres, create_pool, migrate
from phonefleet.server.errors import ServiceError
from phonefleet.server.listener import GuardedTCPSite, app_runner
from phonefleet.server.store import Conn
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import people as people_store
from phonefleet.server.store import teams as teams_store

cli = typer.Typer(**APP_SETTINGS, no_args_is_help=False, help="The phonefleet server.")
agents_cli = typer.Typer(help="Manage agents and their tokens (works while the server runs).")
cli.add_typer(agents_cli, name="agents")
admins_cli = typer.Typer(help="Manage named admin tokens (works while the server runs).")
cli.add_typer(admins_cli, name="admins")
users_cli = typer.Typer(help="Manage people: accounts with a role (works while the server runs).")
cli.add_typer(users_cli, name="users")
teams_cli = typer.Typer(help="Manage teams: who sees and acts on which agents, phones, jobs and schedules (works "
                             "while the server runs).")
cli.add_typer(teams_cli, name="teams")
supabase_cli = typer.Typer(help="Supabase as a home: Realtime publication, migrations for the Supabase CLI.")
cli.add_typer(supabase_cli, name="supabase")

HostOpt = Annotated[str | None, typer.Option("--host", metavar="ADDR", show_default=False, help=env_help(
    "Listen address.", "PHONEFLEET_HOST", Settings.model_fields["host"].default))]
PortOpt = Annotated[int | None, typer.Option("--port", metavar="PORT", show_default=False, help=env_help(
    "Listen port.", "PHONEFLEET_PORT", Settings.model_fields["port"].default))]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", show_default=False, help=env_help(
    "Embedded database and artifacts.", "PHONEFLEET_DATA_DIR", Settings.model_fields["data_dir"].default))]


@cli.callback(invoke_without_command=True)
def run(ctx: typer.Context, host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """Run the server (the default command)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = _settings(host=host, port=port, data_dir=data_dir)
        return
    settings = _settings(host=host, port=port, data_dir=data_dir)
    setup_logging(settings.log_level)
    asyncio.run(serve(settings))


def _settings(**flags: Any) -> Settings:
    """The settings in force, or exit 2 with one line per bad value, naming its variable (no traceback)."""
    try:
        return Settings.from_env(**flags)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            variable = name if name.isupper() else f"{ENV_PREFIX}{name.upper()}"
            typer.echo(f"error: {variable}: {error['msg']}", err=True)
    raise typer.Exit(2)


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
        _say_admin_token(services.admin_token)
        typer.echo("add an agent: phonefleet-server agents add NAME")
        typer.echo("add a person to sign in with: phonefleet-server users add NAME --role admin")
        gc_policy.settle_after_start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _say_admin_token(admin: AdminTokenAtStart) -> None:
    """The secret only when this start generated it; otherwise where it is kept, never the token itself."""
    if admin.generated:
        typer.echo(f"admin token: {admin.generated}")
        typer.echo(f"  (generated now and shown once; kept in {admin.kept_in}, mode 0600)")
    elif admin.kept_in is not None:
        typer.echo(f"admin token kept in {admin.kept_in} (not shown again)")
    elif admin.from_env:
        typer.echo("admin token from PHONEFLEET_ADMIN_TOKEN")
    else:
        typer.echo("admin tokens: see `phonefleet-server admins list`")


T = TypeVar("T")


def _with_database(settings: Settings, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``work`` on the server's database (DATABASE_URL, or the embedded one, also while the server runs)."""

    async def go() -> T:
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
                    with audit.acting(audit.cli_actor(), "cli"):
                        return await work(conn)
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                embedded.stop()

    try:
        return asyncio.run(go())
    except ServiceError as exc:  # unknown name, name taken, ...: one line, no traceback
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


NameArg = Annotated[str, typer.Argument(metavar="NAME")]


def _command_settings(ctx: typer.Context, data_dir: Path | None) -> Settings:
    """The settings the root callback made, with a --data-dir given after the subcommand winning."""
    settings: Settings = ctx.obj
    return settings if data_dir is None else _settings(data_dir=data_dir)


CLI_NODE = "cli-" + uuid.uuid4().hex[:8]
"""The sender id of this process's bus messages (server nodes ignore only their own)."""


TeamOpt = Annotated[str, typer.Option("--team", metavar="TEAM", help="The team's name.")]


@agents_cli.command("add")
def agents_add(ctx: typer.Context, name: NameArg, team: TeamOpt = DEFAULT_TEAM_NAME, data_dir: DataOpt = None
               ) -> None:
    """Register an agent in a team and print its token (shown once; only its hash is kept). Its phones run only
    that team's jobs."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> str:
        _, token = await tokens.add_agent(conn, name, await teams.team_named(conn, team))
        return token

    typer.echo(_with_database(settings, work))


@agents_cli.command("move")
def agents_move(ctx: typer.Context, name: NameArg,
                team: Annotated[str, typer.Option("--team", metavar="TEAM", help="The team's name.")],
                data_dir: DataOpt = None) -> None:
    """Move an agent, and so its phones, to another team: from now on they run only that team's jobs (what runs
    on them now finishes). Dashboards show it at their next refresh."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> None:
        await teams.move_agent(conn, await tokens.agent_id_by_name(conn, name), await teams.team_named(conn, team))

    _with_database(settings, work)
    typer.echo(f"agent {name!r} is now in team {team!r}", err=True)


@agents_cli.command("revoke")
def agents_revoke(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Revoke an agent's token: its sockets drop at once on every server, its phones go offline and their
    work goes back to the jobs. `agents rotate NAME` gives it a new one."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> None:
        await tokens.revoke_agent(conn, await tokens.agent_id_by_name(conn, name), node=CLI_NODE)

    _with_database(settings, work)
    typer.echo(f"revoked the token of agent {name!r}; its phones go offline and their work goes back to the jobs",
               err=True)


@agents_cli.command("rotate")
def agents_rotate(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Give an agent a new token and print it (shown once); the old one is revoked as by `agents revoke`."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> str:
        return await tokens.rotate_agent(conn, await tokens.agent_id_by_name(conn, name), node=CLI_NODE)

    typer.echo(_with_database(settings, work))


@admins_cli.command("add")
def admins_add(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Make a named admin token and print it (shown once; only its hash is kept)."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> str:
        _row, token = await tokens.add_admin(conn, name)
        return token

    typer.echo(_with_database(settings, work))


@admins_cli.command("list")
def admins_list(ctx: typer.Context, data_dir: DataOpt = None) -> None:
    """Admin tokens by name, with when each was made and last used (never the secret)."""
    settings = _command_settings(ctx, data_dir)
    rows = _with_database(settings, admin_tokens_store.list_all)
    lines = [("NAME", "CREATED", "LAST USED", "")]
    if settings.admin_token:
        lines.append((ENV_ADMIN, "-", "-", "PHONEFLEET_ADMIN_TOKEN (not revocable here: change the environment)"))
    for r in rows:
        lines.append((r["name"], _when(r["created_at"]), _when(r["last_used_at"]), ""))
    width = max(len(line[0]) for line in lines)
    for name, created, used, note in lines:
        typer.echo(f"{name:<{width}}  {created:<20}  {used:<20}  {note}".rstrip())


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never"


@admins_cli.command("revoke")
def admins_revoke(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Revoke a named admin token: its dashboards drop at once on every server, its next call answers 401.
    The environment's token ('env') cannot be revoked here: change PHONEFLEET_ADMIN_TOKEN where the servers run."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> None:
        await tokens.revoke_admin(conn, name, node=CLI_NODE)

    _with_database(settings, work)
    typer.echo(f"revoked the admin token {name!r}", err=True)


RoleOpt = Annotated[Role, typer.Option("--role", help="viewer: reads; operator: also jobs and phones; admin: also "
                                                      "agents, people, tokens, policies and the distribution switch.")]


@users_cli.command("add")
def users_add(ctx: typer.Context, name: NameArg, role: RoleOpt = Role.viewer,
              team: Annotated[list[str] | None, typer.Option(
                  "--team", metavar="TEAM", show_default=False,
                  help="A team they join, by name (repeat for several; default: the team 'default').")] = None,
              data_dir: DataOpt = None) -> None:
    """Add a person and print their one-time password (shown once; they change it in the dashboard)."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> str:
        _, password = await people.add_person(conn, name, role, team or [DEFAULT_TEAM_NAME])
        return password

    typer.echo(_with_database(settings, work))


@users_cli.command("list")
def users_list(ctx: typer.Context, data_dir: DataOpt = None) -> None:
    """People by name, with their role, their teams and whether they are disabled."""
    settings = _command_settings(ctx, data_dir)
    rows = _with_database(settings, people_store.list_all)
    _table([("NAME", "ROLE", "CREATED", "TEAMS", "")] + [
        (r.name, r.role, _when(r.created_at), ",".join(r.teams) or "-", "disabled" if r.disabled else "")
        for r in rows])


def _table(lines: Sequence[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell (the last one left ragged)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        typer.echo("  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]).rstrip())


def _update(ctx: typer.Context, data_dir: Path | None, name: str, patch: PersonPatch) -> None:
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> None:
        await people.update_person(conn, name, patch, node=CLI_NODE)

    _with_database(settings, work)


@users_cli.command("set-role")
def users_set_role(ctx: typer.Context, name: NameArg,
                   role: Annotated[Role, typer.Argument(metavar="ROLE", help="viewer, operator or admin.")],
                   data_dir: DataOpt = None) -> None:
    """Change a person's role; their dashboards reconnect with it."""
    _update(ctx, data_dir, name, PersonPatch(role=role))
    typer.echo(f"{name!r} is now {role}", err=True)


@users_cli.command("set-email")
def users_set_email(ctx: typer.Context, name: NameArg,
                    email: Annotated[str, typer.Argument(metavar="EMAIL", help="Their Supabase sign-in's email; - for "
                                                                                "none.")],
                    data_dir: DataOpt = None) -> None:
    """Match a Supabase user to this person by email at their first Supabase sign-in (then by their user id)."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> None:
        await people.set_email(conn, name, None if email == "-" else email)

    _with_database(settings, work)
    typer.echo(f"{name!r}: email {email}", err=True)


@users_cli.command("disable")
def users_disable(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Disable a person: they cannot sign in, and every session and personal token of theirs ends now."""
    _update(ctx, data_dir, name, PersonPatch(disabled=True))
    typer.echo(f"disabled {name!r}; their sessions and tokens ended", err=True)


@users_cli.command("enable")
def users_enable(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Let a disabled person sign in again (their old sessions and tokens stay ended)."""
    _update(ctx, data_dir, name, PersonPatch(disabled=False))
    typer.echo(f"enabled {name!r}", err=True)


@users_cli.command("reset-password")
def users_reset_password(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Give a person a new one-time password and print it; their sessions end."""
    settings = _command_settings(ctx, data_dir)

    async def work(conn: Conn) -> str:
        return await people.reset_password(conn, name, node=CLI_NODE)

    typer.echo(_with_database(settings, work))


TeamArg = Annotated[str, typer.Argument(metavar="TEAM", help="The team's name.")]
PersonArg = Annotated[str, typer.Argument(metavar="PERSON", help="The person's name.")]


def _on_team(ctx: typer.Context, data_dir: Path | None, team: str, work: Callable[[Conn, int], Awaitable[T]]) -> T:
    """``work`` on the team named ``team`` (exit 1 when there is none)."""

    async def named(conn: Conn) -> T:
        return await work(conn, await teams.team_named(conn, team))

    return _with_database(_command_settings(ctx, data_dir), named)


@teams_cli.command("add")
def teams_add(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Make a team; then add people (`teams add-member`) and agents (`agents add --team`, `agents move`)."""

    async def work(conn: Conn) -> int:
        return (await teams.create(conn, name)).id

    team_id = _with_database(_command_settings(ctx, data_dir), work)
    typer.echo(f"team {name!r} made (id {team_id})", err=True)


@teams_cli.command("list")
def teams_list(ctx: typer.Context, data_dir: DataOpt = None) -> None:
    """Teams by name, with their id, agent count and people."""

    async def work(conn: Conn) -> list[tuple[str, ...]]:
        return [(r.name, str(r.id), str(r.agents), ",".join(r.members) or "-")
                for r in await teams_store.list_all(conn, None)]

    _table([("NAME", "ID", "AGENTS", "PEOPLE"), *_with_database(_command_settings(ctx, data_dir), work)])


@teams_cli.command("rename")
def teams_rename(ctx: typer.Context, old: Annotated[str, typer.Argument(metavar="OLD", help="Its name now.")],
                 new: Annotated[str, typer.Argument(metavar="NEW", help="Its new name.")],
                 data_dir: DataOpt = None) -> None:
    """Rename a team (what belongs to it stays)."""

    async def work(conn: Conn, team_id: int) -> None:
        await teams.rename(conn, team_id, new)

    _on_team(ctx, data_dir, old, work)
    typer.echo(f"team {old!r} is now {new!r}", err=True)


@teams_cli.command("delete")
def teams_delete(ctx: typer.Context, name: NameArg, data_dir: DataOpt = None) -> None:
    """Delete an empty team: move its agents and delete its jobs and schedules first. 'default' stays."""
    _on_team(ctx, data_dir, name, teams.delete)
    typer.echo(f"deleted team {name!r}", err=True)


@teams_cli.command("add-member")
def teams_add_member(ctx: typer.Context, team: TeamArg, person: PersonArg, data_dir: DataOpt = None) -> None:
    """Add a person to a team: they see and act on its agents, phones, jobs and schedules (as their role
    allows)."""

    async def work(conn: Conn, team_id: int) -> None:
        await teams.add_member(conn, team_id, person, node=CLI_NODE)

    _on_team(ctx, data_dir, team, work)
    typer.echo(f"{person!r} is in team {team!r}", err=True)


@teams_cli.command("remove-member")
def teams_remove_member(ctx: typer.Context, team: TeamArg, person: PersonArg, data_dir: DataOpt = None) -> None:
    """Remove a person from a team."""

    async def work(conn: Conn, team_id: int) -> None:
        await teams.remove_member(conn, team_id, person, node=CLI_NODE)

    _on_team(ctx, data_dir, team, work)
    typer.echo(f"{person!r} left team {team!r}", err=True)


@supabase_cli.command("realtime")
def supabase_realtime_command(ctx: typer.Context, data_dir: DataOpt = None) -> None:
    """Add jobs, assignments and devices to the supabase_realtime publication (migration 0014 again: for a
    publication created after phonefleet's migrations ran). Exit 1 if the publication does not exist."""
    from phonefleet.server import supabase_realtime

    state = _with_database(_command_settings(ctx, data_dir), supabase_realtime.publish)
    if not state.publication:
        typer.echo("error: no supabase_realtime publication in this database (is it a Supabase project?)", err=True)
        raise typer.Exit(1)
    identities = ", ".join(f"{t} {state.replica_identity.get(t, '?')}" for t in supabase_realtime.REALTIME_TABLES)
    typer.echo(f"published: {', '.join(state.published) or '-'}  (replica identity: {identities})")
    if state.missing:
        typer.echo(f"error: not published: {', '.join(state.missing)} (the publication belongs to another role; "
                   "see the warning above)", err=True)
        raise typer.Exit(1)


@supabase_cli.command("export-migrations")
def supabase_export_migrations(directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="The Supabase CLI's migrations folder, usually supabase/migrations.")]) -> None:
    """Write phonefleet's migrations where `supabase db push` applies them (the server adopts what it applied)."""
    from phonefleet.server.supabase_migrations import ExportConflict, export_migrations

    try:
        done = export_migrations(directory)
    except ExportConflict as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{len(done.written)} written, {len(done.unchanged)} already there, in {directory}")
    typer.echo("a database the server already migrated: mark them applied first with\n"
               f"  supabase migration repair --status applied {' '.join(done.versions)} --db-url <url>")


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
