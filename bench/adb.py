"""PC agent over ADB: adb commands per second and open_url fan-out, through the real adb server, against the floor.

Per size (100 and 500 virtual phones), in one run:

1. **Throughput.** The real ``phonefleet.agent.agent.Agent`` runs against a real server; the driver posts a job
   whose plan is many cheap steps (``tap`` x 1 1) to every phone and waits until the job is ``completed`` in the
   database. Rate = ``input tap`` commands counted in the virtual phones' action logs / (completed - POST).
2. **Fan-out.** ``POST /api/jobs`` of one ``open_url`` (``duration_sec`` 0) until every phone's action log holds
   its VIEW intent (the record's own ``time.time()`` stamp minus the instant before the POST); a few runs, each
   after the previous job is ``completed`` and every phone is idle again.
3. **Floor**, same phones and adb server: bare adbutils ``shell2`` loops (what ``AdbPhone.shell`` calls), one
   command in flight per phone like the agent, from a thread pool of the agent's size (asyncio's default
   executor, ``min(32, cpu + 4)``) and from a larger one; a lean client (one ``shell,v2`` connection per command,
   no version check, no sleep) from the agent's pool size and on the event loop without threads; the same VIEW
   intent to every phone at once; and the latency of one call from one thread, to show adbutils' per-call cost.

Processes: the phonefleet server in a spawned child (as every benchmark); the adb server (the adbutils wheel's
binary, ``LocalAdbServer`` on a free port, never 5037) in its own process; the agent, its virtual phones and the
driver share this process and its event loop, as ``phonefleet-agent --virtual N`` runs them. ``--phones-apart``
puts the virtual phones in a child process of their own instead (closer to real phones, whose adbd work is not
on the agent's CPU). ``--profile`` samples this process with py-spy during the throughput jobs and prints where
its threads spend their time; ``--what-if`` tries agent-side changes from the outside.
"""

import argparse
import asyncio
import contextlib
import linecache
import multiprocessing
import os
import platform
import re
import signal
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import adbutils
import asyncpg

from bench.harness import (
    LOOPBACK,
    Operator,
    Summary,
    Watcher,
    command,
    database_facts,
    postgres_root,
    run,
    running_server,
    scratch_database,
    session,
)
from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.agent.link import MERGEABLE
from phonefleet.agent.phone import AdbPhone
from phonefleet.protocol import events as ev
from phonefleet.server.auth import AGENT_PREFIX, hash_token, new_token
from phonefleet.virtual import LocalAdbServer, VirtualFleet, VirtualPhone

MODULE = "bench.adb"
TAP = "input tap 1 1"
VIEW = "android.intent.action.VIEW"
URL = "https://example.com/"
VIEW_COMMAND = f"am start -a {VIEW} -d {URL}"
AGENT_POOL = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor, which asyncio.to_thread uses
BIG_POOL = 64
POLL_SEC = 0.02  # the driver's job-status poll (asyncpg, on the agent's loop): ~1 % of one core

WHAT_IF = {
    "pool-64": f"the agent's default executor has {BIG_POOL} threads instead of {AGENT_POOL}",
    "cache-version": "adbutils asks the adb server its version once per client, not before every command",
    "no-close-sleep": "adbutils closes its sockets without the 10 ms time.sleep",
    "lean-adb": "AdbPhone.shell uses one shell,v2 connection per command (no version check, no sleep, no echo)",
    "async-adb": f"AdbPhone.shell speaks shell,v2 on the event loop (no thread), at most {BIG_POOL} in flight",
    "group-reports": "the link sends each outbox window as one started, one progress (latest per assignment, none "
                     "for assignments finishing in it) and one finished event, instead of one per run of a kind",
}


@dataclass
class Size:
    phones: int
    taps: int  # steps of the throughput job (one adb shell command each)
    jobs: int  # throughput jobs
    fanouts: int  # open_url runs
    floor_per_phone: int  # commands per phone in each floor loop


# ---------------------------------------------------------------------- a lean adb client (floor and what-if)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the adb server closed the connection")
        data += chunk
    return bytes(data)


def _request(sock: socket.socket, text: str) -> None:
    encoded = text.encode()
    sock.sendall(b"%04x" % len(encoded) + encoded)
    status = _exactly(sock, 4)
    if status != b"OKAY":
        length = int(_exactly(sock, 4), 16) if status == b"FAIL" else 0
        raise adbutils.AdbError(f"{text}: {status!r} {_exactly(sock, length).decode(errors='replace')}")


def lean_shell(port: int, serial: str, cmd: str, timeout: float | None = 60) -> tuple[int, str]:
    """One connection to the adb server per command: ``host:tport:serial:S`` then ``shell,v2:CMD``; the exit code
    comes in the shell protocol's exit packet, so no ``; echo X4EXIT:$?`` and no second connection."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        _request(sock, f"host:tport:serial:{serial}")
        _exactly(sock, 8)  # transport id
        _request(sock, f"shell,v2:{cmd}")
        out = bytearray()
        while True:
            kind, length = struct.unpack("<BI", _exactly(sock, 5))
            data = _exactly(sock, length)
            if kind == 3:
                return data[0], out.decode(errors="replace")
            if kind in (1, 2):
                out += data


async def _arequest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> None:
    encoded = text.encode()
    writer.write(b"%04x" % len(encoded) + encoded)
    status = await reader.readexactly(4)
    if status != b"OKAY":
        length = int(await reader.readexactly(4), 16) if status == b"FAIL" else 0
        raise adbutils.AdbError(f"{text}: {status!r} {(await reader.readexactly(length)).decode(errors='replace')}")


async def async_lean_shell(port: int, serial: str, cmd: str) -> tuple[int, str]:
    """``lean_shell`` on the event loop: no thread, no GIL hand-off."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await _arequest(reader, writer, f"host:tport:serial:{serial}")
        await reader.readexactly(8)
        await _arequest(reader, writer, f"shell,v2:{cmd}")
        out = bytearray()
        while True:
            kind, length = struct.unpack("<BI", await reader.readexactly(5))
            data = await reader.readexactly(length)
            if kind == 3:
                return data[0], out.decode(errors="replace")
            if kind in (1, 2):
                out += data
    finally:
        writer.close()


def _close_without_sleep(self: Any) -> None:
    conn = self._AdbConnection__conn
    if conn is None:
        return
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
    conn.close()
    self._AdbConnection__conn = None


Batch = list[tuple[str, dict[str, Any], list[int]]]


def grouped_batch(items: list[Any], limit: int = 2000) -> Batch:
    """``phonefleet.agent.link.batch`` as suggested: between two non-mergeable events, all started items travel
    as one event, then all progress items (only the latest per assignment, and none for an assignment whose
    finished is in the same window), then all finished items. Per assignment the order stays started <
    progress < finished, which is all the server's state machine needs."""
    kinds = (ev.ASSIGNMENT_STARTED, ev.ASSIGNMENT_PROGRESS, ev.ASSIGNMENT_FINISHED)
    out: Batch = []
    segment: list[Any] = []

    def flush() -> None:
        finished = {int(r["assignment_id"]) for i in segment if i.event == ev.ASSIGNMENT_FINISHED
                    for r in i.data["results"]}
        latest: dict[int, dict[str, Any]] = {}
        for item in segment:
            if item.event == ev.ASSIGNMENT_PROGRESS:
                for entry in item.data["items"]:
                    if int(entry["assignment_id"]) not in finished:
                        latest[int(entry["assignment_id"])] = entry
        groups: list[tuple[str, list[Any], list[int]]] = []
        for kind in kinds:
            key = MERGEABLE[kind]
            ids = [i.id for i in segment if i.event == kind]
            entries = list(latest.values()) if kind == ev.ASSIGNMENT_PROGRESS else \
                [e for i in segment if i.event == kind for e in i.data[key]]  # fmt: skip
            if ids:
                groups.append((kind, entries, ids))
        for n, (kind, entries, ids) in enumerate(groups):
            if not entries:  # every progress item was superseded: its outbox rows leave with the next event
                groups[n + 1][2].extend(ids)
                continue
            for start in range(0, len(entries), limit):
                last = start + limit >= len(entries)
                out.append((kind, {MERGEABLE[kind]: entries[start : start + limit]}, ids if last else []))
        segment.clear()

    for item in items:
        if item.event in kinds:
            segment.append(item)
        else:
            flush()
            out.append((item.event, item.data, [item.id]))
    flush()
    return out


@contextlib.contextmanager
def patched(what_if: frozenset[str], adb_port: int) -> Iterator[None]:
    """Agent-side changes tried from the outside (nothing under phonefleet/ is edited); undone on exit."""
    from adbutils import _adb

    from phonefleet.agent import link

    saved = (_adb.BaseClient.server_version, _adb.AdbConnection.close, AdbPhone.shell, link.batch)
    if "group-reports" in what_if:
        link.batch = grouped_batch
    if "cache-version" in what_if:
        original = saved[0]
        versions: dict[int, int] = {}

        def server_version(self: Any) -> int:
            key = id(self)
            if key not in versions:
                versions[key] = int(original(self))
            return versions[key]

        _adb.BaseClient.server_version = server_version
    if "no-close-sleep" in what_if:
        _adb.AdbConnection.close = _close_without_sleep
    if "lean-adb" in what_if:
        async def shell(self: AdbPhone, cmd: str, timeout: float | None = None) -> tuple[int, str]:
            return await asyncio.to_thread(lean_shell, adb_port, self.serial, cmd, timeout or 60)

        setattr(AdbPhone, "shell", shell)  # noqa: B010 (mypy refuses assigning to a method)
    if "async-adb" in what_if:
        gate = asyncio.Semaphore(BIG_POOL)  # the adb server select()s: keep its sockets well under 1,024

        async def async_shell(self: AdbPhone, cmd: str, timeout: float | None = None) -> tuple[int, str]:
            async with gate, asyncio.timeout(timeout or 60):
                return await async_lean_shell(adb_port, self.serial, cmd)

        setattr(AdbPhone, "shell", async_shell)  # noqa: B010
    try:
        yield
    finally:
        _adb.BaseClient.server_version, _adb.AdbConnection.close = saved[0], saved[1]
        setattr(AdbPhone, "shell", saved[2])  # noqa: B010
        link.batch = saved[3]


# ---------------------------------------------------------------------- the virtual phones, here or in a child


Hits = list[tuple[int, float, float]]  # per phone: matching records since the mark, first and last time.time()


def _scan(phones: Sequence[VirtualPhone], marks: Sequence[int], needle: str) -> Hits:
    out: Hits = []
    for phone, mark in zip(phones, marks, strict=True):
        log = phone.actions
        dropped = len(log) - len(log.records)
        stamps = [r.timestamp for r in log.records[max(0, mark - dropped):] if needle in r.command]
        out.append((len(stamps), min(stamps, default=float("nan")), max(stamps, default=float("nan"))))
    return out


async def _wait_all(phones: Sequence[VirtualPhone], marks: Sequence[int], needle: str, timeout: float) -> list[float]:
    """Each phone's first record holding ``needle`` since its mark (waiting for it; event-driven, no polling)."""
    records = await asyncio.gather(*(p.actions.wait_for(lambda r: needle in r.command, timeout, since=m)
                                     for p, m in zip(phones, marks, strict=True)))
    return [r.timestamp for r in records]


class Phones(Protocol):
    serials: list[str]
    pid: int

    async def marks(self) -> list[int]: ...

    async def scan(self, marks: Sequence[int], needle: str) -> Hits: ...

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]: ...

    async def stop(self) -> None: ...


class LocalPhones:
    """A ``VirtualFleet`` on this process' loop, as ``phonefleet-agent --virtual N`` runs it."""

    def __init__(self, fleet: VirtualFleet) -> None:
        self.fleet = fleet
        self.serials = fleet.serials
        self.pid = os.getpid()

    @classmethod
    async def start(cls, count: int, adb_port: int) -> "LocalPhones":
        fleet = VirtualFleet(count, adb_port=adb_port)
        await fleet.start()
        return cls(fleet)

    async def marks(self) -> list[int]:
        return [len(p.actions) for p in self.fleet.phones]

    async def scan(self, marks: Sequence[int], needle: str) -> Hits:
        return _scan(self.fleet.phones, marks, needle)

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]:
        return await _wait_all(self.fleet.phones, marks, needle, timeout)

    async def stop(self) -> None:
        await self.fleet.stop()


def _phone_host(count: int, adb_port: int, pipe: Connection) -> None:
    asyncio.run(_phone_host_async(count, adb_port, pipe))


async def _phone_host_async(count: int, adb_port: int, pipe: Connection) -> None:
    fleet = VirtualFleet(count, adb_port=adb_port)
    try:
        await fleet.start()
    except Exception as exc:
        pipe.send(("error", repr(exc)))
        return
    pipe.send(("ready", fleet.serials, os.getpid()))
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as reader:
        while True:
            request = await loop.run_in_executor(reader, pipe.recv)
            if request[0] == "stop":
                break
            try:
                if request[0] == "marks":
                    result: Any = [len(p.actions) for p in fleet.phones]
                elif request[0] == "scan":
                    result = _scan(fleet.phones, request[1], request[2])
                else:
                    result = await _wait_all(fleet.phones, request[1], request[2], request[3])
            except Exception as exc:
                pipe.send(("error", repr(exc)))
            else:
                pipe.send(("ok", result))
    await fleet.stop()
    pipe.send(("stopped",))


class RemotePhones:
    """A ``VirtualFleet`` in a spawned child process of its own; its action logs are read over a pipe."""

    def __init__(self, count: int, adb_port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_phone_host, args=(count, adb_port, child), name="virtual-phones",
                                 daemon=True)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="phones-pipe")  # never the agent's executor
        self._lock = asyncio.Lock()
        self.serials: list[str] = []
        self.pid = 0

    @classmethod
    async def start(cls, count: int, adb_port: int) -> "RemotePhones":
        self = cls(count, adb_port)
        self._proc.start()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._reader, self._pipe.poll, 120):
            self._proc.kill()
            raise RuntimeError("the virtual phones' process did not start")
        reply = self._pipe.recv()
        if reply[0] != "ready":
            raise RuntimeError(f"virtual phones: {reply}")
        _, self.serials, self.pid = reply
        return self

    async def _call(self, *request: Any) -> Any:
        async with self._lock:
            self._pipe.send(request)
            reply = await asyncio.get_running_loop().run_in_executor(self._reader, self._pipe.recv)
        if reply[0] != "ok":
            raise RuntimeError(f"virtual phones: {reply}")
        return reply[1]

    async def marks(self) -> list[int]:
        marks: list[int] = await self._call("marks")
        return marks

    async def scan(self, marks: Sequence[int], needle: str) -> Hits:
        hits: Hits = await self._call("scan", list(marks), needle)
        return hits

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]:
        stamps: list[float] = await self._call("wait", list(marks), needle, timeout)
        return stamps

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._proc.is_alive():
            self._pipe.send(("stop",))
            if await loop.run_in_executor(self._reader, self._pipe.poll, 60):
                self._pipe.recv()
            await loop.run_in_executor(self._reader, self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()
        self._reader.shutdown(wait=False)


# ---------------------------------------------------------------------- CPU of the processes involved


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


# ---------------------------------------------------------------------- py-spy: where the agent process' time goes


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


# ---------------------------------------------------------------------- the floor: bare adbutils loops


Call = Callable[[str, str], tuple[int, str]]


def adbutils_call(port: int, serials: Sequence[str]) -> Call:
    client = adbutils.AdbClient(host=LOOPBACK, port=port)
    devices = {s: client.device(s) for s in serials}

    def call(serial: str, cmd: str) -> tuple[int, str]:
        result = devices[serial].shell2(cmd, timeout=60)  # what AdbPhone.shell runs
        return int(result.returncode), str(result.output)

    return call


def lean_call(port: int) -> Call:
    def call(serial: str, cmd: str) -> tuple[int, str]:
        return lean_shell(port, serial, cmd)

    return call


async def command_loop(call: Call, serials: Sequence[str], per_phone: int, pool: int) -> float:
    """Every phone ``per_phone`` taps, one in flight per phone (as the agent's workers do); returns seconds."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(pool, thread_name_prefix="floor") as executor:
        async def one(serial: str) -> None:
            for _ in range(per_phone):
                code, out = await loop.run_in_executor(executor, call, serial, TAP)
                if code != 0:
                    raise RuntimeError(f"{serial}: {TAP} exited {code}: {out}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(s) for s in serials))
        return time.perf_counter() - t0


async def async_loop(port: int, serials: Sequence[str], per_phone: int, in_flight: int) -> float:
    """``command_loop`` without threads: the lean client on the event loop, at most ``in_flight`` at once."""
    gate = asyncio.Semaphore(in_flight)

    async def one(serial: str) -> None:
        for _ in range(per_phone):
            async with gate:
                code, out = await async_lean_shell(port, serial, TAP)
            if code != 0:
                raise RuntimeError(f"{serial}: {TAP} exited {code}: {out}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in serials))
    return time.perf_counter() - t0


async def view_all(call: Call, phones: Phones, pool: int) -> float:
    """The VIEW intent to every phone at once; seconds until the last phone logged it (as the agent's figure)."""
    loop = asyncio.get_running_loop()
    marks = await phones.marks()
    with ThreadPoolExecutor(pool, thread_name_prefix="floor") as executor:
        t0 = time.time()
        await asyncio.gather(*(loop.run_in_executor(executor, call, s, VIEW_COMMAND) for s in phones.serials))
    stamps = await phones.wait_all(marks, VIEW, 30)
    return max(stamps) - t0


async def one_call_latency(call: Call, serial: str, calls: int = 30) -> Summary:
    """One thread, one phone, nothing else running: seconds per command."""
    def timed() -> float:
        t0 = time.perf_counter()
        code, _ = call(serial, TAP)
        assert code == 0
        return time.perf_counter() - t0

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="floor") as executor:
        await loop.run_in_executor(executor, timed)
        return Summary.of([await loop.run_in_executor(executor, timed) for _ in range(calls)])


@dataclass
class Floor:
    rates: dict[str, float]  # label -> commands/s
    views: dict[str, Summary]  # label -> seconds until every phone logged its VIEW
    latency: dict[str, Summary]  # label -> seconds per call, one thread


async def measure_floor(port: int, phones: Phones, size: Size) -> Floor:
    serials = phones.serials
    plain = adbutils_call(port, serials)
    lean = lean_call(port)
    rates: dict[str, float] = {}
    for label, call, pool in ((f"adbutils shell2, {AGENT_POOL} threads (the agent's pool)", plain, AGENT_POOL),
                              (f"adbutils shell2, {BIG_POOL} threads", plain, BIG_POOL),
                              (f"lean shell,v2 client, {AGENT_POOL} threads", lean, AGENT_POOL)):
        marks = await phones.marks()
        seconds = await command_loop(call, serials, size.floor_per_phone, pool)
        done = sum(n for n, _, _ in await phones.scan(marks, TAP))
        assert done == len(serials) * size.floor_per_phone, (label, done)
        rates[label] = done / seconds
    marks = await phones.marks()
    seconds = await async_loop(port, serials, size.floor_per_phone, BIG_POOL)
    done = sum(n for n, _, _ in await phones.scan(marks, TAP))
    assert done == len(serials) * size.floor_per_phone, ("asyncio", done)
    rates[f"lean shell,v2 on the event loop, {BIG_POOL} in flight"] = done / seconds
    views: dict[str, Summary] = {}
    for label, call, pool in ((f"adbutils, {AGENT_POOL} threads", plain, AGENT_POOL),
                              (f"adbutils, {BIG_POOL} threads", plain, BIG_POOL)):
        views[label] = Summary.of([await view_all(call, phones, pool) for _ in range(size.fanouts)])
    latency: dict[str, Summary] = {}
    latency["adbutils shell2 (2 connections, 2 x 10 ms sleep)"] = await one_call_latency(plain, serials[0])
    with patched(frozenset({"no-close-sleep"}), port):
        latency["adbutils shell2 without the close sleep"] = await one_call_latency(plain, serials[0])
        with patched(frozenset({"no-close-sleep", "cache-version"}), port):
            latency["  ... and the version asked once"] = await one_call_latency(plain, serials[0])
    latency["lean shell,v2 (1 connection)"] = await one_call_latency(lean, serials[0])
    return Floor(rates, views, latency)


# ---------------------------------------------------------------------- the agent


@dataclass
class AgentRun:
    startup: float = 0.0
    ready: float = 0.0
    rates: list[float] = field(default_factory=list)  # commands / (completed - POST)
    steady: list[float] = field(default_factory=list)  # commands / (last tap - first tap)
    job_sec: list[float] = field(default_factory=list)
    first_tap: list[float] = field(default_factory=list)  # POST -> first tap logged
    all_started: list[float] = field(default_factory=list)  # POST -> every phone logged its first tap
    last_tap: list[float] = field(default_factory=list)  # POST -> last tap logged
    outbox_max: list[int] = field(default_factory=list)  # the agent's outbox backlog, sampled every 0.25 s
    fanout: list[float] = field(default_factory=list)  # POST -> last VIEW logged
    assign: list[float] = field(default_factory=list)  # POST -> job:assign handled by the agent
    respond: list[float] = field(default_factory=list)  # POST -> 201
    cores: dict[str, float] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)


async def add_agent(dsn: str) -> str:
    from phonefleet.server.store import agents as agents_store

    token = new_token(AGENT_PREFIX)
    conn = await asyncpg.connect(dsn)
    try:
        await agents_store.create(conn, "bench-adb", hash_token(token))
    finally:
        await conn.close()
    return token


async def sample_outbox(agent: Agent, backlog: list[int]) -> None:
    while True:
        backlog.append(len(agent.outbox))
        await asyncio.sleep(0.25)


async def post_job(op: Operator, title: str, plan: list[dict[str, Any]], phones: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    job = await op.call("POST", "/api/jobs", {"title": title, "plan": plan, "target_type": "all_devices"}, expect=201)
    assert job["target_count"] == phones, job
    return int(job["id"]), time.perf_counter() - t0


async def measure_agent(server_url: str, dsn: str, port: int, phones: Phones, *, size: Size, state_dir: Path,
                        profile: bool, meter: CpuMeter, probe_sec: float) -> AgentRun:
    out = AgentRun()
    n = len(phones.serials)
    settings = AgentSettings(server=server_url, token=await add_agent(dsn), state_dir=state_dir, adb_port=port,
                             probe_sec=probe_sec)
    agent = Agent(settings)
    assigned: list[float] = []
    original = agent.on_orders

    async def on_orders(orders: list[ev.AssignmentOrder], *, full: bool, since: float | None = None) -> None:
        if orders and not full:
            assigned.append(time.time())
        await original(orders, full=full, since=since)

    setattr(agent, "on_orders", on_orders)  # noqa: B010 (the link looks the handler up on each job:assign)
    watcher = await Watcher.connect(dsn)
    t0 = time.perf_counter()
    try:
        await agent.start()
        out.startup = time.perf_counter() - t0
        await watcher.wait_idle(n, timeout=120)
        out.ready = time.perf_counter() - t0
        async with session() as http:
            op = Operator(http, server_url)
            # warm-up: one short job (the workers, the outbox and the link's first batches)
            job_id, _ = await post_job(op, "warm-up", [{"type": "tap", "x": 1, "y": 1}] * 2, n)
            await watcher.wait_job(job_id, ("completed",), timeout=60 + n / 5, interval=POLL_SEC)
            await watcher.wait_idle(n, timeout=60)

            spy = Spy(Path(tempfile.gettempdir()) / f"pfbench-adb-{n}-{os.getpid()}.txt") if profile else None
            if spy is not None:
                await spy.start()
            meter.start()
            in_jobs = 0.0
            for i in range(size.jobs):
                if i:
                    await watcher.wait_idle(n, timeout=60)
                marks = await phones.marks()
                backlog = [0]
                sampler = asyncio.create_task(sample_outbox(agent, backlog))
                w0, p0 = time.time(), time.perf_counter()
                job_id, _ = await post_job(op, f"taps {i}", [{"type": "tap", "x": 1, "y": 1}] * size.taps, n)
                t_done = await watcher.wait_job(job_id, ("completed",), timeout=60 + n * size.taps / 50,
                                                interval=POLL_SEC)
                sampler.cancel()
                out.outbox_max.append(max(backlog))
                in_jobs += t_done - p0
                hits = await phones.scan(marks, TAP)
                count = sum(h[0] for h in hits)
                assert count == n * size.taps, (count, n * size.taps)
                row = await watcher.job(job_id)
                assert row["completed_count"] == n, dict(row)
                first, last = min(h[1] for h in hits), max(h[2] for h in hits)
                out.first_tap.append(first - w0)
                out.all_started.append(max(h[1] for h in hits) - w0)
                out.last_tap.append(last - w0)
                out.job_sec.append(t_done - p0)
                out.rates.append(count / (t_done - p0))
                out.steady.append(count / (last - first))
            out.cores = meter.cores()
            if spy is not None:
                await spy.stop()
                out.profile = [f"py-spy samples in {spy.path}", *summarize_profile(spy.path, spy.wall, in_jobs)]
            await watcher.wait_idle(n, timeout=60)

            for i in range(size.fanouts):
                marks = await phones.marks()
                assigned.clear()
                waiting = asyncio.create_task(phones.wait_all(marks, VIEW, 60 + n / 10))
                await asyncio.sleep(0)
                w0 = time.time()
                job_id, respond = await post_job(op, f"open {i}",
                                                 [{"type": "open_url", "url": URL, "duration_sec": 0}], n)
                stamps = await waiting
                out.fanout.append(max(stamps) - w0)
                out.respond.append(respond)
                if assigned:
                    out.assign.append(max(assigned) - w0)
                await watcher.wait_job(job_id, ("completed",), timeout=60, interval=POLL_SEC)
                await watcher.wait_idle(n, timeout=60)
    finally:
        await watcher.close()
        await agent.stop()
    return out


# ---------------------------------------------------------------------- one size, and the report


def rate_line(label: str, value: float, width: int = 58) -> str:
    return f"{label:<{width}} {value:8,.0f} /s"


async def measure(root: str, size: Size, args: argparse.Namespace, what_if: frozenset[str]) -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = int(s.getsockname()[1])
    t_size = time.perf_counter()
    async with scratch_database(root) as dsn, running_server(dsn) as server, LocalAdbServer(port) as adb:
        t = time.perf_counter()
        phones: Phones = await (RemotePhones.start(size.phones, port) if args.phones_apart
                                else LocalPhones.start(size.phones, port))
        fleet_sec = time.perf_counter() - t
        adb_pid = adb_server_pid(port)
        pids = {"this process (agent" + (")" if args.phones_apart else " + phones)"): os.getpid(),
                "adb server": adb_pid or -1, "phonefleet server": server.pid}
        if args.phones_apart:
            pids["virtual phones' process"] = phones.pid
        try:
            with tempfile.TemporaryDirectory(prefix="pfbench-agent-") as tmp, patched(what_if, port):
                got = await measure_agent(server.url, dsn, port, phones, size=size, state_dir=Path(tmp),
                                          profile=args.profile, meter=CpuMeter(pids), probe_sec=args.probe_sec)
            floor = await measure_floor(adb.port, phones, size)
        finally:
            await phones.stop()

    where = "a child process of their own" if args.phones_apart else "this process, on the agent's loop"
    print(f"\n-- {size.phones} virtual phones via the adb server on 127.0.0.1:{port} (pid {adb_pid}); "
          f"phones in {where}")
    print(f"agent probe_sec {args.probe_sec:g}; virtual phones started and adb-connected in {fleet_sec:.2f} s; "
          f"agent.start() {got.startup:.1f} s "
          f"(adb list + a 3-command probe per phone, one phone at a time); all {size.phones} idle in the DB "
          f"after {got.ready:.1f} s")
    print(f"throughput: {size.jobs} job(s) of {size.taps} x tap to all {size.phones} phones "
          f"({size.phones * size.taps:,} adb shell commands each; +1 warm-up job of 2 taps)")
    rate = sum(got.rates) / len(got.rates)
    steady = sum(got.steady) / len(got.steady)
    print(rate_line("adb commands/s, agent (POST -> job completed)", rate)
          + f"   runs: {', '.join(f'{r:,.0f}' for r in got.rates)}; per job "
          + ", ".join(f"{s:.1f} s" for s in got.job_sec))
    print(rate_line("  same, first tap -> last tap (phones' logs)", steady))
    print("  timeline of the job(s), s after the POST: first tap " + ", ".join(f"{x:.2f}" for x in got.first_tap)
          + "; every phone has tapped " + ", ".join(f"{x:.2f}" for x in got.all_started)
          + "; last tap " + ", ".join(f"{x:.2f}" for x in got.last_tap)
          + "; completed in the DB " + ", ".join(f"{x:.2f}" for x in got.job_sec)
          + "; agent outbox backlog max " + ", ".join(str(x) for x in got.outbox_max) + " events")
    print("CPU during the throughput jobs (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in got.cores.items()))
    print(f"fan-out: {size.fanouts} runs of one open_url (duration 0) to all {size.phones} phones, each after "
          "the previous job completed")
    fan = Summary.of(got.fanout)
    print(f"POST -> every phone logged its VIEW intent   {fan.ms()}")
    if got.assign:
        print(f"POST -> job:assign handled by the agent      {Summary.of(got.assign).ms()}")
    print(f"POST -> 201                                  {Summary.of(got.respond).ms()}")
    print("floor (same phones, same adb server, bare loops from this process; one command in flight per phone; "
          f"{size.floor_per_phone} taps per phone):")
    for label, value in floor.rates.items():
        print(rate_line(f"  {label}", value))
    for label, summary in floor.views.items():
        print(f"  VIEW to every phone at once, {label:<22} {summary.ms()}")
    print("per-call latency, one thread, one phone, nothing else running:")
    for label, summary in floor.latency.items():
        print(f"  {label:<52} p50 {summary.p50 * 1e3:6.2f} ms  (min {summary.min * 1e3:.2f}, n={summary.n})")
    base = floor.rates[f"adbutils shell2, {AGENT_POOL} threads (the agent's pool)"]
    big = floor.rates[f"adbutils shell2, {BIG_POOL} threads"]
    lean = floor.rates[f"lean shell,v2 client, {AGENT_POOL} threads"]
    aio = floor.rates[f"lean shell,v2 on the event loop, {BIG_POOL} in flight"]
    view = floor.views[f"adbutils, {AGENT_POOL} threads"]
    print(f"ratio to floor, throughput (agent / floor): {rate / base:.2f} of adbutils at {AGENT_POOL} threads, "
          f"{rate / big:.2f} of adbutils at {BIG_POOL} threads, {rate / lean:.2f} of the lean client at {AGENT_POOL} "
          f"threads, {rate / aio:.2f} of the lean client on the event loop")
    big_view = floor.views[f"adbutils, {BIG_POOL} threads"]
    print(f"ratio to floor, fan-out (agent / floor): p50 {fan.p50 / view.p50:.2f}, max {fan.max / view.max:.2f} of the "
          f"bare VIEW loop at {AGENT_POOL} threads; p50 {fan.p50 / big_view.p50:.2f} of it at {BIG_POOL} threads")
    if got.profile:
        print("where the agent process' time goes during the throughput jobs (py-spy --idle, wall time):")
        for line in got.profile:
            print(f"  {line}")
    print(f"({size.phones} phones took {time.perf_counter() - t_size:.0f} s)")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    what_if = frozenset(x.strip() for x in str(args.what_if).split(",") if x.strip())
    unknown = what_if - set(WHAT_IF)
    if unknown:
        raise SystemExit(f"unknown --what-if {sorted(unknown)}; choose from {sorted(WHAT_IF)}")
    for name in sorted(what_if):
        print(f"what-if: {name}: {WHAT_IF[name]}")
    if "pool-64" in what_if:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(BIG_POOL, thread_name_prefix="asyncio"))
    if args.quick:
        sizes = [Size(20, 10, 1, 3, 5), Size(100, 5, 1, 3, 3)]
    else:
        sizes = [Size(100, 20, 2, 5, 10), Size(500, 10, 1, 5, 4)]
    if args.phones:
        sizes = [s for s in sizes if s.phones in args.phones] or [Size(p, 10, 1, 5, 4) for p in args.phones]
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        for size in sizes:
            await measure(root, size, args, what_if)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 and 100 phones, short jobs")
    parser.add_argument("--phones", type=int, action="append", help="only this size (repeatable)")
    parser.add_argument("--phones-apart", action="store_true",
                        help="virtual phones in a child process of their own instead of the agent's process")
    parser.add_argument("--profile", action="store_true",
                        help="sample this process with py-spy during the throughput jobs (figures slightly lower)")
    parser.add_argument("--probe-sec", type=float, default=3600.0,
                        help="the agent's health-probe interval (default: none during the run; the agent's own "
                             "default is 30 s, and a round probes every phone one after another)")
    parser.add_argument("--what-if", default="", metavar="A,B",
                        help="agent-side changes tried from the outside: "
                             + "; ".join(f"{k}: {v}" for k, v in WHAT_IF.items()))
    args = parser.parse_args()
    print("== PC agent over ADB: adb commands/s and open_url fan-out through the real adb server")
    print(f"command: {command(MODULE)}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, "
          f"adbutils {adbutils.__version__}, agent pool (asyncio default executor) {AGENT_POOL} threads")
    print("layout: phonefleet server in a child process; adb server (adbutils' binary) on a free port; "
          + ("virtual phones in a child process; agent + driver in this process"
             if args.phones_apart else "agent + its virtual phones + driver in this process (one event loop)"))
    print("load average before the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    sys.stdout.flush()
    run(main_async(args), limit_sec=900)


if __name__ == "__main__":
    main()
