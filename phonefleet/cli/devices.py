"""``phonefleet devices``: the phones: listed, shown with their health and record, their timeline, paused,
quarantined, released and recovered from the terminal."""

from collections.abc import Sequence
from typing import Annotated

import typer

from phonefleet.cli.output import emit, table
from phonefleet.cli.session import run
from phonefleet.protocol.enums import DeviceEventKind, RecoveryRung
from phonefleet.protocol.health import DeviceDetail, DeviceEvent
from phonefleet.protocol.models import Device

devices_app = typer.Typer(no_args_is_help=True, help="The phones.")

IdArg = Annotated[int, typer.Argument(metavar="ID", help="The phone's id (phonefleet devices list).")]


def _why(d: Device) -> str | None:
    """Why a phone takes no work, in a word or two."""
    if d.state == "quarantined":
        return d.quarantine_reason
    if d.state == "recovering":
        return f"rung {d.recovering}"
    if d.state == "unhealthy":
        return d.health_reason
    return None


def _devices_table(devices: Sequence[Device]) -> str:
    if not devices:
        return "no phones"
    return table(["ID", "SERIAL", "AGENT", "STATE", "WHY", "PAUSED BY", "MODEL", "ANDROID", "BATTERY", "TEMP",
                  "TAGS", "LAST SEEN"],
                 [[d.id, d.serial, d.agent_name or d.agent_id, d.state, _why(d), d.paused_by, d.model,
                   d.android_version, d.battery, d.battery_temp_c, d.tags, d.last_seen_at] for d in devices])


@devices_app.command("list")
def devices_list(ctx: typer.Context) -> None:
    """Every phone, with its state (and why it takes no work)."""
    devices = run(ctx, lambda c: c.list_devices())
    emit(ctx, devices, lambda: _devices_table(devices))


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _detail_text(d: DeviceDetail) -> str:
    h = d.health
    r = d.reliability
    rows: list[list[object]] = [
        ["phone", f"{d.id} {d.serial} on {d.agent_name or d.agent_id} ({d.model or '?'}, Android "
                  f"{d.android_version or '?'})"],
        ["state", d.state + (f": {_why(d)}" if _why(d) else "")],
    ]
    if d.quarantined_at:
        rows.append(["quarantined", f"{d.quarantined_at:%Y-%m-%d %H:%M:%SZ} by {d.quarantined_by}"])
    if h is not None:
        rows += [
            ["adb", f"{h.adb_state or '?'}, booted {_yes(h.boot_completed)}, probe {_num(h.probe_ms, ' ms')}"],
            ["battery", f"{_num(h.battery, '%')} at {_num(h.battery_temp_c, ' °C')}, charging {_yes(h.charging)}"],
            ["screen", f"on {_yes(h.screen_on)}, locked {_yes(h.screen_locked)}"],
            ["/data free", _num(h.data_free_mb, " MB")],
        ]
    t = d.thresholds
    rows += [
        ["thresholds", f"battery >= {t.min_battery}%, <= {t.max_battery_temp_c} °C, /data >= {t.min_data_free_mb} MB,"
                       f" probe <= {t.max_probe_sec} s"],
        ["broken", "; ".join(d.broken) or "none"],
        ["runs", f"{r.runs} ({r.runs_24h} in 24 h), success {_percent(r.success_rate_50)} of the last 50, "
                 f"{_percent(r.success_rate_24h)} in 24 h"],
        ["failure streak", r.failure_streak],
        ["disconnects", f"{r.disconnects_24h} in 24 h"],
        ["mtbf", "-" if r.mtbf_sec is None else f"{r.mtbf_sec:.0f} s of running per phone failure (7 days)"],
        ["queue wait", "-" if r.avg_queue_wait_sec is None else f"{r.avg_queue_wait_sec:.2f} s on average"],
    ]
    if r.last_failure is not None:
        f = r.last_failure
        rows.append(["last failure", f"{f.finished_at:%Y-%m-%d %H:%M:%SZ} job {f.job_id}: {f.error_code or '-'} "
                                     f"(blamed on {f.blame}) {f.error or ''}".rstrip()])
    text = table(None, rows)
    if r.failures_by_code:
        text += "\n\nfailures in 24 h by code\n" + table(
            ["CODE", "PHONE", "JOB", "NEITHER"],
            [[code, c.phone, c.job, c.none] for code, c in sorted(r.failures_by_code.items())])
    return text


def _yes(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def _num(value: float | None, unit: str) -> str:
    return "?" if value is None else f"{value:g}{unit}"


@devices_app.command("show")
def devices_show(ctx: typer.Context, device_id: IdArg) -> None:
    """One phone: its health, the thresholds it breaks and its reliability record."""
    device = run(ctx, lambda c: c.get_device(device_id))
    emit(ctx, device, lambda: _detail_text(device))


def _events_table(events: Sequence[DeviceEvent]) -> str:
    if not events:
        return "no events"
    return table(["ID", "WHEN", "EVENT", "BY", "REASON", "DATA"],
                 [[e.id, e.created_at, e.kind, e.actor, e.reason,
                   " ".join(f"{k}={v}" for k, v in e.data.items()) or None] for e in events])


@devices_app.command("events")
def devices_events(ctx: typer.Context, device_id: IdArg,
                   limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, max=500)] = 50,
                   before: Annotated[int | None, typer.Option("--before", metavar="EVENT_ID",
                                                              help="Older than this event id.")] = None,
                   kind: Annotated[list[DeviceEventKind] | None, typer.Option("--kind",
                                                                              metavar="KIND")] = None) -> None:
    """A phone's timeline, newest first."""
    page = run(ctx, lambda c: c.device_events(device_id, before=before, limit=limit,
                                              kinds=[str(k) for k in kind or []]))
    more = f"\nolder: --before {page.next_before}" if page.next_before else ""
    emit(ctx, page, lambda: _events_table(page.items) + more)


@devices_app.command("pause")
def devices_pause(ctx: typer.Context, device_id: IdArg) -> None:
    """Take a phone out of distribution; its running work pauses."""
    device = run(ctx, lambda c: c.pause_device(device_id))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


@devices_app.command("resume")
def devices_resume(ctx: typer.Context, device_id: IdArg) -> None:
    """Give a paused phone back to distribution."""
    device = run(ctx, lambda c: c.resume_device(device_id))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


@devices_app.command("quarantine")
def devices_quarantine(ctx: typer.Context, device_id: IdArg,
                       reason: Annotated[str, typer.Option("--reason", metavar="TEXT",
                                                           help="Why (kept in its timeline).")]) -> None:
    """Quarantine a phone: no work until it is released; its unstarted work goes back to its jobs."""
    device = run(ctx, lambda c: c.quarantine_device(device_id, reason))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state} ({device.quarantine_reason})")


@devices_app.command("release")
def devices_release(ctx: typer.Context, device_id: IdArg) -> None:
    """Release a quarantined phone."""
    device = run(ctx, lambda c: c.release_device(device_id))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


@devices_app.command("recover")
def devices_recover(ctx: typer.Context, device_id: IdArg,
                    rung: Annotated[RecoveryRung, typer.Option(
                        "--rung", metavar="[reconnect|usb_reset|reboot|power_cycle]", help="The rung to run now.")]
                    ) -> None:
    """Run one rung of the recovery ladder on a phone now; its timeline says what happened."""
    accepted = run(ctx, lambda c: c.recover_device(device_id, rung))
    emit(ctx, accepted, lambda: (
        f"device {accepted.device_id} {accepted.serial}: {accepted.rung} "
        + ("sent to its agent; follow it with: phonefleet devices events " + str(accepted.device_id)
           if accepted.sent else "queued for its agent (not connected by socket right now)")))
