"""A virtual phone's log: a ring buffer of lines stamped by the phone's clock (printed by ``logcat``)."""

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class LogEntry:
    at: float
    """Epoch seconds by the phone's clock."""
    pid: int
    tid: int
    level: str
    tag: str
    message: str

    def render(self) -> str:
        stamp = datetime.fromtimestamp(self.at, UTC)
        return (f"{stamp:%m-%d %H:%M:%S}.{stamp.microsecond // 1000:03d} {self.pid:5d} {self.tid:5d} "
                f"{self.level} {self.tag:<8}: {self.message}")


class LogBuffer:
    """The newest ``limit`` log lines of one phone."""

    def __init__(self, limit: int = 20_000) -> None:
        self.entries: deque[LogEntry] = deque(maxlen=limit)

    def add(self, at: float, level: str, tag: str, message: str, *, pid: int, tid: int | None = None) -> None:
        for line in message.splitlines() or [""]:
            self.entries.append(LogEntry(at, pid, pid if tid is None else tid, level, tag, line))

    def clear(self) -> None:
        self.entries.clear()

