"""``phonefleet-agent``: run the agent beside the phones, and steer a running one from this PC."""

import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from phonefleet.agent.config import AgentSettings, ConfigFileError
from phonefleet.agent.control import CONTROL_FILE
from phonefleet.agent.token_source import TokenSourceError, agent_token
from phonefleet.logs import setup_logging

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="The phonefleet PC agent.")

StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="Outbox, artifacts, control file "
                                                                   "[env PHONEFLEET_AGENT_STATE_DIR].")]


@cli.command()
def run(  # noqa: PLR0917 (one option each; typer passes them by keyword)
    server: Annotated[str | None, typer.Option(help="Server URL [env PHONEFLEET_AGENT_SERVER].")] = None,
    token: Annotated[str | None, typer.Option(hidden=True, help="Agent token: seen by every user in `ps`; "
                                                                "use --token-file or PHONEFLEET_AGENT_TOKEN.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="File holding the agent token, mode 0600 [env PHONEFLEET_AGENT_TOKEN_FILE; "
                             "or PHONEFLEET_AGENT_TOKEN; or token_file / token in agent.toml].")] = None,
    virtual: Annotated[int | None, typer.Option(help="Start N virtual phones.")] = None,
    state_dir: StateOpt = None,
    adb_port: Annotated[int | None, typer.Option(help="The adb server's port (5037).")] = None,
    adb_path: Annotated[str | None, typer.Option(help="adb binary (default: the adbutils wheel's).")] = None,
    max_running: Annotated[int | None, typer.Option(
        help="Phones that may run at once on this PC (USB hub or CPU limits); the server honours it.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the same settings.")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING.")] = "WARNING",
) -> None:
    """Run the agent: track phones over ADB, take work from the server, report back."""
    from phonefleet.agent.agent import Agent

    setup_logging(log_level)
    if token:
        typer.echo("warning: --token is visible to every user of this machine (ps); prefer --token-file or "
                   "PHONEFLEET_AGENT_TOKEN", err=True)
    settings = _settings(config, server=server, virtual=virtual, state_dir=state_dir,
                         adb_port=adb_port, adb_path=adb_path, max_running=max_running)
    try:
        secret = agent_token(flag_token=token, flag_file=token_file, config=settings.config)
    except TokenSourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = settings.model_copy(update={"token": secret, "token_file": None})

    async def main() -> None:
        agent = Agent(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.start(progress=typer.echo)
        typer.echo(f"agent connected to {settings.server} ({len(agent.workers)} phones); Ctrl-C stops it")
        try:
            await stop.wait()
        finally:
            await agent.stop()

    asyncio.run(main())


def _settings(config: Path | None = None, **flags: object) -> AgentSettings:
    """The settings in force, or exit 2 with one line per problem (a missing --config, a bad value)."""
    try:
        return AgentSettings.load(config, **flags)
    except ConfigFileError as exc:
        typer.echo(f"error: {exc}", err=True)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            typer.echo(f"error: {where}: {error['msg']}", err=True)
    raise typer.Exit(2)


def _control(state_dir: Path | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    directory = state_dir or _settings().state_dir
    try:
        info = json.loads((directory / CONTROL_FILE).read_text())
    except FileNotFoundError:
        typer.echo(f"no running agent found in {directory} (start one with `phonefleet-agent run`)", err=True)
        raise typer.Exit(2) from None
    request = urllib.request.Request(
        f"http://127.0.0.1:{info['port']}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        typer.echo(f"agent refused: {exc.read().decode()}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"agent not reachable: {exc.reason}", err=True)
        raise typer.Exit(2) from None


def _pause_body(device: str | None, job: int | None) -> dict[str, Any]:
    if device and job:
        raise typer.BadParameter("give --device or --job, not both")
    return {"scope": "device" if device else "job" if job else "agent", "serial": device, "job_id": job}


@cli.command()
def pause(device: Annotated[str | None, typer.Option("--device", help="One phone's serial.")] = None,
          job: Annotated[int | None, typer.Option("--job", help="One job id.")] = None,
          state_dir: StateOpt = None) -> None:
    """Stop new work here at once (whole agent, one phone, or one job); the server and dashboards hear of it."""
    _print(_control(state_dir, "POST", "/pause", _pause_body(device, job)))


@cli.command()
def resume(device: Annotated[str | None, typer.Option("--device")] = None,
           job: Annotated[int | None, typer.Option("--job")] = None, state_dir: StateOpt = None) -> None:
    """Undo a pause made here."""
    _print(_control(state_dir, "POST", "/resume", _pause_body(device, job)))


@cli.command()
def status(state_dir: StateOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """The link, the outbox, and what each phone is doing."""
    _print(_control(state_dir, "GET", "/status"), as_json=as_json)


@cli.command()
def devices(state_dir: StateOpt = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The phones this agent sees, with their health (and why a phone is unhealthy)."""
    phones = _control(state_dir, "GET", "/devices")
    if as_json:
        _print(phones)
        return
    for phone in phones:
        typer.echo(_device_line(phone))


def _device_line(phone: dict[str, Any]) -> str:
    if not phone["online"]:
        health = "offline"
    else:
        health = "healthy" if phone["healthy"] else f"UNHEALTHY: {phone['health_reason']}"
    facts = [f"{phone['battery']}%" if phone.get("battery") is not None else None,
             f"{phone['battery_temp_c']:.1f} °C" if phone.get("battery_temp_c") is not None else None,
             "charging" if phone.get("charging") else None, "locked" if phone.get("screen_locked") else None,
             f"/data {phone['data_free_mb']} MB free" if phone.get("data_free_mb") is not None else None,
             f"probe {phone['probe_ms']:.0f} ms" if phone.get("probe_ms") is not None else None]
    shown = ", ".join(f for f in facts if f)
    return (f"  {phone['serial']:<24} {phone.get('adb_status') or '-':<13} {phone.get('model') or '?':<14} "
            f"{shown:<52} {health}").rstrip()


@cli.command()
def virtual(  # noqa: PLR0917 (one option each; typer passes them by keyword)
    serial: Annotated[str | None, typer.Argument(help="A virtual phone's serial (127.0.0.1:PORT).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Unplug it.")] = False,
    online: Annotated[bool, typer.Option("--online", help="Plug it back in.")] = False,
    fault: Annotated[str | None, typer.Option(
        "--fault", help="hot, hang (a reboot ends it), flap, unauthorized, bootloop (from the next reboot), "
                        "amfail, blank (the screen shows one colour), or none to clear.")] = None,
    flap_sec: Annotated[float | None, typer.Option(
        "--flap-sec", help="With --fault flap: seconds online between drops (2.5).")] = None,
    state_dir: StateOpt = None,
) -> None:
    """List the virtual phones, show one's command log, unplug / plug it back, or give it a fault (tests and
    demos)."""
    if fault is not None or flap_sec is not None:
        if serial is None:
            raise typer.BadParameter("a phone's serial is required with --fault")
        body: dict[str, Any] = {"fault": fault or "flap"}
        if flap_sec is not None:
            body["flap_sec"] = flap_sec
        _print(_control(state_dir, "POST", f"/virtual/{serial}/fault", body))
        return
    action = "offline" if offline else "online" if online else "log"
    path = f"/virtual/{serial}/{action}" if serial else "/virtual"
    _print(_control(state_dir, "POST" if serial else "GET", path))


def _print(data: Any, *, as_json: bool = True) -> None:
    if as_json or not isinstance(data, dict):
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"link: {data['link']}   outbox: {data['outbox']}   paused: {data['paused']}")
    for phone in data["phones"]:
        state = "paused" if phone["paused"] else ("running" if phone["running"] else "idle")
        state = state if phone["online"] else "offline"
        typer.echo(f"  {phone['serial']:<24} {state:<8} queued={len(phone['queued'])} done={phone['done']}")
    for phone in data.get("virtual", []):
        last = phone["recent"][-1] if phone["recent"] else "-"
        typer.echo(f"  virtual {phone['serial']:<22} {phone['commands']:>5} commands, last: {last[:60]}")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
