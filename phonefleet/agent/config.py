"""Agent settings: command-line flags over ``PHONEFLEET_AGENT_*`` variables over agent.toml over the defaults."""

import shlex
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from phonefleet.agent.liveness import LinkTimings
from phonefleet.agent.recovery import LadderSettings
from phonefleet.agent.rungs import PLACEHOLDERS, RungSettings
from phonefleet.protocol.enums import RecoveryRung

DEFAULT_STATE_DIR = Path("./.phonefleet-agent")
CONFIG_NAME = "agent.toml"


class ConfigFileError(Exception):
    """The agent's TOML file is named but missing, unreadable or not TOML: the message says which and why."""


class AgentSettings(BaseSettings):
    """Built from keyword values (the flags), then ``PHONEFLEET_AGENT_<FIELD>`` variables, then the TOML file."""

    model_config = SettingsConfigDict(env_prefix="PHONEFLEET_AGENT_", extra="ignore")

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
    min_battery: int | None = Field(default=None, ge=0, le=100, description="Health threshold (battery %); "
                                    "overrides the server's (15 unless the server says otherwise).")
    max_battery_temp_c: float | None = Field(default=None, ge=0, le=100, description="Health threshold (battery "
                                             "°C); overrides the server's (45.0).")
    min_data_free_mb: int | None = Field(default=None, ge=0, le=1_000_000, description="Health threshold (free "
                                         "space on /data, MB); overrides the server's (500).")
    max_probe_sec: float | None = Field(default=None, gt=0, le=600, description="Health threshold (the probe's "
                                        "round trip, s); overrides the server's (5.0).")
    probe_sec: float = Field(default=15.0, gt=0, le=3600, description="Every phone is probed this often (and "
                             "as soon as it comes online).")
    probe_timeout_sec: float = Field(default=10.0, gt=0, le=600, description="A probe unanswered this long (or past "
                                     "the max_probe_sec threshold, if sooner) marks "
                                     "the phone unhealthy (a hung phone).")
    max_probes: int = Field(default=32, ge=1, le=1000, description="Probes at once (each holds one connection "
                            "to the adb server).")
    control_port: int = Field(default=0, ge=0, le=65535, description="Loopback control endpoint; 0 picks one.")
    tags: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Comma-separated in the "
                                                 "environment (PHONEFLEET_AGENT_TAGS=a,b), a list in agent.toml.")
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
    recovery: bool = Field(default=True, description="The recovery ladder starts by itself on a phone offline, "
                           "unresponsive (its probe timed out or failed), unauthorized or stuck booting; operator "
                           "rungs and self-tests run either way.")
    recovery_grace_sec: float = Field(default=30.0, gt=0, le=86_400, description="A phone bad this long gets the "
                                      "ladder (thresholds such as battery or heat never do: no rung fixes them).")
    recovery_boot_grace_sec: float = Field(default=120.0, gt=0, le=86_400, description="A phone stuck booting "
                                           "(sys.boot_completed != 1) this long gets the ladder: a boot takes a "
                                           "while.")
    recovery_reconnect_timeout_sec: float = Field(default=30.0, gt=0, le=3600, description="Bound on the "
                                                  "reconnect rung, its check included.")
    recovery_usb_reset_timeout_sec: float = Field(default=30.0, gt=0, le=3600)
    recovery_reboot_timeout_sec: float = Field(default=180.0, gt=0, le=3600, description="Bound on the reboot "
                                               "rung: adb reboot until sys.boot_completed=1 and a healthy probe.")
    recovery_power_cycle_timeout_sec: float = Field(default=300.0, gt=0, le=3600)
    recovery_max_reboots_per_day: int = Field(default=3, ge=0, le=100, description="Reboots by the ladder per "
                                              "phone in 24 h (kept in the state dir); past it the phone is given "
                                              "up, never rebooted in a loop.")
    recovery_max_concurrent: int = Field(default=4, ge=1, le=1000, description="Ladders at once on this PC "
                                         "(operator rungs do not wait).")
    power_cycle_command: str | None = Field(default=None, description="The power-cycle rung's command, e.g. "
                                            "'uhubctl -l {hub} -p {port} -a cycle -d 5'; placeholders: "
                                            "{serial} {hub} {port} {busnum} {devnum} {devpath}, from "
                                            "power_cycle_ports or sysfs. Run without a shell. None: the rung "
                                            "is skipped.")
    power_cycle_ports: dict[str, dict[str, str]] = Field(default_factory=dict, description="Per serial, "
                                                         "placeholder values for power_cycle_command (a JSON "
                                                         "object in the environment, a table in agent.toml).")
    selftest_timeout_sec: float = Field(default=30.0, gt=0, le=600, description="Bound on each check of the "
                                        "self-test (boot completed, shell echo, screenshot).")
    config: Path | None = Field(default=None, description="The TOML file in use: --config, PHONEFLEET_AGENT_CONFIG "
                                                          "(either must exist), else agent.toml in the state dir if "
                                                          "there.")

    @field_validator("tags", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [tag.strip() for tag in value.split(",") if tag.strip()] if isinstance(value, str) else value

    @field_validator("power_cycle_command")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            words = shlex.split(value)
            names = {field for word in words for _, field, _, _ in string.Formatter().parse(word) if field is not None}
        except ValueError as exc:
            raise ValueError(f"not a command line: {exc}") from None
        unknown = sorted(names - PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}: use {', '.join(sorted(PLACEHOLDERS))}")
        return value

    @field_validator("power_cycle_ports")
    @classmethod
    def _known_port_fields(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for serial, fields in value.items():
            unknown = sorted(set(fields) - PLACEHOLDERS)
            if unknown:
                raise ValueError(f"{serial}: unknown placeholder {unknown[0]!r}: use "
                                 f"{', '.join(sorted(PLACEHOLDERS))}")
        return value

    @model_validator(mode="after")
    def _probe_before_stall(self) -> "AgentSettings":
        if self.stall_probe_sec >= self.stall_sec:
            raise ValueError("stall_probe_sec must be shorter than stall_sec")
        return self

    def health_overrides(self) -> dict[str, int | float]:
        """This agent's own health thresholds: each given one wins over the server's."""
        given = {"min_battery": self.min_battery, "max_battery_temp_c": self.max_battery_temp_c,
                 "min_data_free_mb": self.min_data_free_mb, "max_probe_sec": self.max_probe_sec}
        return {name: value for name, value in given.items() if value is not None}

    def rung_settings(self) -> RungSettings:
        return RungSettings(
            timeouts={RecoveryRung.reconnect: self.recovery_reconnect_timeout_sec,
                      RecoveryRung.usb_reset: self.recovery_usb_reset_timeout_sec,
                      RecoveryRung.reboot: self.recovery_reboot_timeout_sec,
                      RecoveryRung.power_cycle: self.recovery_power_cycle_timeout_sec},
            power_cycle_command=self.power_cycle_command, power_cycle_ports=self.power_cycle_ports)

    def ladder_settings(self) -> LadderSettings:
        return LadderSettings(enabled=self.recovery, grace_sec=self.recovery_grace_sec,
                              boot_grace_sec=self.recovery_boot_grace_sec,
                              max_reboots_per_day=self.recovery_max_reboots_per_day,
                              max_concurrent=self.recovery_max_concurrent)

    def link_timings(self) -> LinkTimings:
        return LinkTimings(probe_sec=self.stall_probe_sec, stall_sec=self.stall_sec,
                           connect_timeout_sec=self.connect_timeout_sec, http_timeout_sec=self.http_timeout_sec)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, AgentTomlSource(settings_cls)

    @classmethod
    def load(cls, config: Path | None = None, **flags: Any) -> "AgentSettings":
        """The settings in force: ``flags`` given as None fall through to the environment, agent.toml, defaults."""
        given = {name: value for name, value in {"config": config, **flags}.items() if value is not None}
        return cls(**given)


class AgentTomlSource(PydanticBaseSettingsSource):
    """agent.toml as the layer under the flags and the environment, found from what those two say."""

    def __call__(self) -> dict[str, Any]:
        named = self.current_state.get("config")
        if named is not None:
            path = Path(str(named))
        else:
            path = Path(str(self.current_state.get("state_dir") or DEFAULT_STATE_DIR)) / CONFIG_NAME
            if not path.exists():
                return {}
        return {**read_toml(path), "config": path}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once


def read_toml(path: Path) -> dict[str, Any]:
    """The table in ``path``, or a one-line ``ConfigFileError`` naming the file and the reason."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigFileError(f"cannot read the config file '{path}': {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"the config file '{path}' is not valid TOML: {exc}") from None
