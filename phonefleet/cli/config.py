"""Where the server's URL and the admin token come from: flags and environment, cli.toml, the local data dir."""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from phonefleet.cli.errors import usage_error
from phonefleet.client import DEFAULT_TIMEOUT_SEC

DEFAULT_URL = "http://127.0.0.1:8700"
CONFIG_ENV = "PHONEFLEET_CLI_CONFIG"


def config_path() -> Path:
    """``$PHONEFLEET_CLI_CONFIG``, else ``~/.config/phonefleet/cli.toml`` (honouring XDG_CONFIG_HOME)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "phonefleet" / "cli.toml"


def read_config() -> dict[str, Any]:
    path = config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        usage_error(f"cannot read {path}: {exc}")
    for key in ("url", "token"):
        if key in data and not isinstance(data[key], str):
            usage_error(f"{path}: {key} must be a string")
    return data


def data_dir_token() -> str | None:
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
        config = read_config() if self.url is None or self.token is None else {}
        url = self.url or config.get("url") or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            usage_error(f"--url must be an http:// or https:// address, not {url!r}")
        token = self.token or config.get("token") or data_dir_token()
        return url, token


def global_options(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", metavar="URL", envvar="PHONEFLEET_URL", show_default=False,
                                            help=f"The server.  [default: {DEFAULT_URL}]")] = None,
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", envvar="PHONEFLEET_TOKEN", show_default=False,
                                              help="Admin token; else cli.toml's, else ./.phonefleet/admin_token.")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON (one document) instead of "
                                                         "tables.")] = False,
    timeout: Annotated[float, typer.Option("--request-timeout", metavar="SECONDS", envvar="PHONEFLEET_TIMEOUT", min=0.1,
                                           help="Seconds to wait for each answer.")] = DEFAULT_TIMEOUT_SEC,
) -> None:
    """Operate a phonefleet server: jobs, phones, agents, schedules."""
    ctx.obj = Options(url=url, token=token, as_json=as_json, timeout=timeout)


def options(ctx: typer.Context) -> Options:
    opts = ctx.find_object(Options)
    assert opts is not None, "the root callback sets the options"
    return opts
