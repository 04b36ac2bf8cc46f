"""Agent settings: command-line flags over ``PHONEFLEET_AGENT_*`` environment variables over a TOML file."""

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from phonefleet.agent.liveness import LinkTimings

DEFAULT_STATE_DIR = Path("./.phonefleet-agent")


class AgentSettings(BaseModel):
    server: str = "http://127.0.0.1:8700"
    token: str | None = Field(default=None, description="Prefer token_file or PHONEFLEET_AGENT_TOKEN; an agent.toml "
                                                         "holding a token must be mode 0600.")
    token_file: Path | None = Field(default=None, description="A file holding the token (mode 0600); relative to "
                                                              "agent.toml's folder when given there.")
    state_dir: Path = DEFAULT_STATE_DIR
    virtual: int = Field(default=0, ge=0, le=900, description="Virtual phones to start and adb-connect "
                         "(one adb server handles about 1,000 connections: it uses select()).")
    adb_host: str = "127.0.0.1"
    adb_port: int = Field(default=5037, ge=1, le=65535)
    adb_path: str | None = Field(default=None, description="adb binary; the one in the adbutils wheel by default.")
    min_battery: int = Field(default=15, ge=0, le=100)
    probe_sec: float = Field(default=30.0, gt=0)
    control_port: int = Field(default=0, ge=0, le=65535, description="Loopback control endpoint; 0 picks one.")
    tags: list[str] = Field(default_factory=list)
    max_running: int | None = Field(default=None, ge=1, le=100_000,
                                    description="Phones that may run at once on this PC (USB hub or CPU limits); "
                                                "sent to the server, which honours it.")
    stall_probe_sec: float = Field(default=1.0, gt=0, le=60, description="A socket quiet this long is probed "
                                   "(agent:ping, one small message; nothing is sent while the server is talking).")
    stall_sec: float = Field(default=3.0, gt=0, le=300, description="A socket silent this long is half-open: the "
                             "agent polls at once and tries a new socket in the background.")
    connect_timeout_sec: float = Field(default=5.0, gt=0, le=300, description="Bound on one socket or TCP connect.")
    http_timeout_sec: float = Field(default=10.0, gt=0, le=3600, description="Bound on one polling request "
                                    "(uploads get one more second per 256 kB).")

    @model_validator(mode="after")
    def _probe_before_stall(self) -> "AgentSettings":
        if self.stall_probe_sec >= self.stall_sec:
            raise ValueError("stall_probe_sec must be shorter than stall_sec")
        return self

    def link_timings(self) -> LinkTimings:
        return LinkTimings(probe_sec=self.stall_probe_sec, stall_sec=self.stall_sec,
                           connect_timeout_sec=self.connect_timeout_sec, http_timeout_sec=self.http_timeout_sec)

    @classmethod
    def load(cls, config: Path | None = None, **overrides: object) -> "AgentSettings":
        values: dict[str, object] = {}
        path = config_path(config, overrides.get("state_dir"))
        if path is not None:
            values.update(tomllib.loads(path.read_text()))
        for name in cls.model_fields:
            raw = os.environ.get(f"PHONEFLEET_AGENT_{name.upper()}")
            if raw is not None:
                values[name] = raw.split(",") if name == "tags" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def config_path(config: Path | None, state_dir: object = None) -> Path | None:
    """The TOML file in use: ``--config``, ``PHONEFLEET_AGENT_CONFIG``, or ``agent.toml`` in the state dir if there."""
    env_config = os.environ.get("PHONEFLEET_AGENT_CONFIG")
    path = config or (Path(env_config) if env_config else None)
    if path is None:
        directory = state_dir or os.environ.get("PHONEFLEET_AGENT_STATE_DIR") or DEFAULT_STATE_DIR
        candidate = Path(str(directory)) / "agent.toml"
        path = candidate if candidate.exists() else None
    return path
