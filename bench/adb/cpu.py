"""CPU of the processes involved (this one, the adb server, the phonefleet server), from /proc."""

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


def adb_server_pid(port: int) -> int | None:
    """The adb server listening on ``port`` (``adb -L tcp:PORT fork-server server ...``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"fork-server" in argv and f"tcp:{port}".encode() in argv:
                    return int(entry.name)
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._t0 = time.perf_counter()

    def cores(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        return {name: (cpu_seconds(pid) - self._start[name]) / wall for name, pid in self.pids.items()}
