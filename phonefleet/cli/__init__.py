"""``phonefleet``: operate a running server from a terminal: jobs, phones, agents, schedules, the scheduler.

Human tables by default, ``--json`` for the contract's JSON. Exit codes: 0 done, 1 the server refused or
could not be reached, 2 a usage error (bad flags, unreadable files, a body that fails the contract locally).
``jobs create --wait`` and ``jobs watch`` end with the job's outcome instead: 0 every run succeeded, 1 a run
failed (or the job is blocked), 2 cancelled.
"""

import sys

import typer

from phonefleet.cli.agents import agents_app
from phonefleet.cli.config import global_options
from phonefleet.cli.devices import devices_app
from phonefleet.cli.fleet import fleet_app
from phonefleet.cli.jobs import jobs_app
from phonefleet.cli.scheduler import scheduler_app
from phonefleet.cli.schedules import schedules_app
from phonefleet.cli.stats import stats
from phonefleet.cli.teams import teams
from phonefleet.cli_help import APP_SETTINGS

__all__ = ["app", "main"]

app = typer.Typer(**APP_SETTINGS, no_args_is_help=True,
                  help="Operate a phonefleet server: jobs, phones, agents, schedules.")
app.callback()(global_options)
app.add_typer(jobs_app, name="jobs")
app.add_typer(devices_app, name="devices")
app.add_typer(fleet_app, name="fleet")
app.add_typer(agents_app, name="agents")
app.add_typer(schedules_app, name="schedules")
app.add_typer(scheduler_app, name="scheduler")
app.command("stats")(stats)
app.command("teams")(teams)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

