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

from phonefleet import gc_policy
from phonefleet.agent.config import AgentSettings, ConfigFileError
from phonefleet.agent.control import CONTROL_FILE
from phonefleet.agent.token_source import TokenSourceError, agent_token
from phonefleet.cli.output import table
from phonefleet.cli_help import APP_SETTINGS, env_help
from phonefleet.logs import setup_logging

cli = typer.Typer(**APP_SETTINGS, no_args_is_help=True, help="The phonefleet PC agent.")

_DEFAULTS = AgentSettings.model_fields
StateOpt = Annotated[Path | None, typer.Option("--state-dir", metavar="DIR", show_default=False, help=env_help(
    "Outbox, artifacts, control file.", "PHONEFLEET_AGENT_STATE_DIR", _DEFAULTS["state_dir"].default))]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the agent's JSON answer (for scripts).")]


@cli.command()
def run(  # noqa: PLR0917 (one option each; typer passes them by keyword)
    server: Annotated[str | None, typer.Option(metavar="URL", show_default=False, help=env_help(
        "Server URL.", "PHONEFLEET_AGENT_SERVER", _DEFAULTS["server"].default))] = None,
    token: Annotated[str | None, typer.Option(hidden=True, help="Agent token: seen by every user in `ps`; "
                                                                "use --token-file or PHONEFLEET_AGENT_TOKEN.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="FILE", show_default=False, help=env_help(
            "File holding the agent token, mode 0600 (or PHONEFLEET_AGENT_TOKEN; or token_file / token in "
            "agent.toml).", "PHONEFLEET_AGENT_TOKEN_FILE"))] = None,
    virtual: Annotated[int | None, typer.Option(metavar="N", show_default=False, help=env_help(
        "Start N virtual phones.", "PHONEFLEET_AGENT_VIRTUAL", _DEFAULTS["virtual"].default))] = None,
    state_dir: StateOpt = None,
    adb_port: Annotated[int | None, typer.Option(metavar="PORT", show_default=False, help=env_help(
        "The adb server's port.", "PHONEFLEET_AGENT_ADB_PORT", _DEFAULTS["adb_port"].default))] = None,
    adb_path: Annotated[str | None, typer.Option(metavar="PATH", show_default=False, help=env_help(
        "adb binary.", "PHONEFLEET_AGENT_ADB_PATH", "the adbutils wheel's"))] = None,
    max_running: Annotated[int | None, typer.Option(metavar="N", show_default=False, help=env_help(
        "Phones that may run at once on this PC (USB hub or CPU limits); the server honours it.",
        "PHONEFLEET_AGENT_MAX_RUNNING", "no limit"))] = None,
    config: Annotated[Path | None, typer.Option(metavar="FILE", show_default=False, help=env_help(
        "TOML file with the same settings.", "PHONEFLEET_AGENT_CONFIG", "agent.toml in the state dir"))] = None,
    log_level: Annotated[str, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING.")] = "WARNING",
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
        gc_policy.settle_after_start()
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


def _where(device: str | None, job: int | None) -> str:
    return f"phone {device}" if device else f"job {job}" if job else "the whole agent"


DeviceOpt = Annotated[str | None, typer.Option("--device", metavar="SERIAL", help="One phone's serial.")]
JobOpt = Annotated[int | None, typer.Option("--job", metavar="ID", help="One job id.")]


@cli.command()
def pause(device: DeviceOpt = None, job: JobOpt = None, state_dir: StateOpt = None, as_json: JsonOpt = False
          ) -> None:
    """Stop new work here at once (whole agent, one phone, or one job); the server and dashboards hear of it."""
    answer = _control(state_dir, "POST", "/pause", _pause_body(device, job))
    _say(answer, as_json, f"paused {_where(device, job)}: no new work starts there; runs already going finish")


@cli.command()
def resume(device: DeviceOpt = None, job: JobOpt = None, state_dir: StateOpt = None, as_json: JsonOpt = False
           ) -> None:
    """Undo a pause made here."""
    answer = _control(state_dir, "POST", "/resume", _pause_body(device, job))
    _say(answer, as_json, f"resumed {_where(device, job)}")


@cli.command()
def status(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """The link, the outbox, and what each phone is doing."""
    data = _control(state_dir, "GET", "/status")
    _say(data, as_json, _status_text(data))


def _status_text(data: dict[str, Any]) -> str:
    held = ["the whole agent"] if data["paused"] else []
    held += [f"phone {s}" for s in data.get("paused_serials", [])]
    held += [f"job {j}" for j in data.get("paused_jobs", [])]
    lines = [f"server {data.get('server', '?')}  link {data['link']}  outbox {data['outbox']} unsent  "
             f"paused here: {', '.join(held) or 'nothing'}"]
    phones = data["phones"]
    if phones:
        rows = []
        for phone in phones:
            state = ("offline" if not phone["online"] else "recovering" if phone.get("recovering")
                     else "paused" if phone["paused"] else "running" if phone["running"] else "idle")
            rows.append([phone["serial"], state, phone["running"], len(phone["queued"]), phone["done"]])
        lines.append(table(["SERIAL", "STATE", "RUNNING", "QUEUED", "DONE"], rows))
    else:
        lines.append("no phones")
    virtual_phones = data.get("virtual", [])
    if virtual_phones:
        lines.append("")
        lines.append(table(["VIRTUAL", "ONLINE", "FAULT", "COMMANDS", "LAST COMMAND"],
                           [[p["serial"], p["online"], p["fault"], p["commands"],
                             (p["recent"][-1][:60] if p["recent"] else None)] for p in virtual_phones]))
    return "\n".join(lines)


@cli.command()
def devices(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """The phones this agent sees, with their health (and why a phone is unhealthy)."""
    phones = _control(state_dir, "GET", "/devices")
    _say(phones, as_json, _devices_text(phones))


def _devices_text(phones: list[dict[str, Any]]) -> str:
    if not phones:
        return "no phones"
    rows = []
    for phone in phones:
        if not phone["online"]:
            health = "offline"
        else:
            health = "healthy" if phone["healthy"] else f"UNHEALTHY: {phone['health_reason']}"
        temp = phone.get("battery_temp_c")
        probe = phone.get("probe_ms")
        rows.append([phone["serial"], phone.get("adb_status"), phone.get("model"),
                     f"{phone['battery']}%" if phone.get("battery") is not None else None,
                     f"{temp:.1f} °C" if temp is not None else None,
                     phone.get("charging"), phone.get("screen_locked"),
                     f"{phone['data_free_mb']} MB" if phone.get("data_free_mb") is not None else None,
                     f"{probe:.0f} ms" if probe is not None else None, health])
    return table(["SERIAL", "ADB", "MODEL", "BATTERY", "TEMP", "CHARGING", "LOCKED", "/DATA FREE", "PROBE",
                  "HEALTH"], rows)


@cli.command()
def virtual(  # noqa: PLR0917 (one option each; typer passes them by keyword)
    serial: Annotated[str | None, typer.Argument(metavar="SERIAL",
                                                 help="A virtual phone's serial (127.0.0.1:PORT).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Unplug it.")] = False,
    online: Annotated[bool, typer.Option("--online", help="Plug it back in.")] = False,
    fault: Annotated[str | None, typer.Option(
        "--fault", metavar="FAULT", help="hot, hang (a reboot ends it), flap, unauthorized, bootloop (from the next "
                                         "reboot), amfail, blank (the screen shows one colour), or none to clear.")
    ] = None,
    flap_sec: Annotated[float | None, typer.Option(
        "--flap-sec", metavar="SECONDS", help="With --fault flap: seconds online between drops (2.5).")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the virtual phones, show one's command log, unplug / plug it back, or give it a fault (tests and
    demos)."""
    if fault is not None or flap_sec is not None:
        if serial is None:
            raise typer.BadParameter("a phone's serial is required with --fault")
        body: dict[str, Any] = {"fault": fault or "flap"}
        if flap_sec is not None:
            body["flap_sec"] = flap_sec
        answer = _control(state_dir, "POST", f"/virtual/{serial}/fault", body)
        _say(answer, as_json, f"virtual phone {answer['serial']}: fault {answer['fault']} "
                              f"({'online' if answer['online'] else 'offline'})")
        return
    action = "offline" if offline else "online" if online else "log"
    if serial is None:
        listing = _control(state_dir, "GET", "/virtual")
        _say(listing, as_json, table(["SERIAL", "SERIALNO", "MODEL", "ONLINE", "FAULT", "COMMANDS"],
                                     [[p["serial"], p["serialno"], p["model"], p["online"], p["fault"],
                                       p["actions"]] for p in listing["phones"]]) or "no virtual phones")
        return
    answer = _control(state_dir, "POST", f"/virtual/{serial}/{action}")
    if action == "log":
        head = (f"virtual phone {answer['serial']} ({'online' if answer['online'] else 'offline'}, fault "
                f"{answer['fault']}): last {len(answer['log'])} commands")
        text = head + ("\n" + table(["AT", "SERVICE", "COMMAND"],
                                    [[r["at"], r["service"], r["command"][:100]] for r in answer["log"]])
                       if answer["log"] else "")
    else:
        text = f"virtual phone {answer['serial']} is {'online' if answer['online'] else 'offline'}"
    _say(answer, as_json, text)


def _say(data: Any, as_json: bool, text: str) -> None:
    """The agent's JSON answer with --json (one document), else the line or table for people."""
    typer.echo(json.dumps(data, indent=2) if as_json else text)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
