"""``phonefleet stats``: counts by state, and rates and times over a window."""

from typing import Annotated

import typer

from phonefleet.cli.output import cell, counts_text, emit, table
from phonefleet.cli.session import run
from phonefleet.protocol.models import DurationStats, Stats


def _stats_text(s: Stats) -> str:
    def duration(d: DurationStats | None) -> str:
        if d is None or not d.count:
            return "-"
        return f"avg {cell(d.avg_sec)}s, p95 {cell(d.p95_sec)}s over {d.count}"

    return table(None, [
        ["jobs", counts_text(s.jobs)], ["assignments", counts_text(s.assignments)], ["phones", counts_text(s.devices)],
        ["agents", counts_text(s.agents)], ["connected phones", s.connected_devices],
        [f"success rate ({s.window_sec}s)", f"{s.success_rate:.1%}" if s.success_rate is not None else None],
        ["run time", duration(s.run_time)], ["queue wait", duration(s.queue_wait)],
    ])


def stats(
    ctx: typer.Context,
    window: Annotated[int | None, typer.Option("--window", metavar="SECONDS",
                                               help="Rates and times over this many seconds (a day).")] = None,
) -> None:
    """Counts by state; success rate, run time and queue wait over a window."""
    figures = run(ctx, lambda c: c.stats(window_sec=window))
    emit(ctx, figures, lambda: _stats_text(figures))
