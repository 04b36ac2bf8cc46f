"""``phonefleet teams``: the teams you belong to (an admin: every team), and ``--team`` of what you create."""

from collections.abc import Sequence
from typing import Annotated

import typer

from phonefleet.cli.errors import fail
from phonefleet.cli.output import emit, table
from phonefleet.cli.session import run
from phonefleet.client import PhonefleetClient
from phonefleet.protocol.teams import Team

TeamOpt = Annotated[str | None, typer.Option(
    "--team", metavar="ID|NAME", show_default=False,
    help="The team it belongs to, by id or name: it runs only on that team's phones (default: your only team; "
         "an admin's: 'default'). `phonefleet teams` lists yours.")]


def _teams_table(teams: Sequence[Team]) -> str:
    if not teams:
        return "no teams"
    return table(["ID", "NAME", "AGENTS", "PEOPLE"],
                 [[t.id, t.name, t.agents, ", ".join(t.members) or "-"] for t in teams])


def teams(ctx: typer.Context) -> None:
    """The teams you belong to (an admin: every team), with their agent count and people."""
    found = run(ctx, lambda c: c.list_teams())
    emit(ctx, found, lambda: _teams_table(found))


async def team_id(client: PhonefleetClient, team: str | None) -> int | None:
    """The id ``--team`` names: digits are an id (the server checks it), anything else a name among your teams."""
    if team is None or (team.isascii() and team.isdigit()):
        return None if team is None else int(team)
    for found in await client.list_teams():
        if found.name == team:
            return found.id
    fail(f"no team named {team!r} among yours", "`phonefleet teams` lists them")
