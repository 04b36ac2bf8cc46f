"""Server and agent settings: the documented environment names, the defaults, and which layer wins
(flags > environment > agent.toml > defaults), through pydantic-settings."""

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from phonefleet.agent.cli import cli as agent_cli
from phonefleet.agent.config import AgentSettings, ConfigFileError
from phonefleet.server.cli import cli as server_cli
from phonefleet.server.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PHONEFLEET_* or DATABASE_URL from the caller's shell, and no agent.toml in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("PHONEFLEET_") or name.upper() == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def server_env_names_in_readme() -> set[str]:
    """The environment names in the README's server settings table."""
    text = README.read_text()
    table = text[text.index("| setting | flag | environment | default |"):]
    table = table[:table.index("\n\n")]
    return set(re.findall(r"`(PHONEFLEET_[A-Z_]+|DATABASE_URL)`", table))


def test_server_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env()
    assert (settings.host, settings.port, settings.data_dir, settings.database_url) == (
        "127.0.0.1", 8700, Path("./.phonefleet"), None)
    assert (settings.agent_grace_sec, settings.lease_sec, settings.heartbeat_sec, settings.poll_sec) == (20, 30, 5, 3)
    assert (settings.retry_base_sec, settings.retry_max_sec) == (2, 300)
    assert (settings.socket_ping_interval_sec, settings.socket_ping_timeout_sec) == (10, 10)
    assert (settings.log_level, settings.db_timeout_sec, settings.header_timeout_sec) == ("WARNING", 60, 30)
    assert settings.admin_token is None


def test_every_server_env_name_in_the_readme_sets_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    names = server_env_names_in_readme()
    assert {"PHONEFLEET_HOST", "DATABASE_URL", "PHONEFLEET_DATABASE_URL", "PHONEFLEET_HEADER_TIMEOUT_SEC"} <= names
    for name in sorted(names):
        field = "database_url" if name == "DATABASE_URL" else name.removeprefix("PHONEFLEET_").lower()
        assert field in Settings.model_fields, name
        value = {"port": "8711", "data_dir": "/srv/pf", "log_level": "INFO", "supabase_first_role": "operator"}.get(
            field, "7")
        if field in {"host", "database_url", "admin_token", "supabase_jwks_url", "supabase_jwt_secret",
                     "supabase_jwt_issuer", "supabase_jwt_audience"}:
            value = f"from-{name}"
        with monkeypatch.context() as env:
            env.setenv(name, value)
            got = getattr(Settings.from_env(), field)
        assert str(got) == value or got == float(value), (name, got)


def test_every_server_field_has_its_prefixed_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEFLEET_DB_POOL_MAX", "17")
    monkeypatch.setenv("PHONEFLEET_PROGRESS_HZ", "2.5")
    monkeypatch.setenv("PHONEFLEET_MAX_BODY_BYTES", "2048")
    settings = Settings.from_env()
    assert (settings.db_pool_max, settings.progress_hz, settings.max_body_bytes) == (17, 2.5, 2048)


def test_server_flags_win_over_the_environment_and_none_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEFLEET_PORT", "8800")
    monkeypatch.setenv("PHONEFLEET_HOST", "0.0.0.0")
    settings = Settings.from_env(port=9000, host=None, data_dir=None)
    assert (settings.port, settings.host, settings.data_dir) == (9000, "0.0.0.0", Path("./.phonefleet"))


def test_phonefleet_database_url_wins_over_database_url_and_blank_means_embedded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain/db")
    assert Settings.from_env().database_url == "postgresql://plain/db"
    monkeypatch.setenv("PHONEFLEET_DATABASE_URL", "postgresql://prefixed/db")
    assert Settings.from_env().database_url == "postgresql://prefixed/db"
    assert Settings(database_url="postgresql://given/db").database_url == "postgresql://given/db"
    monkeypatch.delenv("PHONEFLEET_DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", "")
    assert Settings.from_env().database_url is None


@pytest.mark.parametrize(("name", "value"), [("PHONEFLEET_PORT", "70000"), ("PHONEFLEET_PORT", "http"),
                                             ("PHONEFLEET_LEASE_SEC", "0"), ("PHONEFLEET_SOCKET_PING_INTERVAL_SEC",
                                                                             "0")])
def test_server_values_out_of_range_are_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                 value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings.from_env()
    assert name.removeprefix("PHONEFLEET_").lower() in str(caught.value)


@pytest.mark.parametrize("args", [[], ["agents", "add", "rack-1"]])
def test_the_server_cli_names_a_bad_variable_in_one_line_without_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                              args: list[str]) -> None:
    monkeypatch.setenv("PHONEFLEET_PORT", "abc")
    result = CliRunner().invoke(server_cli, args)
    assert result.exit_code == 2
    assert result.output.strip() == "error: PHONEFLEET_PORT: Input should be a valid integer, unable to parse " \
                                    "string as an integer"
    assert "Traceback" not in result.output


def agent_toml(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.toml"
    path.write_text(text)
    return path


def test_agent_defaults_without_any_source() -> None:
    settings = AgentSettings.load()
    assert (settings.server, settings.state_dir, settings.adb_port, settings.tags) == (
        "http://127.0.0.1:8700", Path("./.phonefleet-agent"), 5037, [])
    assert (settings.min_battery, settings.stall_probe_sec, settings.stall_sec, settings.config) == (None, 1, 3, None)
    assert settings.health_overrides() == {}, "the server's health thresholds hold unless this agent overrides one"


def test_agent_flags_win_over_env_over_toml_over_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "state"
    toml = agent_toml(state, 'server = "http://toml:1"\nadb_port = 6001\nmin_battery = 40\nprobe_sec = 7.5\n')
    from_toml = AgentSettings.load(state_dir=state)
    assert (from_toml.server, from_toml.adb_port, from_toml.min_battery, from_toml.config) == (
        "http://toml:1", 6001, 40, toml)
    monkeypatch.setenv("PHONEFLEET_AGENT_SERVER", "http://env:2")
    monkeypatch.setenv("PHONEFLEET_AGENT_ADB_PORT", "6002")
    from_env = AgentSettings.load(state_dir=state)
    assert (from_env.server, from_env.adb_port, from_env.min_battery) == ("http://env:2", 6002, 40)
    flagged = AgentSettings.load(state_dir=state, server="http://flag:3", adb_port=None)
    assert (flagged.server, flagged.adb_port, flagged.min_battery, flagged.probe_sec) == (
        "http://flag:3", 6002, 40, 7.5)
    assert flagged.control_port == 0  # in no layer: the default


def test_agent_toml_is_found_by_config_flag_env_or_state_dir(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    by_flag = agent_toml(tmp_path / "a", 'server = "http://by-flag"\n')
    by_env = agent_toml(tmp_path / "b", 'server = "http://by-env"\n')
    by_state = agent_toml(tmp_path / "c", 'server = "http://by-state-dir"\n')
    monkeypatch.setenv("PHONEFLEET_AGENT_STATE_DIR", str(by_state.parent))
    assert AgentSettings.load().server == "http://by-state-dir"
    monkeypatch.setenv("PHONEFLEET_AGENT_CONFIG", str(by_env))
    assert AgentSettings.load().server == "http://by-env"
    assert AgentSettings.load(by_flag).server == "http://by-flag"
    assert AgentSettings.load(by_flag).config == by_flag


def test_agent_env_names_of_the_readme(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {"SERVER": "http://s:1", "TOKEN": "pfagt_x", "STATE_DIR": str(tmp_path / "st"), "ADB_PORT": "5038",
              "ADB_PATH": "/opt/adb", "MIN_BATTERY": "20", "VIRTUAL": "3", "MAX_RUNNING": "8",
              "STALL_PROBE_SEC": "2", "STALL_SEC": "6", "CONNECT_TIMEOUT_SEC": "4", "HTTP_TIMEOUT_SEC": "9"}
    for name, value in values.items():
        monkeypatch.setenv(f"PHONEFLEET_AGENT_{name}", value)
    settings = AgentSettings.load()
    for name, value in values.items():
        got = getattr(settings, name.lower())
        assert str(got) == value or got == float(value), (name, got)


@pytest.mark.parametrize(("raw", "tags"), [("a,b", ["a", "b"]), ("rack-3", ["rack-3"]), (" a , b ,", ["a", "b"]),
                                           ("", [])])
def test_agent_tags_from_the_environment_are_comma_separated(monkeypatch: pytest.MonkeyPatch, raw: str,
                                                             tags: list[str]) -> None:
    monkeypatch.setenv("PHONEFLEET_AGENT_TAGS", raw)
    assert AgentSettings.load().tags == tags


def test_agent_tags_in_toml_are_a_list_and_env_tags_replace_them(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    state = tmp_path / "s"
    agent_toml(state, 'tags = ["lab", "android-14"]\n')
    assert AgentSettings.load(state_dir=state).tags == ["lab", "android-14"]
    monkeypatch.setenv("PHONEFLEET_AGENT_TAGS", "a,b")
    assert AgentSettings.load(state_dir=state).tags == ["a", "b"]


def test_agent_validation_still_applies_to_every_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = tmp_path / "s"
    agent_toml(state, "min_battery = 101\n")
    with pytest.raises(ValidationError, match="min_battery"):
        AgentSettings.load(state_dir=state)
    monkeypatch.setenv("PHONEFLEET_AGENT_STALL_SEC", "0.5")
    with pytest.raises(ValidationError, match="stall_probe_sec must be shorter than stall_sec"):
        AgentSettings.load()


def test_a_named_config_file_that_is_missing_or_not_toml_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"cannot read the config file '.*missing\.toml'"):
        AgentSettings.load(tmp_path / "missing.toml")
    monkeypatch.setenv("PHONEFLEET_AGENT_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigFileError, match=r"gone\.toml"):
        AgentSettings.load()
    bad = tmp_path / "bad.toml"
    bad.write_text("server = [\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        AgentSettings.load(bad)


@pytest.mark.parametrize("case", ["missing-config", "bad-value"])
def test_agent_run_with_unusable_settings_exits_with_one_line(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    args = ["run", "--config", "missing.toml"]
    if case == "bad-value":
        monkeypatch.setenv("PHONEFLEET_AGENT_ADB_PORT", "not-a-port")
        args = ["run"]
    result = CliRunner().invoke(agent_cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert ("missing.toml" if case == "missing-config" else "adb_port") in lines[0]
