"""``phonefleet scheduler``: the fleet-wide switch for new assignments."""

from typing import Any

import typer

from phonefleet.cli.output import cell, counts_text, emit, table
from phonefleet.cli.session import run
from phonefleet.protocol.models import SchedulerStatus

scheduler_app = typer.Typer(no_args_is_help=True, help="The fleet-wide switch for new assignments.")


def _scheduler_text(s: SchedulerStatus) -> str:
    rows: list[list[Any]] = [
        ["scheduler", "running" if s.running else "stopped (no new assignments; running work finishes)"],
        ["changed", f"{cell(s.changed_at)}" + (f" by {s.changed_by}" if s.changed_by else "")],
        ["jobs", counts_text(s.jobs)], ["open assignments", counts_text(s.assignments)],
        ["connected agents", s.connected_agents], ["idle phones", s.idle_devices],
        ["next schedule", f"{s.next_schedule.name} (#{s.next_schedule.id}) at {cell(s.next_schedule.next_run_at)}"
         if s.next_schedule else None],
    ]
    return table(None, rows)


@scheduler_app.command("status")
def scheduler_status(ctx: typer.Context) -> None:
    """Whether new work is handed out, and what is waiting."""
    status = run(ctx, lambda c: c.scheduler_status())
    emit(ctx, status, lambda: _scheduler_text(status))


@scheduler_app.command("stop")
def scheduler_stop(ctx: typer.Context) -> None:
    """Hand out no new assignments anywhere; running work finishes."""
    status = run(ctx, lambda c: c.stop_scheduler())
    emit(ctx, status, lambda: _scheduler_text(status))


@scheduler_app.command("start")
def scheduler_start(ctx: typer.Context) -> None:
    """Hand out assignments again."""
    status = run(ctx, lambda c: c.start_scheduler())
    emit(ctx, status, lambda: _scheduler_text(status))
