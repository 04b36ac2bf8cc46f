"""``phonefleet``: operate a running server from a terminal: jobs, phones, agents, schedules, the scheduler.

Human tables by default, ``--json`` for the contract's JSON. Exit codes: 0 done, 1 the server refused or
could not be reached, 2 a usage error (bad flags, unreadable files, a body that fails the contract locally).
"""

import asyncio
import json
import os
import sys
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from phonefleet.client import DEFAULT_TIMEOUT_SEC, ApiError, PhonefleetClient, ServerUnreachable, UnexpectedAnswer
from phonefleet.protocol.enums import BatchAction, JobStatus, MisfirePolicy, RequeueScope
from phonefleet.protocol.models import (
    Agent,
    AssignmentList,
    Device,
    Job,
    JobBatchResult,
    JobCreate,
    JobTemplate,
    Schedule,
    ScheduleCreate,
    SchedulePatch,
    SchedulerStatus,
    Stats,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8700"
CONFIG_ENV = "PHONEFLEET_CLI_CONFIG"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Operate a phonefleet server: jobs, phones, agents, schedules.")
jobs_app = typer.Typer(no_args_is_help=True, help="Create, inspect and steer jobs.")
devices_app = typer.Typer(no_args_is_help=True, help="The phones.")
agents_app = typer.Typer(no_args_is_help=True, help="The PC agents.")
schedules_app = typer.Typer(no_args_is_help=True, help="Recurring jobs.")
scheduler_app = typer.Typer(no_args_is_help=True, help="The fleet-wide switch for new assignments.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(devices_app, name="devices")
app.add_typer(agents_app, name="agents")
app.add_typer(schedules_app, name="schedules")
app.add_typer(scheduler_app, name="scheduler")


# ---------------------------------------------------------------------- connection and global options


def config_path() -> Path:
    """``$PHONEFLEET_CLI_CONFIG``, else ``~/.config/phonefleet/cli.toml`` (honouring XDG_CONFIG_HOME)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "phonefleet" / "cli.toml"


def _read_config() -> dict[str, Any]:
    path = config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _usage_error(f"cannot read {path}: {exc}")
    for key in ("url", "token"):
        if key in data and not isinstance(data[key], str):
            _usage_error(f"{path}: {key} must be a string")
    return data


def _data_dir_token() -> str | None:
    """The token a local server wrote on its first start (``./.phonefleet/admin_token``)."""
    path = Path(os.environ.get("PHONEFLEET_DATA_DIR") or ".phonefleet") / "admin_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class Options:
    """The global options; the connection is resolved only when a command talks to the server."""

    url: str | None
    token: str | None
    as_json: bool
    timeout: float

    def connection(self) -> tuple[str, str | None]:
        """URL: flag/env, config file, default. Token: flag/env, config file, the local data dir's file."""
        config = _read_config() if self.url is None or self.token is None else {}
        url = self.url or config.get("url") or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            _usage_error(f"--url must be an http:// or https:// address, not {url!r}")
        token = self.token or config.get("token") or _data_dir_token()
        return url, token


@app.callback()
def global_options(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", envvar="PHONEFLEET_URL", show_default=DEFAULT_URL,
                                            help="The server.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="PHONEFLEET_TOKEN", show_default=False,
                                              help="Admin token; else cli.toml's, else ./.phonefleet/admin_token.")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON (one document) instead of "
                                                         "tables.")] = False,
    timeout: Annotated[float, typer.Option("--request-timeout", envvar="PHONEFLEET_TIMEOUT", min=0.1,
                                           help="Seconds to wait for each answer.")] = DEFAULT_TIMEOUT_SEC,
) -> None:
    """Operate a phonefleet server: jobs, phones, agents, schedules."""
    ctx.obj = Options(url=url, token=token, as_json=as_json, timeout=timeout)


def _options(ctx: typer.Context) -> Options:
    opts = ctx.find_object(Options)
    assert opts is not None, "the root callback sets the options"
    return opts


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _fail(message: str, *more: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    for line in more:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(1)


def _api_failure(exc: ApiError) -> NoReturn:
    """The server's message, then each field at fault (unless the message already says all of it)."""
    lines = [f"{d.field}: {d.message}" if d.field else d.message for d in exc.details]
    if lines == [exc.message]:
        lines = []
    if exc.status == 401:
        lines.append(f"give a token: --token, PHONEFLEET_TOKEN, or token = \"...\" in {config_path()}")
    _fail(f"{exc.message} ({exc.status} {exc.code})", *lines)


def _run(ctx: typer.Context, work: Callable[[PhonefleetClient], Awaitable[T]]) -> T:
    """Run one conversation with the server on a fresh event loop; failures become messages and exit 1."""
    opts = _options(ctx)
    url, token = opts.connection()

    async def go() -> T:
        async with PhonefleetClient(url, token, timeout=opts.timeout) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        _api_failure(exc)
    except ServerUnreachable as exc:
        _fail(str(exc), "is the server running? set --url or PHONEFLEET_URL")
    except UnexpectedAnswer as exc:
        _fail(str(exc), "is this CLI the same version as the server?")


# ---------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """Plain-text columns aligned on the widest cell; no trailing spaces, so it diffs and greps well."""
    cells = [[_cell(v) for v in row] for row in rows]
    if headers is not None:
        cells.insert(0, list(headers))
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(len(r) for r in cells))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells)


def _emit(ctx: typer.Context, data: BaseModel | list[Any], human: Callable[[], str]) -> None:
    """One JSON document with --json (the API's model, as the server answers it), else the human view."""
    if _options(ctx).as_json:
        if isinstance(data, BaseModel):
            typer.echo(data.model_dump_json(indent=2))
        else:
            typer.echo(TypeAdapter(list[Any]).dump_json(data, indent=2).decode())
        return
    text = human()
    if text:
        typer.echo(text)


def _target(job: Job | JobTemplate) -> str:
    if job.target_type == "all_devices":
        text = "all"
    elif job.target_type == "percentage":
        text = f"{job.target_value}%"
    else:
        text = f"{job.target_value} phone{'' if job.target_value == 1 else 's'}"
    count = getattr(job, "target_count", None)
    return f"{text} ({count})" if count is not None and job.target_type != "device_count" else text


def _jobs_table(jobs: Sequence[Job]) -> str:
    return table(
        ["ID", "STATUS", "PRIO", "TARGET", "DONE", "FAILED", "RUNNING", "CREATED", "TITLE"],
        [[j.id, j.status, j.priority, _target(j), j.completed_count, j.failed_count, j.running_count,
          j.created_at, j.title] for j in jobs],
    )


def _job_line(job: Job) -> str:
    return f"job {job.id} {job.status}: {job.title}"


# ---------------------------------------------------------------------- job templates from flags

TitleOpt = Annotated[str | None, typer.Option("--title", help="The job's title.")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Plan: open this URL (an open_url step).")]
DurationOpt = Annotated[float | None, typer.Option("--duration", help="With --url: seconds to stay on the page.")]
PlanFileOpt = Annotated[Path | None, typer.Option("--plan-file", exists=True, dir_okay=False,
                                                  help="Plan: a JSON list of steps.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Target every matching phone (the default).")]
PercentOpt = Annotated[int | None, typer.Option("--percent", help="Target this percentage of the phones.")]
CountOpt = Annotated[int | None, typer.Option("--count", help="Target this many phones.")]
PriorityOpt = Annotated[int | None, typer.Option("--priority", help="Higher runs first (-1000..1000).")]
MaxParallelOpt = Annotated[int | None, typer.Option("--max-parallel", help="At most this many phones at once.")]
MaxRetriesOpt = Annotated[int | None, typer.Option("--max-retries", help="Retries of a failed phone's run.")]
JobTimeoutOpt = Annotated[int | None, typer.Option("--timeout", help="Seconds one phone may take.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only phones carrying this tag (repeatable).")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", help="Only phones of this model (repeatable).")]
SerialOpt = Annotated[list[str] | None, typer.Option("--serial", help="Only this phone (repeatable).")]
OnAgentOpt = Annotated[list[str] | None, typer.Option("--agent", help="Only phones of this agent (repeatable).")]


@dataclass
class TemplateFlags:
    """The flags that describe a job template; only the given ones reach the body (server defaults apply)."""

    title: str | None = None
    url: str | None = None
    duration: float | None = None
    plan_file: Path | None = None
    all_devices: bool = False
    percent: int | None = None
    count: int | None = None
    priority: int | None = None
    max_parallel: int | None = None
    max_retries: int | None = None
    timeout: int | None = None
    filters: dict[str, list[str] | None] = field(default_factory=dict)

    def given(self) -> bool:
        values = [self.title, self.url, self.duration, self.plan_file, self.percent, self.count, self.priority,
                  self.max_parallel, self.max_retries, self.timeout]
        return self.all_devices or any(v is not None for v in values) or any(self.filters.values())

    def fields(self) -> dict[str, Any]:
        if self.title is None:
            _usage_error("--title is required (or give --file)")
        if (self.url is None) == (self.plan_file is None):
            _usage_error("give the plan as --url or --plan-file (one of them)")
        if self.duration is not None and self.url is None:
            _usage_error("--duration goes with --url")
        if sum([self.all_devices, self.percent is not None, self.count is not None]) > 1:
            _usage_error("give one of --all, --percent and --count")
        body: dict[str, Any] = {"title": self.title}
        if self.url is not None:
            step: dict[str, Any] = {"type": "open_url", "url": self.url}
            if self.duration is not None:
                step["duration_sec"] = self.duration
            body["plan"] = [step]
        else:
            assert self.plan_file is not None
            plan = _read_json(self.plan_file)
            if isinstance(plan, dict) and "plan" in plan:
                plan = plan["plan"]
            if not isinstance(plan, list):
                _usage_error(f"{self.plan_file}: a JSON list of steps is expected")
            body["plan"] = plan
        if self.percent is not None:
            body["target_type"], body["target_value"] = "percentage", self.percent
        elif self.count is not None:
            body["target_type"], body["target_value"] = "device_count", self.count
        else:
            body["target_type"] = "all_devices"
        optional = {"priority": self.priority, "max_parallel": self.max_parallel,
                    "max_retries": self.max_retries, "timeout_sec": self.timeout}
        body.update({k: v for k, v in optional.items() if v is not None})
        filters = {k: v for k, v in self.filters.items() if v}
        if filters:
            body["filters"] = filters
        return body


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        _usage_error(f"cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:
        _usage_error(f"{path} is not valid JSON: {exc}")


def _validated(model: type[T], data: Any, what: str) -> T:
    """Check a body against the contract before sending it: a mistake is a usage error with the field named."""
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False)[:20]:
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}" if loc else err["msg"])
        typer.echo(f"error: invalid {what}", err=True)
        for line in lines:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(2) from None


# ---------------------------------------------------------------------- jobs


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[list[JobStatus] | None, typer.Option("--status", "-s", help="Only these (repeatable).")
                      ] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="Title contains.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
) -> None:
    """List jobs, newest first."""
    page = _run(ctx, lambda c: c.list_jobs(status=status, search=search, limit=limit, offset=offset))

    def human() -> str:
        if not page.items:
            return "no jobs"
        text = _jobs_table(page.items)
        if page.total > len(page.items):
            first = page.offset + 1
            text += f"\n{first}-{page.offset + len(page.items)} of {page.total} (--offset/--limit for more)"
        return text

    _emit(ctx, page, human)


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
    run_at: Annotated[str | None, typer.Option("--run-at", help="ISO time to start at (naive = UTC).")] = None,
    depends_on: Annotated[list[int] | None, typer.Option("--depends-on", help="Start after this job completed "
                                                                              "(repeatable).")] = None,
    file: Annotated[Path | None, typer.Option("--file", exists=True, dir_okay=False,
                                              help="A JSON file holding the whole job instead of flags.")] = None,
) -> None:
    """Create a job from flags (--title with --url or --plan-file) or from --file; it is distributed at once."""
    flags = TemplateFlags(title, url, duration, plan_file, all_devices, percent, count, priority, max_parallel,
                          max_retries, timeout,
                          {"tags": tag, "models": model, "serials": serial, "agents": agent})
    if file is not None:
        if flags.given() or run_at is not None or depends_on:
            _usage_error("--file holds the whole job; give no other job flags with it")
        body = _read_json(file)
    else:
        body = flags.fields()
        if run_at is not None:
            body["run_at"] = run_at
        if depends_on:
            body["depends_on"] = depends_on
    job = _validated(JobCreate, body, "job")
    created = _run(ctx, lambda c: c.create_job(job))
    _emit(ctx, created, lambda: f"created {_job_line(created)} (target {_target(created)})")


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One job, with its assignments counted by status."""

    async def fetch(c: PhonefleetClient) -> tuple[Job, AssignmentList]:
        return await c.get_job(job_id), await c.job_assignments(job_id)

    job, assignments = _run(ctx, fetch)

    def human() -> str:
        counts = Counter(str(a.status) for a in assignments.items)
        rows: list[list[Any]] = [
            ["title", job.title], ["status", job.status], ["target", _target(job)], ["priority", job.priority],
            ["timeout", f"{job.timeout_sec}s"], ["max retries", job.max_retries],
            ["max parallel", job.max_parallel], ["run at", job.run_at], ["depends on", job.depends_on],
            ["schedule", job.schedule_id], ["created", job.created_at], ["activated", job.activated_at],
            ["finished", job.finished_at],
            ["assignments", " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"],
        ]
        if job.blocked_reason:
            rows.insert(2, ["blocked", job.blocked_reason])
        return f"job {job.id}\n" + table(None, rows)

    _emit(ctx, job, human)


IdsArg = Annotated[list[int], typer.Argument(metavar="ID...", help="One or more job ids.")]


def _steer(ctx: typer.Context, action: BatchAction, ids: list[int]) -> None:
    """One id: PATCH, answering the job. Several: one batch request, answering what changed and what did not."""
    if len(ids) == 1:

        async def one(c: PhonefleetClient) -> Job:
            steer = {BatchAction.pause: c.pause_job, BatchAction.resume: c.resume_job,
                     BatchAction.cancel: c.cancel_job}[action]
            return await steer(ids[0])

        job = _run(ctx, one)
        _emit(ctx, job, lambda: _job_line(job))
        return
    result: JobBatchResult = _run(ctx, lambda c: c.batch_ids(action, ids))
    done = {BatchAction.pause: "paused", BatchAction.resume: "resumed", BatchAction.cancel: "cancelled"}[action]
    _emit(ctx, result, lambda: f"{done} jobs: {_cell(result.changed)}" if result.changed else "nothing changed")
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
    _run(ctx, lambda c: c.delete_job(job_id))
    if not _options(ctx).as_json:
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
    result = _run(ctx, lambda c: c.requeue_job(job_id, scope))
    _emit(ctx, result, lambda: f"requeued {result.requeued} slot(s); {_job_line(result.job)}")


@jobs_app.command("failed")
def jobs_failed(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    attempts: Annotated[bool, typer.Option(
        "--attempts", help="Every failed attempt, also those retried on another phone or requeued.")] = False,
) -> None:
    """Dead letters: assignments that failed or timed out for good, with their errors."""
    page = _run(ctx, lambda c: c.list_assignments(status="failed", limit=limit, offset=offset) if attempts
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

    _emit(ctx, page, human)


# ---------------------------------------------------------------------- devices and agents


def _devices_table(devices: Sequence[Device]) -> str:
    if not devices:
        return "no phones"
    return table(["ID", "SERIAL", "AGENT", "STATE", "PAUSED BY", "MODEL", "ANDROID", "BATTERY", "TAGS", "LAST SEEN"],
                 [[d.id, d.serial, d.agent_name or d.agent_id, d.state, d.paused_by, d.model, d.android_version,
                   d.battery, d.tags, d.last_seen_at] for d in devices])


@devices_app.command("list")
def devices_list(ctx: typer.Context) -> None:
    """Every phone, with its state."""
    devices = _run(ctx, lambda c: c.list_devices())
    _emit(ctx, devices, lambda: _devices_table(devices))


@devices_app.command("pause")
def devices_pause(ctx: typer.Context, device_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Take a phone out of distribution; its running work pauses."""
    device = _run(ctx, lambda c: c.pause_device(device_id))
    _emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


@devices_app.command("resume")
def devices_resume(ctx: typer.Context, device_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Give a paused phone back to distribution."""
    device = _run(ctx, lambda c: c.resume_device(device_id))
    _emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


def _agents_table(agents: Sequence[Agent]) -> str:
    if not agents:
        return "no agents"
    return table(["ID", "NAME", "STATUS", "CONNECTED", "PHONES", "MAX RUNNING", "VERSION", "HOST", "LAST SEEN"],
                 [[a.id, a.name, a.status, a.connected, a.device_count, a.max_running, a.version, a.hostname,
                   a.last_seen_at] for a in agents])


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> None:
    """Every agent, connected or not."""
    agents = _run(ctx, lambda c: c.list_agents())
    _emit(ctx, agents, lambda: _agents_table(agents))


@agents_app.command("add")
def agents_add(ctx: typer.Context, name: str) -> None:
    """Register an agent and print its token (shown once)."""
    created = _run(ctx, lambda c: c.create_agent(name))
    _emit(ctx, created, lambda: f"agent {created.agent.id} {created.agent.name}; token (shown once):\n"
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
    agent = _run(ctx, lambda c: c.set_agent_max_running(agent_id, max_running))
    _emit(ctx, agent, lambda: f"agent {agent.id} {agent.name}: max running "
                              f"{agent.max_running if agent.max_running is not None else 'unlimited'}")


# ---------------------------------------------------------------------- schedules


def _rule(s: Schedule) -> str:
    return f"{s.cron} ({s.timezone})" if s.cron else f"every {s.interval_sec}s"


def _schedule_line(s: Schedule) -> str:
    state = f"next {_cell(s.next_run_at)}" if s.enabled else "disabled"
    return f"schedule {s.id} {s.name}: {_rule(s)}, {state}"


@schedules_app.command("list")
def schedules_list(ctx: typer.Context) -> None:
    """Every schedule, with its next firing."""
    page = _run(ctx, lambda c: c.list_schedules())

    def human() -> str:
        if not page.items:
            return "no schedules"
        return table(["ID", "NAME", "ENABLED", "RULE", "NEXT RUN", "LAST RUN", "LAST JOB", "JOB TITLE"],
                     [[s.id, s.name, s.enabled, _rule(s), s.next_run_at, s.last_run_at, s.last_job_id,
                       s.template.title] for s in page.items])

    _emit(ctx, page, human)


@schedules_app.command("create")
def schedules_create(  # noqa: PLR0917 (one flag each; typer passes them by keyword)
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="The schedule's name.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help='Five fields, e.g. "0 3 * * 1-5", or @daily.')] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA zone of --cron (UTC).")] = None,
    every: Annotated[int | None, typer.Option("--every", help="Instead of --cron: fire every SECONDS.",
                                              metavar="SECONDS")] = None,
    misfire: Annotated[MisfirePolicy | None, typer.Option("--misfire", help="Firings missed while down.")] = None,
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
        "--file", exists=True, dir_okay=False,
        help='JSON: a job template (then --name and --cron/--every apply), or a whole schedule with "template".',
    )] = None,
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
            _usage_error("--file holds the job template; give no template flags with it")
        data = _read_json(file)
        if isinstance(data, dict) and "template" in data:
            if rule:
                _usage_error("--file holds the whole schedule; give no schedule flags with it")
            body = data
        else:
            body = {**rule, "template": data}
    else:
        body = {**rule, "template": flags.fields()}
    if "name" not in body:
        _usage_error("--name is required")
    if file is None and cron is None and every is None:
        _usage_error('give --cron "..." or --every SECONDS')
    schedule = _validated(ScheduleCreate, body, "schedule")
    created = _run(ctx, lambda c: c.create_schedule(schedule))
    _emit(ctx, created, lambda: f"created {_schedule_line(created)}")


ScheduleArg = Annotated[int, typer.Argument(metavar="ID")]


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """One schedule and its job template."""
    s = _run(ctx, lambda c: c.get_schedule(schedule_id))

    def human() -> str:
        t = s.template
        return f"schedule {s.id}\n" + table(None, [
            ["name", s.name], ["enabled", s.enabled], ["rule", _rule(s)], ["misfire", s.misfire_policy],
            ["next run", s.next_run_at], ["last run", s.last_run_at], ["last job", s.last_job_id],
            ["job title", t.title], ["job target", _target(t)], ["job steps", len(t.plan)],
            ["job priority", t.priority],
        ])

    _emit(ctx, s, human)


@schedules_app.command("run-now")
def schedules_run_now(ctx: typer.Context, schedule_id: ScheduleArg) -> None:
    """Fire a schedule now, outside its rule; prints the job it made."""
    job = _run(ctx, lambda c: c.run_schedule(schedule_id))
    _emit(ctx, job, lambda: f"created {_job_line(job)}")


def _set_enabled(ctx: typer.Context, schedule_id: int, enabled: bool) -> None:
    s = _run(ctx, lambda c: c.update_schedule(schedule_id, SchedulePatch(enabled=enabled)))
    _emit(ctx, s, lambda: _schedule_line(s))


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
    _run(ctx, lambda c: c.delete_schedule(schedule_id))
    if not _options(ctx).as_json:
        typer.echo(f"deleted schedule {schedule_id}")


# ---------------------------------------------------------------------- scheduler and stats


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items() if v) or "none"


def _scheduler_text(s: SchedulerStatus) -> str:
    rows: list[list[Any]] = [
        ["scheduler", "running" if s.running else "stopped (no new assignments; running work finishes)"],
        ["changed", f"{_cell(s.changed_at)}" + (f" by {s.changed_by}" if s.changed_by else "")],
        ["jobs", _counts(s.jobs)], ["open assignments", _counts(s.assignments)],
        ["connected agents", s.connected_agents], ["idle phones", s.idle_devices],
        ["next schedule", f"{s.next_schedule.name} (#{s.next_schedule.id}) at {_cell(s.next_schedule.next_run_at)}"
         if s.next_schedule else None],
    ]
    return table(None, rows)


@scheduler_app.command("status")
def scheduler_status(ctx: typer.Context) -> None:
    """Whether new work is handed out, and what is waiting."""
    status = _run(ctx, lambda c: c.scheduler_status())
    _emit(ctx, status, lambda: _scheduler_text(status))


@scheduler_app.command("stop")
def scheduler_stop(ctx: typer.Context) -> None:
    """Hand out no new assignments anywhere; running work finishes."""
    status = _run(ctx, lambda c: c.stop_scheduler())
    _emit(ctx, status, lambda: _scheduler_text(status))


@scheduler_app.command("start")
def scheduler_start(ctx: typer.Context) -> None:
    """Hand out assignments again."""
    status = _run(ctx, lambda c: c.start_scheduler())
    _emit(ctx, status, lambda: _scheduler_text(status))


def _stats_text(s: Stats) -> str:
    def duration(d: Any) -> str:
        if d is None or not d.count:
            return "-"
        return f"avg {_cell(d.avg_sec)}s, p95 {_cell(d.p95_sec)}s over {d.count}"

    return table(None, [
        ["jobs", _counts(s.jobs)], ["assignments", _counts(s.assignments)], ["phones", _counts(s.devices)],
        ["agents", _counts(s.agents)], ["connected phones", s.connected_devices],
        [f"success rate ({s.window_sec}s)", f"{s.success_rate:.1%}" if s.success_rate is not None else None],
        ["run time", duration(s.run_time)], ["queue wait", duration(s.queue_wait)],
    ])


@app.command("stats")
def stats(
    ctx: typer.Context,
    window: Annotated[int | None, typer.Option("--window", metavar="SECONDS",
                                               help="Rates and times over this many seconds (a day).")] = None,
) -> None:
    """Counts by state; success rate, run time and queue wait over a window."""
    figures = _run(ctx, lambda c: c.stats(window_sec=window))
    _emit(ctx, figures, lambda: _stats_text(figures))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
