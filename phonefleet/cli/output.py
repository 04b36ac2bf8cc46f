"""What the CLI prints: aligned tables for people, the API's JSON with --json."""

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import BaseModel, TypeAdapter

from phonefleet.cli.config import options
from phonefleet.protocol.models import Job, JobTemplate


def cell(value: Any) -> str:
    """One value as a table shows it: "-" for nothing, UTC times, yes/no, three significant digits."""
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
    cells = [[cell(v) for v in row] for row in rows]
    if headers is not None:
        cells.insert(0, list(headers))
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(len(r) for r in cells))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells)


def emit(ctx: typer.Context, data: BaseModel | list[Any], human: Callable[[], str]) -> None:
    """One JSON document with --json (the API's model, as the server answers it), else the human view."""
    if options(ctx).as_json:
        if isinstance(data, BaseModel):
            typer.echo(data.model_dump_json(indent=2))
        else:
            typer.echo(TypeAdapter(list[Any]).dump_json(data, indent=2).decode())
        return
    text = human()
    if text:
        typer.echo(text)


def target_text(job: Job | JobTemplate) -> str:
    """"all (12)", "50% (6)" or "3 phones": the target and, where it was resolved, its phone count."""
    if job.target_type == "all_devices":
        text = "all"
    elif job.target_type == "percentage":
        text = f"{job.target_value}%"
    else:
        text = f"{job.target_value} phone{'' if job.target_value == 1 else 's'}"
    count = getattr(job, "target_count", None)
    return f"{text} ({count})" if count is not None and job.target_type != "device_count" else text


def job_line(job: Job) -> str:
    return f"job {job.id} {job.status}: {job.title}"


def counts_text(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items() if v) or "none"
