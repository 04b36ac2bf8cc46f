"""``phonefleet devices``: the phones, paused and resumed from the terminal."""

from collections.abc import Sequence
from typing import Annotated

import typer

from phonefleet.cli.output import emit, table
from phonefleet.cli.session import run
from phonefleet.protocol.models import Device

devices_app = typer.Typer(no_args_is_help=True, help="The phones.")


def _devices_table(devices: Sequence[Device]) -> str:
    if not devices:
        return "no phones"
    return table(["ID", "SERIAL", "AGENT", "STATE", "PAUSED BY", "MODEL", "ANDROID", "BATTERY", "TAGS", "LAST SEEN"],
                 [[d.id, d.serial, d.agent_name or d.agent_id, d.state, d.paused_by, d.model, d.android_version,
                   d.battery, d.tags, d.last_seen_at] for d in devices])


@devices_app.command("list")
def devices_list(ctx: typer.Context) -> None:
    """Every phone, with its state."""
    devices = run(ctx, lambda c: c.list_devices())
    emit(ctx, devices, lambda: _devices_table(devices))


@devices_app.command("pause")
def devices_pause(ctx: typer.Context, device_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Take a phone out of distribution; its running work pauses."""
    device = run(ctx, lambda c: c.pause_device(device_id))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")


@devices_app.command("resume")
def devices_resume(ctx: typer.Context, device_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Give a paused phone back to distribution."""
    device = run(ctx, lambda c: c.resume_device(device_id))
    emit(ctx, device, lambda: f"device {device.id} {device.serial}: {device.state}")
