"""Action plans: an ordered list of generic device-lab steps, a discriminated union on ``type``."""

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, HttpUrl
from pydantic_core import core_schema

PACKAGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$"


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(default=None, max_length=200, description="Optional label shown in progress.")


class OpenUrlStep(_Step):
    """Open a URL with a VIEW intent, then stay on it for ``duration_sec``."""

    type: Literal["open_url"] = "open_url"
    url: HttpUrl
    duration_sec: float = Field(default=0, ge=0, le=86_400)
    package: str | None = Field(default=None, pattern=PACKAGE_PATTERN, description="Browser to use.")


class WaitStep(_Step):
    type: Literal["wait"] = "wait"
    duration_sec: float = Field(ge=0, le=86_400)


class TapStep(_Step):
    type: Literal["tap"] = "tap"
    x: int = Field(ge=0, le=100_000)
    y: int = Field(ge=0, le=100_000)


class SwipeStep(_Step):
    type: Literal["swipe"] = "swipe"
    x1: int = Field(ge=0, le=100_000)
    y1: int = Field(ge=0, le=100_000)
    x2: int = Field(ge=0, le=100_000)
    y2: int = Field(ge=0, le=100_000)
    duration_ms: int = Field(default=300, ge=0, le=60_000)


class KeyeventStep(_Step):
    type: Literal["keyevent"] = "keyevent"
    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Z0-9_]+$", description="e.g. KEYCODE_HOME or 3")


class TextStep(_Step):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=10_000)


class LaunchAppStep(_Step):
    type: Literal["launch_app"] = "launch_app"
    package: str = Field(pattern=PACKAGE_PATTERN)
    activity: str | None = Field(default=None, max_length=300)
    stop_first: bool = False


class StopAppStep(_Step):
    type: Literal["stop_app"] = "stop_app"
    package: str = Field(pattern=PACKAGE_PATTERN)


class InstallApkStep(_Step):
    type: Literal["install_apk"] = "install_apk"
    url: HttpUrl = Field(description="Where the agent fetches the APK from.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    reinstall: bool = True
    grant_permissions: bool = False


class RunTestsStep(_Step):
    """Run instrumentation tests (``am instrument -w``)."""

    type: Literal["run_tests"] = "run_tests"
    runner: str = Field(min_length=3, max_length=300, description="package/runner class")
    args: dict[str, str] = Field(default_factory=dict)


class ScreenshotStep(_Step):
    type: Literal["screenshot"] = "screenshot"


class ShellStep(_Step):
    """Run a shell command; allowed only for jobs whose creator holds the shell right."""

    type: Literal["shell"] = "shell"
    command: str = Field(min_length=1, max_length=4_000)
    timeout_sec: float = Field(default=60, gt=0, le=3_600)


Step = Annotated[
    OpenUrlStep
    | WaitStep
    | TapStep
    | SwipeStep
    | KeyeventStep
    | TextStep
    | LaunchAppStep
    | StopAppStep
    | InstallApkStep
    | RunTestsStep
    | ScreenshotStep
    | ShellStep,
    Field(discriminator="type"),
]


@dataclass(frozen=True)
class UnknownStep:
    """A plan step this side cannot read: a type it does not know (a newer server's), or fields that do not fit
    its model. It travels as the plain object it came as, so that only the run that holds it fails, with a clear
    error, instead of the whole message."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._of, core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema()),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda step: step.fields))

    @classmethod
    def _of(cls, fields: dict[str, Any]) -> "UnknownStep":
        return cls(str(fields.get("type", "")), fields)


AnyStep = Annotated[Step | UnknownStep, Field(union_mode="left_to_right")]
"""A step as an agent receives it: a ``Step`` when it fits one, else an ``UnknownStep``."""

STEP_TYPES: tuple[str, ...] = (
    "open_url", "wait", "tap", "swipe", "keyevent", "text", "launch_app",
    "stop_app", "install_apk", "run_tests", "screenshot", "shell",
)


class Plan(BaseModel):
    """Wrapper used where a plan must be validated on its own (e.g. from the database)."""

    steps: list[Step] = Field(min_length=1, max_length=200)
