"""``phonefleet fleet``: the fleet's health at a glance, and its policy."""

import typer

from phonefleet.cli.output import emit, table
from phonefleet.cli.session import run
from phonefleet.protocol.health import FleetHealthReport

fleet_app = typer.Typer(no_args_is_help=True, help="The fleet's health and policy.")


def _health_text(report: FleetHealthReport) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in report.devices.items() if n) or "no phones"
    if not report.attention:
        return f"{counts}\nnothing needs attention"
    return counts + "\n\nneeds attention\n" + table(
        ["ID", "SERIAL", "AGENT", "STATE", "PROBLEM", "REASON", "SINCE"],
        [[a.device_id, a.serial, a.agent_name, a.state, a.problem, a.reason, a.since] for a in report.attention])


@fleet_app.command("health")
def fleet_health(ctx: typer.Context) -> None:
    """Phones by state, and those that need a look (quarantined, recovering, unhealthy, flapping, hot)."""
    report = run(ctx, lambda c: c.fleet_health())
    emit(ctx, report, lambda: _health_text(report))


@fleet_app.command("policy")
def fleet_policy(ctx: typer.Context) -> None:
    """The health thresholds and the quarantine policy in force."""
    policy = run(ctx, lambda c: c.fleet_policy())
    emit(ctx, policy, lambda: table(None, [
        *[[f"thresholds.{k}", v] for k, v in policy.thresholds.model_dump().items()],
        *[[f"quarantine.{k}", v] for k, v in policy.quarantine.model_dump().items()],
        ["changed", f"{policy.changed_at} by {policy.changed_by}" if policy.changed_by else "never"],
    ]))
