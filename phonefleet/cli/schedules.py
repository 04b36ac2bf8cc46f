"""``phonefleet schedules``: recurring jobs, fired by a cron rule or an interval."""

from pathlib import Path
from typing import Annotated, Any

import typer

from phonefleet.cli.config import options
from phonefleet.cli.errors import usage_error
from phonefleet.cli.output import cell, emit, job_line, table, target_text
from phonefleet.cli.session import run
from phonefleet.cli.teams import TeamOpt, team_id
from phonefleet.cli.templates import (
    AllOpt,
    CountOpt,
    DurationOpt,
    JobTimeoutOpt,
    MaxParallelOpt,
    MaxRetriesOpt,
    ModelOpt,
    OnAgentOpt,
    PercentOpt,
    PlanFileOpt,
    PriorityOpt,
    SerialOpt,
    TagOpt,
    TemplateFlags,
    TitleOpt,
    UrlOpt,
    read_json,
    validated,
)
from phonefleet.client import PhonefleetClient
from phonefleet.protocol.enums import MisfirePolicy
from phonefleet.protocol.models import Schedule, ScheduleCreate, SchedulePatch

schedules_app = typer.Typer(no_args_is_help=True, help="Recurring jobs.")


def _rule(s: Schedule) -> str:
    return f"{s.cron} ({s.timezone})" if s.cron else f"every {s.interval_sec}s"


def _schedule_line(s: Schedule) -> str:
    state = f"next {cell(s.next_run_at)}" if s.enabled else "disabled"
    return f"schedule {s.id} {s.name}: {_rule(s)}, {state}"


@schedules_app.command("list")
def schedules_list(ctx: typer.Context) -> None:
    """Every schedule, with its next firing."""
    page = run(ctx, lambda c: c.list_schedules())

    def human() -> str:
        if not page.items:
            return "no schedules"
        return table(["ID", "NAME", "ENABLED", "RULE", "NEXT RUN", "LAST RUN", "LAST JOB", "JOB TITLE"],
                     [[s.id, s.name, s.enabled, _rule(s), s.next_run_at, s.last_run_at, s.last_job_id,
                       s.template.title] for s in page.items])

    emit(ctx, page, human)


@schedules_app.command("create")
def schedules_create(  # noqa: PLR0917 (one flag each; typer passes them by keyword)
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="The schedule's name.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", metavar="CRON",
                                             help='Five fields, e.g. "0 3 * * 1-5", or @daily.')] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", metavar="ZONE",
                                                 help="IANA zone of --cron (UTC).")] = None,
    every: Annotated[int | None, typer.Option("--every", help="Instead of --cron: fire every SECONDS.",
                                              metavar="SECONDS")] = None,
    misfire: Annotated[MisfirePolicy | None, typer.Option("--misfire", metavar="[skip|run_once]",
                                                          help="Firings missed while down.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    title: TitleOpt = None,
    url: UrlOpt = None,
    duration: DurationOpt = None,
    plan_file: PlanFileOpt = None,
    all_devices: AllOpt = False,
    percent: PercentOpt = None,
    count: CountOpt = None,
    priority: PriorityOpt = None,
    max_parallel: MaxParallelOpt = None,
    max_retries: MaxRetriesOpt = None,
    timeout: JobTimeoutOpt = None,
    tag: TagOpt = None,
    model: ModelOpt = None,
    serial: SerialOpt = None,
    agent: OnAgentOpt = None,
    file: Annotated[Path | None, typer.Option(
        "--file", metavar="FILE", exists=True, dir_okay=False,
        help='JSON: a job template (then --name and --cron/--every apply), or a whole schedule with "template".',
    )] = None,
    team: TeamOpt = None,
) -> None:
    """Create a schedule: a job template fired by --cron or --every."""
    flags = TemplateFlags(title, url, duration, plan_file, all_devices, percent, count, priority, max_parallel,
                          max_retries, timeout,
                          {"tags": tag, "models": model, "serials": serial, "agents": agent})
    rule: dict[str, Any] = {"name": name, "cron": cron, "timezone": timezone, "interval_sec": every,
                            "misfire_policy": misfire, "enabled": False if disabled else None}
    rule = {k: v for k, v in rule.items() if v is not None}
    if file is not None:
        if flags.given():
            usage_error("--file holds the job template; give no template flags with it")
        data = read_json(file)
        if isinstance(data, dict) and "template" in data:
            if rule:
                usage_error("--file holds the whole schedule; give no schedule flags with it")
            body = data
        else:
            body = {**rule, "template": data}
    else:
        body = {**rule, "template": flags.fields()}
    if "name" not in body:
        usage_error("--name is required")
    if file is None and cron is None and every is None:
        usage_error('give --cron "..." or --every SECONDS')
    schedule = validated(ScheduleCreate, body, "schedule")

    async def create(c: PhonefleetClient) -> Schedule:
        named = await team_id(c, team)
        return await c.create_schedule(schedule if named is None else schedule.model_copy(update={"team_id": named}))

    created = run(ctx, create)
    emit(ctx, created, lambda: f"created {_schedule_line(created)}")


ScheduleArg = Annotated[int, typer.Argument(metavar="ID")]


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """One schedule and its job template."""
    s = run(ctx, lambda c: c.get_schedule(schedule_id))

    def human() -> str:
        t = s.template
        return f"schedule {s.id}\n" + table(None, [
            ["name", s.name], ["enabled", s.enabled], ["rule", _rule(s)], ["misfire", s.misfire_policy],
            ["next run", s.next_run_at], ["last run", s.last_run_at], ["last job", s.last_job_id],
            ["job title", t.title], ["job target", target_text(t)], ["job steps", len(t.plan)],
            ["job priority", t.priority],
        ])

    emit(ctx, s, human)


@schedules_app.command("run-now")
def schedules_run_now(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """Fire a schedule now, outside its rule; prints the job it made."""
    job = run(ctx, lambda c: c.run_schedule(schedule_id))
    emit(ctx, job, lambda: f"created {job_line(job)}")


def _set_enabled(ctx: typer.Context, schedule_id: int, enabled: bool) -> None:
    s = run(ctx, lambda c: c.update_schedule(schedule_id, SchedulePatch(enabled=enabled)))
    emit(ctx, s, lambda: _schedule_line(s))


@schedules_app.command("enable")
def schedules_enable(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """Switch a schedule on; it fires from its next due time."""
    _set_enabled(ctx, schedule_id, True)


@schedules_app.command("disable")
def schedules_disable(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """Switch a schedule off; jobs it already made are untouched."""
    _set_enabled(ctx, schedule_id, False)


@schedules_app.command("delete")
def schedules_delete(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """Delete a schedule; jobs it already made are untouched."""
    run(ctx, lambda c: c.delete_schedule(schedule_id))
    if not options(ctx).as_json:
        typer.echo(f"deleted schedule {schedule_id}")
