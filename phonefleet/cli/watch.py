"""Follow a job to its end: a live segmented bar (done, failed, running, waiting) and an exit code that says
how it ended: 0 every run succeeded, 1 a run failed (or the job is blocked), 2 cancelled."""

import asyncio
import sys
import time
from typing import NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from phonefleet.cli.config import options
from phonefleet.cli.session import run
from phonefleet.client import PhonefleetClient, ServerUnreachable
from phonefleet.protocol.enums import JobStatus
from phonefleet.protocol.models import Job

POLL_SEC = 1.0
"""How often the job is asked for: modest, and a run of a few seconds still shows moving."""
UNREACHABLE_SEC = 60.0
"""A server gone this long ends the watch (exit 1); a restart shorter than that is waited out."""
BAR_WIDTH = 40

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2


def counts_line(job: Job) -> str:
    """"9 done · 1 failed · 0 running of 10" (the dashboard's wording)."""
    of = f" of {job.target_count}" if job.target_count is not None else ""
    return f"{job.completed_count} done · {job.failed_count} failed · {job.running_count} running{of}"


def outcome(job: Job) -> str:
    """How the job stands in words: "completed with failures", never plain "completed" after a failure."""
    if job.status == JobStatus.completed and job.failed_count:
        return "completed with failures"
    if job.status == JobStatus.blocked and job.blocked_reason:
        return f"blocked: {job.blocked_reason}"
    if job.status == JobStatus.paused and job.running_count:
        return f"pausing: {job.running_count} running will finish"
    return str(job.status)


def ended(job: Job) -> bool:
    """Nothing more happens without an operator: completed, cancelled, or blocked by a failed prerequisite."""
    return job.status in (JobStatus.completed, JobStatus.cancelled, JobStatus.blocked)


def exit_code(job: Job) -> int:
    if job.status == JobStatus.cancelled:
        return EXIT_CANCELLED
    if job.status == JobStatus.completed and not job.failed_count:
        return EXIT_SUCCEEDED
    return EXIT_FAILED


def progress_bar(job: Job, width: int = BAR_WIDTH) -> Text:
    """Segments in proportion: done (green), failed (red), running (blue), waiting (grey); failures never
    count toward success."""
    total = job.target_count or 0
    parts = [(job.completed_count, "green"), (job.failed_count, "red"), (job.running_count, "blue")]
    bar = Text()
    used = 0
    for count, colour in parts:
        cells = min(width - used, round(width * count / total)) if total else 0
        if count and not cells and used < width:
            cells = 1  # one failure among 500 is still seen
        bar.append("━" * cells, style=colour)
        used += cells
    bar.append("━" * (width - used), style="grey37")
    return bar


def status_line(job: Job, width: int = BAR_WIDTH) -> Text:
    """``job 12 ━━━━━━━━━━ 9 done · 1 failed · 0 running of 10  completed with failures``."""
    line = Text(f"job {job.id} ")
    line.append_text(progress_bar(job, width))
    line.append(f" {counts_line(job)}  ")
    state = outcome(job)
    colour = {EXIT_SUCCEEDED: "green", EXIT_FAILED: "red", EXIT_CANCELLED: "yellow"}[exit_code(job)] \
        if ended(job) else "blue"
    if job.status == JobStatus.completed and job.failed_count:
        colour = "dark_orange"
    line.append(state, style=colour)
    return line


def watch(ctx: typer.Context, job_id: int, first: Job | None = None) -> NoReturn:
    """Poll the job until it ends, drawing the bar (live on a terminal; a line per change otherwise, on
    stderr with --json); then its final line (or JSON) and the exit code of its outcome."""
    as_json = options(ctx).as_json
    console = Console(stderr=as_json, highlight=False)
    live = console.is_terminal

    async def follow(client: PhonefleetClient) -> Job:
        job = first or await client.get_job(job_id)
        shown = ""
        lost_since: float | None = None
        with Live(status_line(job), console=console, auto_refresh=False, transient=True) if live \
                else _NoLive() as display:
            while True:
                line = status_line(job)
                if live:
                    display.update(line, refresh=True)
                elif line.plain != shown and not ended(job):
                    console.print(line, soft_wrap=True)
                shown = line.plain
                if ended(job):
                    return job
                await asyncio.sleep(POLL_SEC)
                try:
                    job = await client.get_job(job_id)
                    lost_since = None
                except ServerUnreachable:
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > UNREACHABLE_SEC:
                        raise
                    if live:
                        display.update(Text(f"job {job_id}: server unreachable, retrying ...", style="yellow"),
                                       refresh=True)

    try:
        job = run(ctx, follow)
    except KeyboardInterrupt:
        typer.echo(f"stopped watching; job {job_id} goes on (phonefleet jobs watch {job_id})", err=True)
        sys.exit(130)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        console.print(status_line(job), soft_wrap=True)
    raise typer.Exit(exit_code(job))


class _NoLive:
    """Stands in for rich's Live when the output is not a terminal (a log, a pipe, a test)."""

    def __enter__(self) -> "_NoLive":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, renderable: Text, *, refresh: bool = False) -> None:
        return None

