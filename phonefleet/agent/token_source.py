"""Where the agent's token comes from, and the rule that keeps it secret.

Sources, first found wins: the command line (``--token-file``, or ``--token``, which other users see
in ``ps``), the environment (``PHONEFLEET_AGENT_TOKEN``, ``PHONEFLEET_AGENT_TOKEN_FILE``), then
``agent.toml`` (``token_file`` or ``token``). A file holding the token, a token file or an
agent.toml with a token in it, must be readable by its owner only, as ssh insists for its keys.
"""

import os
import stat
import tomllib
from pathlib import Path

ENV_TOKEN = "PHONEFLEET_AGENT_TOKEN"
ENV_TOKEN_FILE = "PHONEFLEET_AGENT_TOKEN_FILE"


class TokenSourceError(Exception):
    """No usable token: the message says what to do."""


def private_text(path: Path, what: str) -> str:
    """The text of a file holding a secret, refused when its group or others may read or write it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise TokenSourceError(
                f"permissions {mode:04o} for '{path}' are too open: {what} holds the agent's token and must be "
                f"readable by its owner only; run `chmod 600 {path}`")
        return path.read_text()
    except OSError as exc:  # missing, a directory, unreadable
        raise TokenSourceError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None


def _from_file(path: Path) -> str:
    token = private_text(path, "the token file").strip()
    if not token:
        raise TokenSourceError(f"the token file '{path}' is empty")
    return token


def _toml_layer(config: Path | None) -> tuple[str | None, Path | None]:
    if config is None:
        return None, None
    try:
        data = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TokenSourceError(f"cannot read '{config}': {exc}") from None
    token, token_file = data.get("token"), data.get("token_file")
    if token is not None:
        private_text(config, "agent.toml")  # a token in it: the file itself must be private
    return (str(token) if token is not None else None,
            config.parent / str(token_file) if token_file is not None else None)


def agent_token(*, flag_token: str | None, flag_file: Path | None, config: Path | None) -> str:
    """The token to connect with, from the first source that gives one (see the module's docstring)."""
    env_file = os.environ.get(ENV_TOKEN_FILE)
    layers: list[tuple[str, str | None, Path | None]] = [
        ("the command line", flag_token, flag_file),
        ("the environment", os.environ.get(ENV_TOKEN) or None, Path(env_file) if env_file else None),
        (f"'{config}'", *_toml_layer(config)),
    ]
    for where, token, token_file in layers:
        if token and token_file:
            raise TokenSourceError(f"{where} gives both a token and a token file: keep one")
        if token_file:
            return _from_file(token_file)
        if token:
            return token
    raise TokenSourceError(
        f"no agent token: set {ENV_TOKEN}, or give --token-file PATH (or token_file = \"PATH\" in agent.toml), "
        "the file being mode 0600; `phonefleet-server agents add NAME` prints a token")
