"""A run's evidence as the contract knows it: its step timeline, the crashes in its logcat, and logcat lines.

The agent records one ``StepRecord`` per plan step it reached (started, ended, how, the exit code and the
tail of the output of the commands the step ran) and sends them with the run's result; steps it never
reached are not sent: ``GET /api/assignments/{id}/steps`` lists them as ``not_run`` once the run has ended.

Logcat is kept as the phone prints it with ``-v threadtime``; ``parse_line`` reads one such line and
``find_crashes`` finds the crashes and ANRs in a capture. Both the agent (which flags crashes) and the
server (which filters a stored capture) use them, so they live here with the models.
"""

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from phonefleet.protocol.times import UtcDatetime

OUTPUT_TAIL_CHARS: Final = 8192
"""A step keeps the last 8 KiB (characters) of what its commands printed."""
MAX_STEPS: Final = 1000
MAX_CRASHES: Final = 50
LOGCAT_MAX_BYTES: Final = 2 * 1024 * 1024
"""A run's logcat is kept up to its last 2 MiB (uncompressed); a longer one says so in its first line."""
LOGCAT_TRUNCATED_MARK: Final = "--------- phonefleet: logcat truncated to its last"
LOGCAT_KIND: Final = "logcat"


def logcat_artifact_name(assignment_id: int) -> str:
    return f"{assignment_id}-logcat.txt.gz"


class StepOutcome(StrEnum):
    completed = "completed"
    failed = "failed"
    timed_out = "timed_out"
    cancelled = "cancelled"
    not_run = "not_run"
    """Never reached (the run ended before it): given by the server from the plan, never sent by an agent."""


class LogLevel(StrEnum):
    """Logcat priorities, lowest first (``A``, assert, is shown as ``F``)."""

    V = "V"
    D = "D"
    I = "I"  # noqa: E741 (logcat's own letter)
    W = "W"
    E = "E"
    F = "F"


LEVEL_ORDER: Final = {level: rank for rank, level in enumerate(LogLevel)}


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepRecord(_Payload):
    """One plan step of one run, as its agent saw it."""

    step_index: int = Field(ge=0, le=10_000)
    type: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    outcome: StepOutcome
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1,
                                  description="The exit code of the last command the step ran (none: it ran none).")
    output_tail: str | None = Field(default=None, max_length=OUTPUT_TAIL_CHARS,
                                    description="The last 8 KiB of what the step's commands printed.")
    error: str | None = Field(default=None, max_length=10_000)


class Crash(_Payload):
    """A crash (``FATAL EXCEPTION``) or ANR (``ANR in``) found in a run's logcat."""

    process: str = Field(max_length=300)
    line: str = Field(max_length=1000, description="The logcat line that names it.")


class StepTimeline(BaseModel):
    """``GET /api/assignments/{id}/steps``: the run's steps by index. Steps are recorded when the run ends (a
    running one answers none yet); once it has ended, the plan's steps it never reached are ``not_run``."""

    assignment_id: int
    status: str
    steps: list[StepRecord]
    failed_step: int | None = Field(default=None, description="The index of the step the run failed on, if any.")
    crashes: list[Crash] = Field(default_factory=list)


class LogcatLine(BaseModel):
    at: str = Field(description="The phone's own time, as logcat prints it: MM-DD hh:mm:ss.mmm")
    pid: int
    tid: int
    level: LogLevel
    tag: str
    message: str


class LogcatAnswer(BaseModel):
    """``GET /api/assignments/{id}/logcat``: the matching lines (at most ``limit``, the last ones when more
    match), with the totals."""

    assignment_id: int
    lines: list[LogcatLine]
    total: int = Field(description="Log lines in the capture.")
    matched: int = Field(description="Lines that match the filter (more than answered when ``truncated``).")
    truncated: bool = Field(description="More lines matched than ``limit``: the last ``limit`` are answered.")
    capture_truncated: bool = Field(description="The capture itself was cut to its last 2 MiB on the agent.")
    artifact: str = Field(description="The stored file's name, for the raw download.")


THREADTIME: Final = re.compile(
    r"^(?P<at>\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\s+(?P<pid>\d+)\s+(?P<tid>\d+)\s+(?P<level>[VDIWEFA])\s+"
    r"(?P<tag>.*?)\s*: (?P<message>.*)$")
FATAL: Final = re.compile(r"FATAL EXCEPTION")
PROCESS: Final = re.compile(r"Process: ([^,\s]+)")
ANR: Final = re.compile(r"ANR in (\S+)")


def parse_line(text: str) -> LogcatLine | None:
    """One ``-v threadtime`` line, or None for anything else (a ``--------- beginning of`` banner, ...)."""
    match = THREADTIME.match(text)
    if match is None:
        return None
    level = match["level"]
    return LogcatLine(at=match["at"], pid=int(match["pid"]), tid=int(match["tid"]),
                      level=LogLevel.F if level == "A" else LogLevel(level), tag=match["tag"], message=match["message"])


def find_crashes(lines: Iterable[str], limit: int = MAX_CRASHES) -> list[Crash]:
    """Crashes and ANRs: a ``FATAL EXCEPTION`` line is named by the ``Process: <name>`` line that follows it
    (within a few lines); ``ANR in <process>`` names its own."""
    found: list[Crash] = []
    pending: str | None = None  # a FATAL EXCEPTION line still waiting for its Process: line
    waited = 0
    for raw in lines:
        text = raw.rstrip("\r\n")
        if pending is not None:
            process = PROCESS.search(text)
            waited += 1
            if process is not None or waited > 5:
                found.append(Crash(process=(process.group(1) if process else "unknown")[:300], line=pending[:1000]))
                pending = None
        if FATAL.search(text):
            pending, waited = text, 0
        elif (anr := ANR.search(text)) is not None:
            found.append(Crash(process=anr.group(1)[:300], line=text[:1000]))
        if len(found) >= limit:
            return found[:limit]
    if pending is not None:
        found.append(Crash(process="unknown", line=pending[:1000]))
    return found[:limit]
