"""``phonefleet agents``: the PC agents, their tokens and how many phones each may run at once."""

from collections.abc import Sequence
from typing import Annotated

import typer

from phonefleet.cli.errors import usage_error
from phonefleet.cli.output import emit, table
from phonefleet.cli.session import run
from phonefleet.cli.teams import team_id
from phonefleet.client import PhonefleetClient
from phonefleet.protocol.models import Agent

agents_app = typer.Typer(no_args_is_help=True, help="The PC agents.")


def _agents_table(agents: Sequence[Agent]) -> str:
    if not agents:
        return "no agents"
    return table(["ID", "NAME", "TEAM", "STATUS", "CONNECTED", "PHONES", "MAX RUNNING", "VERSION", "HOST",
                  "LAST SEEN"],
                 [[a.id, a.name, a.team_id, a.status, a.connected, a.device_count, a.max_running, a.version,
                   a.hostname, a.last_seen_at] for a in agents])


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> None:
    """Every agent, connected or not."""
    agents = run(ctx, lambda c: c.list_agents())
    emit(ctx, agents, lambda: _agents_table(agents))


@agents_app.command("add")
def agents_add(ctx: typer.Context, name: str) -> None:
    """Register an agent and print its token (shown once)."""
    created = run(ctx, lambda c: c.create_agent(name))
    emit(ctx, created, lambda: f"agent {created.agent.id} {created.agent.name}; token (shown once):\n"
                                f"{created.token}")


@agents_app.command("limit")
def agents_limit(
    ctx: typer.Context,
    agent_id: Annotated[int, typer.Argument(metavar="ID")],
    limit: Annotated[str, typer.Argument(metavar="N|none", help="Phones that may run at once; none: no limit.")],
) -> None:
    """Cap how many of an agent's phones run at once (e.g. its USB hub's budget)."""
    max_running: int | None
    if limit.lower() == "none":
        max_running = None
    elif limit.isascii() and limit.isdigit() and int(limit) >= 1:
        max_running = int(limit)
    else:
        raise typer.BadParameter("a positive whole number, or none", param_hint="N|none")
    agent = run(ctx, lambda c: c.set_agent_max_running(agent_id, max_running))
    emit(ctx, agent, lambda: f"agent {agent.id} {agent.name}: max running "
                              f"{agent.max_running if agent.max_running is not None else 'unlimited'}")


@agents_app.command("move")
def agents_move(
    ctx: typer.Context,
    agent_id: Annotated[int, typer.Argument(metavar="ID")],
    team: Annotated[str, typer.Option("--team", metavar="ID|NAME", help="The team to move it to.")],
) -> None:
    """Move an agent, and so its phones, to another team (admins): they run only that team's jobs from then on;
    what runs on them now finishes."""
    if not team:
        usage_error("--team names a team")

    async def move(c: PhonefleetClient) -> Agent:
        named = await team_id(c, team)
        assert named is not None
        return await c.move_agent(agent_id, named)

    agent = run(ctx, move)
    emit(ctx, agent, lambda: f"agent {agent.id} {agent.name}: team {agent.team_id}")
