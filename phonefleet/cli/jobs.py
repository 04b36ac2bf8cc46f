"""``phonefleet jobs``: create, inspect and steer jobs."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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
from phonefleet.cli.watch import status_line, watch
from phonefleet.client import PhonefleetClient
from phonefleet.protocol.enums import BatchAction, JobStatus, RequeueScope
from phonefleet.protocol.models import AssignmentList, Job, JobBatchResult, JobCreate
from phonefleet.protocol.titles import describe_step

jobs_app = typer.Typer(no_args_is_help=True, help="Create, inspect and steer jobs.")


def _jobs_table(jobs: Sequence[Job]) -> str:
    return table(
        ["ID", "STATUS", "PRIO", "TARGET", "DONE", "FAILED", "RUNNING", "CREATED", "TITLE"],
        [[j.id, j.status, j.priority, target_text(j), j.completed_count, j.failed_count, j.running_count,
          j.created_at, j.title] for j in jobs],
    )


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[list[JobStatus] | None, typer.Option(
        "--status", "-s", metavar="[scheduled|active|paused|completed|cancelled|blocked]",
        help="Only these (repeatable).")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", metavar="TEXT", help="Title contains.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0)] = 0,
) -> None:
    """List jobs, newest first."""
    page = run(ctx, lambda c: c.list_jobs(status=status, search=search, limit=limit, offset=offset))

    def human() -> str:
        if not page.items:
            return "no jobs"
        text = _jobs_table(page.items)
        if page.total > len(page.items):
            first = page.offset + 1
            text += f"\n{first}-{page.offset + len(page.items)} of {page.total} (--offset/--limit for more)"
        return text

    emit(ctx, page, human)


@jobs_app.command("create")
def jobs_create(  # noqa: PLR0917 (one flag each; typer passes them by keyword)
    ctx: typer.Context,
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
    run_at: Annotated[str | None, typer.Option("--run-at", metavar="TIME",
                                               help="ISO time to start at (naive = UTC).")] = None,
    depends_on: Annotated[list[int] | None, typer.Option("--depends-on", metavar="JOB_ID",
                                                         help="Start after this job completed "
                                                                              "(repeatable).")] = None,
    file: Annotated[Path | None, typer.Option("--file", metavar="FILE", exists=True, dir_okay=False,
                                              help="A JSON file holding the whole job instead of flags.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to its end with a progress bar; exit 0 when "
                                                      "every run succeeded, 1 when any failed, 2 when cancelled.")
                    ] = False,
    team: TeamOpt = None,
) -> None:
    """Create a job from flags (--url or --plan-file; --title is made from the plan when left out) or from
    --file; it is distributed at once."""
    flags = TemplateFlags(title, url, duration, plan_file, all_devices, percent, count, priority, max_parallel,
                          max_retries, timeout,
                          {"tags": tag, "models": model, "serials": serial, "agents": agent})
    if file is not None:
        if flags.given() or run_at is not None or depends_on:
            usage_error("--file holds the whole job; give no other job flags with it")
        body = read_json(file)
    else:
        body = flags.fields()
        if run_at is not None:
            body["run_at"] = run_at
        if depends_on:
            body["depends_on"] = depends_on
    job = validated(JobCreate, body, "job")

    async def create(c: PhonefleetClient) -> Job:
        named = await team_id(c, team)
        return await c.create_job(job if named is None else job.model_copy(update={"team_id": named}))

    created = run(ctx, create)
    if wait:
        if not options(ctx).as_json:
            typer.echo(f"created {job_line(created)} (target {target_text(created)}); Ctrl-C stops watching")
        watch(ctx, created.id, created)
    emit(ctx, created, lambda: f"created {job_line(created)} (target {target_text(created)})")


@jobs_app.command("watch")
def jobs_watch(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Follow a job to its end with a live progress bar (done, failed, running, waiting). Exit 0 when every run
    succeeded, 1 when any failed (or the job is blocked), 2 when it was cancelled."""
    watch(ctx, job_id)


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One job: its settings, its plan step by step, its progress bar and its assignments counted by status."""

    async def fetch(c: PhonefleetClient) -> tuple[Job, AssignmentList]:
        return await c.get_job(job_id), await c.job_assignments(job_id)

    job, assignments = run(ctx, fetch)

    def human() -> str:
        counts = Counter(str(a.status) for a in assignments.items)
        rows: list[list[Any]] = [
            ["title", job.title], ["status", job.status], ["target", target_text(job)], ["priority", job.priority],
            ["timeout", f"{job.timeout_sec}s"], ["max retries", job.max_retries],
            ["max parallel", job.max_parallel], ["run at", job.run_at], ["depends on", job.depends_on],
            ["schedule", job.schedule_id], ["created", job.created_at], ["activated", job.activated_at],
            ["finished", job.finished_at],
            ["assignments", " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"],
        ]
        if job.blocked_reason:
            rows.insert(2, ["blocked", job.blocked_reason])
        plan = "".join(f"\n  {n}. {describe_step(step)}" for n, step in enumerate(job.plan, 1))
        return f"job {job.id}\n" + table(None, rows) + "\nplan" + plan

    emit(ctx, job, human)
    if not options(ctx).as_json:
        Console(highlight=False).print(status_line(job), soft_wrap=True)


IdsArg = Annotated[list[int], typer.Argument(metavar="ID...", help="One or more job ids.")]


def _steer(ctx: typer.Context, action: BatchAction, ids: list[int]) -> None:
    """One id: PATCH, answering the job. Several: one batch request, answering what changed and what did not."""
    if len(ids) == 1:

        async def one(c: PhonefleetClient) -> Job:
            steer = {BatchAction.pause: c.pause_job, BatchAction.resume: c.resume_job,
                     BatchAction.cancel: c.cancel_job}[action]
            return await steer(ids[0])

        job = run(ctx, one)
        emit(ctx, job, lambda: job_line(job))
        return
    result: JobBatchResult = run(ctx, lambda c: c.batch_ids(action, ids))
    done = {BatchAction.pause: "paused", BatchAction.resume: "resumed", BatchAction.cancel: "cancelled"}[action]
    emit(ctx, result, lambda: f"{done} jobs: {cell(result.changed)}" if result.changed else "nothing changed")
    if result.failed:
        for failure in result.failed:
            prefix = "" if f"job {failure.id}" in failure.message else f"job {failure.id}: "
            typer.echo(f"error: {prefix}{failure.message} ({failure.code})", err=True)
        raise typer.Exit(1)


@jobs_app.command("pause")
def jobs_pause(ctx: typer.Context, ids: IdsArg) -> None:
    """Pause jobs: unstarted work waits and no new phones take them; runs already going finish."""
    _steer(ctx, BatchAction.pause, ids)


@jobs_app.command("resume")
def jobs_resume(ctx: typer.Context, ids: IdsArg) -> None:
    """Resume paused jobs."""
    _steer(ctx, BatchAction.resume, ids)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, ids: IdsArg) -> None:
    """Cancel jobs; their work stops on the phones."""
    _steer(ctx, BatchAction.cancel, ids)


@jobs_app.command("delete")
def jobs_delete(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete a job and its history, cancelling its work on the phones."""
    run(ctx, lambda c: c.delete_job(job_id))
    if not options(ctx).as_json:
        typer.echo(f"deleted job {job_id}")


@jobs_app.command("requeue")
def jobs_requeue(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    every: Annotated[bool, typer.Option("--all", help="Run every ended slot again, not only the failed ones.")
                     ] = False,
) -> None:
    """Run a job's failed (or, with --all, every ended) slots again."""
    scope = RequeueScope.all if every else RequeueScope.failed
    result = run(ctx, lambda c: c.requeue_job(job_id, scope))
    emit(ctx, result, lambda: f"requeued {result.requeued} slot(s); {job_line(result.job)}")


@jobs_app.command("failed")
def jobs_failed(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option("--offset", metavar="N", min=0)] = 0,
    attempts: Annotated[bool, typer.Option(
        "--attempts", help="Every failed attempt, also those retried on another phone or requeued.")] = False,
) -> None:
    """Dead letters: assignments that failed or timed out for good, with their errors."""
    page = run(ctx, lambda c: c.list_assignments(status="failed", limit=limit, offset=offset) if attempts
                else c.list_assignments(limit=limit, offset=offset, dead=True))

    def human() -> str:
        if not page.items:
            return "no failed assignments"
        text = table(["ID", "JOB", "SERIAL", "STATUS", "ATTEMPT", "RETRIED", "FINISHED", "CODE", "ERROR"],
                     [[a.id, a.job_id, a.serial, a.status, a.attempt, a.retried, a.finished_at, a.error_code,
                       (a.error or "").splitlines()[0][:100] if a.error else None] for a in page.items])
        if page.total > len(page.items):
            text += f"\n{len(page.items)} of {page.total} (--offset/--limit for more)"
        return text

    emit(ctx, page, human)
