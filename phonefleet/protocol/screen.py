"""The live screen and remote control: events and payloads between dashboard, server and agent.

Frames travel as a binary attachment beside their metadata (``[FrameMeta, bytes]``), never as base64 JSON:
agent -> server on ``/agent`` and server -> browser on ``/dashboard``, both under ``screen:frame``. The agent
streams a phone only between ``screen:start`` and ``screen:stop``, which the server sends when the first
viewer comes and the last one goes; each side keeps only the newest frame for a peer that is slow (one in
flight, acknowledged), so a slow viewer sees fewer frames, never older ones.
"""

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from phonefleet.protocol.times import UtcDatetime

# dashboard -> server (each answered by an ack: {"ok": true, ...} or {"ok": false, "error": ...})
SCREEN_WATCH: Final = "screen:watch"
SCREEN_UNWATCH: Final = "screen:unwatch"
SCREEN_CONTROL: Final = "screen:control"
"""Take (``take: true``) or release control of a phone."""
SCREEN_INPUT: Final = "screen:input"
"""Dashboard -> server (``InputCommand``, the sender must hold control); server -> agent (``AgentInput``)."""

# server -> agent
SCREEN_START: Final = "screen:start"
SCREEN_STOP: Final = "screen:stop"
SCREEN_SNAPSHOT: Final = "screen:snapshot"
"""One frame now, answered as a ``screen:frame`` whose ``snapshot`` is the request's id."""

# agent -> server and server -> dashboard
SCREEN_FRAME: Final = "screen:frame"
# server -> dashboard
SCREEN_SESSION: Final = "screen:session"

BINARY_EVENTS: Final = frozenset({SCREEN_FRAME})
"""The only events that carry bytes (as Socket.IO binary attachments); every other packet is JSON text."""
DASHBOARD_SCREEN_EVENTS: Final = frozenset({SCREEN_WATCH, SCREEN_UNWATCH, SCREEN_CONTROL, SCREEN_INPUT})

MAX_COORD: Final = 100_000


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


Coord = Annotated[int, Field(ge=0, le=MAX_COORD, strict=True)]


class TapInput(_Payload):
    type: Literal["tap"] = "tap"
    x: Coord
    y: Coord


class SwipeInput(_Payload):
    type: Literal["swipe"] = "swipe"
    x1: Coord
    y1: Coord
    x2: Coord
    y2: Coord
    duration_ms: int = Field(default=300, ge=1, le=10_000, strict=True)


class TextInput(_Payload):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=1000)


class KeyeventInput(_Payload):
    type: Literal["keyevent"] = "keyevent"
    key: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$",
                     description="A KEYCODE_ name (BACK, HOME, APP_SWITCH, WAKEUP, ENTER, DEL, ...) or number.")


class RotateInput(_Payload):
    """Turn the display a quarter (auto-rotate off, ``user_rotation`` + 1)."""

    type: Literal["rotate"] = "rotate"


InputCommand = Annotated[TapInput | SwipeInput | TextInput | KeyeventInput | RotateInput,
                         Field(discriminator="type")]
INPUT_ADAPTER: TypeAdapter[InputCommand] = TypeAdapter(InputCommand)


class InputBody(BaseModel):
    """``POST /api/devices/{id}/input``, as documented: ``type`` says which of the input commands it is and
    which fields it needs (tap: x, y; swipe: x1, y1, x2, y2, duration_ms; text: text; keyevent: key; rotate:
    none). Read with ``INPUT_ADAPTER``, so a missing or wrong field is named."""

    type: Literal["tap", "swipe", "text", "keyevent", "rotate"]
    x: int | None = None
    y: int | None = None
    x1: int | None = None
    y1: int | None = None
    x2: int | None = None
    y2: int | None = None
    duration_ms: int | None = None
    text: str | None = None
    key: str | None = None


class InputAccepted(BaseModel):
    device_id: int
    input: InputCommand
    controller: str


# ---------------------------------------------------------------- dashboard -> server


class WatchRequest(_Payload):
    device_id: int = Field(ge=1, le=2**63 - 1, strict=True)
    max_width: int = Field(default=480, ge=64, le=2000, strict=True,
                           description="Frames are scaled down to this width at most.")


class ControlRequest(_Payload):
    device_id: int = Field(ge=1, le=2**63 - 1, strict=True)
    take: bool = Field(strict=True)


class DashboardInput(_Payload):
    device_id: int = Field(ge=1, le=2**63 - 1, strict=True)
    input: InputCommand


# ---------------------------------------------------------------- server -> agent


class StreamStart(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    max_width: int = Field(default=480, ge=64, le=4000)
    quality: int = Field(default=70, ge=10, le=95)
    interval_ms: int = Field(default=150, ge=20, le=10_000, description="The least time between captures.")


class StreamStop(_Payload):
    serial: str = Field(min_length=1, max_length=200)


class SnapshotRequest(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    request_id: int = Field(ge=1)
    format: Literal["jpeg", "png"] = "jpeg"
    max_width: int | None = Field(default=None, ge=16, le=4000)
    quality: int = Field(default=80, ge=10, le=95)


class AgentInput(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    input: InputCommand


# ---------------------------------------------------------------- frames and sessions


class FrameMeta(_Payload):
    """What travels beside a frame's bytes."""

    serial: str = Field(min_length=1, max_length=200)
    device_id: int | None = Field(default=None, description="Set by the server (agents know serials).")
    seq: int = Field(ge=0, description="Per stream, rising; a new stream starts again at 1.")
    width: int = Field(ge=1, le=20_000)
    height: int = Field(ge=1, le=20_000)
    phone_width: int = Field(ge=1, le=20_000, description="The phone's real resolution, as ``input`` counts it.")
    phone_height: int = Field(ge=1, le=20_000)
    taken_at: UtcDatetime
    format: Literal["jpeg", "png"] = "jpeg"
    snapshot: int | None = Field(default=None, description="Answers this ``screen:snapshot`` request.")


class ScreenSession(BaseModel):
    """Who watches and who controls a phone (``screen:session``, and the answer to watch and control)."""

    device_id: int
    watchers: int
    controller: str | None = None
    controlled_since: UtcDatetime | None = None
    you_control: bool = False
