"""py-spy on this process during the throughput jobs, and where its threads' time goes, by part."""

import asyncio
import linecache
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path


class Spy:
    """``py-spy record --idle --threads --nonblocking`` on this process, for the throughput jobs only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wall = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[bytes] | None = None

    async def start(self) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self._proc = await asyncio.create_subprocess_exec(
            str(exe) if exe.exists() else "py-spy", "record", "--pid", str(os.getpid()), "--rate", "100", "--idle",
            "--threads", "--nonblocking", "--format", "raw", "--output", str(self.path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self._proc.stdout is not None
        async with asyncio.timeout(30):  # sampling starts within a few ms of this line
            while b"Sampling process" not in await self._proc.stdout.readline():
                pass
        self._drain = asyncio.create_task(self._proc.stdout.read())
        self.wall = time.perf_counter()

    async def stop(self) -> None:
        if self._proc is not None:
            self.wall = time.perf_counter() - self.wall
            self._proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(self._proc.wait(), 60)
            if self._drain is not None:
                await self._drain
            self._proc = None


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
LOOP_PARTS = [  # first match walking from the leaf up; asyncio's own frames are attributed to their caller
    ("virtual phones (adbd protocol, fake sh)", ("phonefleet/virtual/",)),
    ("agent: outbox (SQLite INSERT per report, peek, DELETE per ack)", ("phonefleet/agent/outbox.py",)),
    ("agent: runner, steps, to_thread, tracker", ("phonefleet/agent/",)),
    ("link: python-socketio, engine.io, aiohttp", ("socketio/", "engineio/", "aiohttp/", "orjson", "websocket")),
    ("benchmark driver (job polls, outbox sampling)", ("bench/", "asyncpg/")),
]


def _source_line(path: str, line: int) -> str:
    for root in sys.path:
        full = os.path.join(root or ".", path)
        if os.path.exists(full):
            return linecache.getline(full, line)
    return ""


def _frames(stack: str) -> list[tuple[str, str, int]]:
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw)
        out.append((m["func"], m["file"], int(m["line"])) if m else (raw, "", 0))
    return out


def _loop_part(frames: list[tuple[str, str, int]]) -> str:
    func, path, _ = frames[-1]
    if path.startswith("selectors.py") or func.endswith(".select"):
        return "idle (waiting in epoll)"
    start = 0  # the callback the loop is running: the frames below its Handle._run
    for index, (func, _, _) in enumerate(frames):
        if func in ("Handle._run", "BaseEventLoop._run_once"):
            start = index + 1
    if any(func.endswith(("async_lean_shell", "_arequest", "async_shell")) for func, _, _ in frames[start:]):
        return "what-if async-adb: the lean adb client on the loop"
    for _, path, _ in reversed(frames[start:]):
        for name, marks in LOOP_PARTS:
            if any(mark in path for mark in marks):
                return name
    return "asyncio itself (transports, wake-ups from threads, futures)"


def _worker_part(frames: list[tuple[str, str, int]]) -> str:
    funcs = [f for f, _, _ in frames]
    func, path, line = frames[-1]
    if func == "_worker" and "concurrent/futures" in path:
        return "idle (no work queued)"
    text = _source_line(path, line)
    in_version = any(f.endswith("server_version") for f in funcs)
    if "time.sleep" in text:
        return "adbutils: time.sleep(0.01) in AdbConnection.close" + (" (host:version)" if in_version else
                                                                        " (shell)")
    if in_version:
        return "adbutils: host:version connection (connect, send, reply)"
    if any(f.endswith(("_create_socket", "_safe_connect")) for f in funcs):
        return "adbutils: connect() to the adb server for the shell"
    if any("adbutils/" in p for _, p, _ in frames):
        if ".recv(" in text or func.endswith(("_read_fully", "read_until_close", "recv")):
            return "adbutils: waiting for the reply (transport OKAY, shell output; incl. GIL waits)"
        return "adbutils: other (sending, parsing, Python)"
    if any("phonefleet/agent/" in p for _, p, _ in frames) or any(f == "lean_shell" for f in funcs):
        return "other work (lean client, outbox, files)"
    return "other"


def summarize_profile(path: Path, wall: float, jobs: float) -> list[str]:
    """The loop thread's and the executor threads' time by part, from py-spy's raw (collapsed) output."""
    loop: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    threads: set[str] = set()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        head, _, rest = stack.partition(": ")
        name, _, frames_text = rest.partition(";")
        if not frames_text:
            continue
        count = int(count_text)
        frames = _frames(frames_text)
        if name == "MainThread":
            loop[_loop_part(frames)] += count
        elif name.startswith("asyncio_"):
            threads.add(head)
            workers[_worker_part(frames)] += count
    lines = []
    total = sum(loop.values())
    if total:
        busy = total - loop["idle (waiting in epoll)"]
        lines.append(f"event loop thread: busy {busy / total:.0%} of {wall:.1f} s sampled, of which {jobs:.1f} s "
                     f"inside the jobs ({total} samples)")
        lines += [f"  {n / total:6.1%}  {part}" for part, n in loop.most_common()]
    wtotal = sum(workers.values())
    if wtotal:
        per_thread = wtotal / max(1, len(threads))
        lines.append(f"executor threads ({len(threads)} seen, {wtotal} thread-samples; share of their time):")
        lines += [f"  {n / wtotal:6.1%}  {part}  (= {n / per_thread:.2f} threads on average)"
                  for part, n in workers.most_common()]
    return lines
