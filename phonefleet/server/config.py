"""Server settings: command-line flags override ``PHONEFLEET_*`` environment variables, which override defaults."""

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from phonefleet.protocol.health import HealthThresholds
from phonefleet.server.supabase_auth import SupabaseAuthConfig

ENV_PREFIX = "PHONEFLEET_"


class Settings(BaseSettings):
    """Built from keyword values (the flags), then ``PHONEFLEET_<FIELD>`` variables, then the defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    data_dir: Path = Path("./.phonefleet")
    database_url: str | None = Field(default=None, description="Any PostgreSQL; embedded when unset.",
                                     validation_alias=AliasChoices("PHONEFLEET_DATABASE_URL", "DATABASE_URL"))
    admin_token: str | None = None
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout_sec: float = Field(default=60.0, gt=0, description="A database connect or query taking longer "
                                  "fails the request with 503 database_unavailable (a stalled database).")
    lease_sec: float = Field(default=30.0, gt=0, description="How long a running assignment lives unextended.")
    agent_grace_sec: float = Field(default=20.0, gt=0, description="Silence after which an agent is gone.")
    heartbeat_sec: float = Field(default=5.0, gt=0)
    socket_ping_interval_sec: int = Field(default=10, ge=1, le=300, description=(
        "Engine.IO pings to every socket (agents and dashboards); a socket silent for interval + timeout is "
        "dropped by the server. Agents notice a silent link themselves, much sooner (agent:ping)."))
    socket_ping_timeout_sec: int = Field(default=10, ge=1, le=300)
    poll_sec: float = Field(default=3.0, gt=0)
    maintenance_sec: float = Field(default=1.0, gt=0)
    retry_base_sec: float = Field(default=2.0, ge=0)
    retry_max_sec: float = Field(default=300.0, ge=0)
    progress_hz: float = Field(default=10.0, gt=0, description="Dashboard progress events per job per second.")
    screen_control_idle_sec: float = Field(default=600.0, gt=0, description="Remote control of a phone ends "
                                                                            "after this long without input.")
    screen_interval_ms: int = Field(default=150, ge=20, le=10_000, description="The least time between two "
                                                                               "captures of a watched screen.")
    token_recheck_sec: float = Field(default=5.0, gt=0, description="How often each node checks its sockets' "
                                                                   "tokens (covers a missed revocation message).")
    session_ttl_sec: float = Field(default=43_200.0, gt=0, description="A dashboard session ends this long after "
                                                                       "its last use.")
    sign_in_account_failures: int = Field(default=5, ge=1, description="Failed sign-ins one account may have "
                                                                       "within the window (on every node together).")
    sign_in_address_failures: int = Field(default=30, ge=1, description="Failed sign-ins one address may have "
                                                                        "within the window.")
    sign_in_window_sec: float = Field(default=900.0, gt=0, description="The window failed sign-ins count over.")
    max_body_bytes: int = 1024 * 1024
    header_timeout_sec: float = Field(default=30.0, gt=0, description="A connection must send a complete request "
                                      "head within this long of opening or of its previous response (slowloris); "
                                      "so it is also the keep-alive idle limit.")
    artifact_max_age_days: float | None = Field(default=None, gt=0, description="The retention duty deletes "
                                                "artifacts older than this (unset: kept whatever their age).")
    artifact_max_bytes: int | None = Field(default=None, ge=0, description="The retention duty deletes the oldest "
                                           "artifacts beyond this many bytes in all (unset: no limit).")
    artifact_retention_sec: float = Field(default=60.0, gt=0, description="How often the retention duty looks.")
    log_level: str = "WARNING"
    health_min_battery: int = Field(default=15, ge=0, le=100, description="The fleet's health thresholds until "
                                    "PATCH /api/fleet/policy changes them (each agent may override them): "
                                    "battery level (%).")
    health_max_battery_temp_c: float = Field(default=45.0, ge=0, le=100, description="Battery temperature (°C).")
    health_min_data_free_mb: int = Field(default=500, ge=0, le=1_000_000, description="Free space on /data (MB).")
    health_max_probe_sec: float = Field(default=5.0, gt=0, le=600, description="The health probe's round trip.")
    supabase_jwt_secret: str | None = Field(default=None, repr=False, description="Accept Supabase Auth JWTs "
                                            "signed HS256 with this secret (the project's legacy JWT secret).")
    supabase_jwks_url: str | None = Field(default=None, description="Accept Supabase Auth JWTs signed ES256/RS256 "
                                          "by a key of this JWKS (https://<ref>.supabase.co/auth/v1/.well-known/"
                                          "jwks.json).")
    supabase_jwt_audience: str = Field(default="authenticated", min_length=1, description="The audience (aud) a "
                                       "Supabase JWT must carry.")
    supabase_jwt_issuer: str | None = Field(default=None, description="The issuer (iss) a Supabase JWT must "
                                            "carry (https://<ref>.supabase.co/auth/v1); unchecked when unset.")
    supabase_first_role: Literal["viewer", "operator", "admin"] = Field(default="viewer", description="The role "
                                                                        "of a person created by their first sign-in.")
    supabase_jwks_timeout_sec: float = Field(default=3.0, gt=0, le=60, description="A JWKS fetch taking longer "
                                             "refuses the token (401) rather than hanging the request.")

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_embedded(cls, value: object) -> object:
        """An empty ``DATABASE_URL`` (as compose files leave it) means the embedded database, as if unset."""
        return None if isinstance(value, str) and not value.strip() else value

    def health_thresholds(self) -> HealthThresholds:
        """The thresholds of a fleet whose policy never changed them (the stored policy overrides these)."""
        return HealthThresholds(min_battery=self.health_min_battery, max_battery_temp_c=self.health_max_battery_temp_c,
                                min_data_free_mb=self.health_min_data_free_mb,
                                max_probe_sec=self.health_max_probe_sec)

    def supabase_auth(self) -> SupabaseAuthConfig:
        """Supabase Auth as configured (``enabled`` is false when neither secret nor JWKS is set)."""
        return SupabaseAuthConfig(jwt_secret=self.supabase_jwt_secret or None, jwks_url=self.supabase_jwks_url or None,
                                  audience=self.supabase_jwt_audience, issuer=self.supabase_jwt_issuer or None,
                                  jwks_timeout_sec=self.supabase_jwks_timeout_sec)

    @classmethod
    def from_env(cls, **flags: Any) -> "Settings":
        """The settings in force: ``flags`` given as None fall through to the environment, then the defaults."""
        return cls(**{name: value for name, value in flags.items() if value is not None})
