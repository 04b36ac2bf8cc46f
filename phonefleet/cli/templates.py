"""A job template from flags, shared by ``jobs create`` and ``schedules create``, checked against the contract
before it is sent."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError

from phonefleet.cli.errors import usage_error
from phonefleet.protocol.titles import default_title

T = TypeVar("T")

TitleOpt = Annotated[str | None, typer.Option("--title", metavar="TEXT", help=(
    'The job\'s title; made from the plan when left out ("Open example.com for 60 s").'))]
UrlOpt = Annotated[str | None, typer.Option("--url", metavar="URL", help="Plan: open this URL (an open_url step).")]
DurationOpt = Annotated[float | None, typer.Option("--duration", metavar="SECONDS",
                                                   help="With --url: seconds to stay on the page.")]
PlanFileOpt = Annotated[Path | None, typer.Option("--plan-file", metavar="FILE", exists=True, dir_okay=False,
                                                  help="Plan: a JSON list of steps.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Target every matching phone (the default).")]
PercentOpt = Annotated[int | None, typer.Option("--percent", metavar="PERCENT",
                                                help="Target this percentage of the phones.")]
CountOpt = Annotated[int | None, typer.Option("--count", metavar="N", help="Target this many phones.")]
PriorityOpt = Annotated[int | None, typer.Option("--priority", metavar="N", help="Higher runs first (-1000..1000).")]
MaxParallelOpt = Annotated[int | None, typer.Option("--max-parallel", metavar="N",
                                                    help="At most this many phones at once.")]
MaxRetriesOpt = Annotated[int | None, typer.Option("--max-retries", metavar="N",
                                                   help="Retries of a failed phone's run.")]
JobTimeoutOpt = Annotated[int | None, typer.Option("--timeout", metavar="SECONDS", help="Seconds one phone may take.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", metavar="TAG",
                                                  help="Only phones carrying this tag (repeatable).")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", metavar="MODEL",
                                                    help="Only phones of this model (repeatable).")]
SerialOpt = Annotated[list[str] | None, typer.Option("--serial", metavar="SERIAL",
                                                     help="Only this phone (repeatable).")]
OnAgentOpt = Annotated[list[str] | None, typer.Option("--agent", metavar="NAME",
                                                      help="Only phones of this agent (repeatable).")]


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
        if (self.url is None) == (self.plan_file is None):
            usage_error("give the plan as --url or --plan-file (one of them)")
        if self.duration is not None and self.url is None:
            usage_error("--duration goes with --url")
        if sum([self.all_devices, self.percent is not None, self.count is not None]) > 1:
            usage_error("give one of --all, --percent and --count")
        body: dict[str, Any] = {}
        if self.url is not None:
            step: dict[str, Any] = {"type": "open_url", "url": self.url}
            if self.duration is not None:
                step["duration_sec"] = self.duration
            body["plan"] = [step]
        else:
            assert self.plan_file is not None
            plan = read_json(self.plan_file)
            if isinstance(plan, dict) and "plan" in plan:
                plan = plan["plan"]
            if not isinstance(plan, list):
                usage_error(f"{self.plan_file}: a JSON list of steps is expected")
            body["plan"] = plan
        steps = body["plan"]
        if self.title is not None:
            body["title"] = self.title
        elif all(isinstance(step, dict) for step in steps):
            body["title"] = default_title(steps)  # the contract names a bad step's field

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        usage_error(f"cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:
        usage_error(f"{path} is not valid JSON: {exc}")


def validated(model: type[T], data: Any, what: str) -> T:
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
