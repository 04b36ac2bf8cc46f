"""The agent's link to the server: a Socket.IO connection when it can, polling when it cannot.

Events leave the durable outbox in order and are deleted only once acknowledged. While the socket
is down the agent polls ``GET /api/agent/assignments`` every few seconds (with jitter) and posts its
outbox to ``POST /api/agent/events``; as soon as the socket is back, polling stops.

A socket that drops, or goes silent (half-open: see ``liveness``), hands over to polling at once,
and a new socket is tried in the background. One sender at a time: the socket's sender is stopped
before polling starts and the poller before the socket's sender starts, so an outbox item is never
in flight twice; one whose ack was lost stays in the outbox and is sent again (the server's state
machine makes the replay a no-op). Every request and connection attempt has a bound, so a stalled
network never holds the link in one hung call.
"""

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
import socketio
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from phonefleet.agent.evidence import evidence_weight
from phonefleet.agent.liveness import LinkTimings, Liveness
from phonefleet.agent.outbox import ArtifactUpload, Outbox, OutboxItem
from phonefleet.protocol import artifacts as pa
from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol import screen as sc
from phonefleet.protocol.health import HealthThresholds
from phonefleet.protocol.wire import OrJson, TextPacket

log = logging.getLogger(__name__)

Mode = Literal["connecting", "socket", "polling", "stopped"]
ModeWatcher = Callable[[Mode], Awaitable[None]]
MERGEABLE = {ev.ASSIGNMENT_STARTED: "items", ev.ASSIGNMENT_PROGRESS: "items", ev.ASSIGNMENT_FINISHED: "results"}
"""Consecutive events of these kinds travel as one message (their lists are joined)."""
UPLOAD_FLOOR_BYTES_PER_SEC = 256 * 1024
"""An upload gets ``http_timeout_sec`` plus one second per this many bytes: slow links pass, dead ones do not."""
UPLOADS_AT_ONCE = 4
"""Files sent at once. Uploads run beside the events, never in their way: sent one after another between event
windows, 500 phones' logcat files held their runs' results back 2 s at the end of every job."""
POLL_WINDOW = 500
"""Outbox rows read per chunk when polling (a POST of at most 50 events)."""
MEMORY_ID = 0
"""The id of what a window carries from memory (runs' progress), not from an outbox row: nothing to ack."""
SEND_WINDOW = 5000
"""Outbox rows read per round trip on the socket. A window keeps only each run's latest progress, so a wide
one costs the server little: with 500 phones a window of 500 rows held one step's report per phone, and a
job's reports trailed its last step by one round trip per step (11-32 s at 500 phones x 10 steps)."""
BATCH_EVIDENCE_BYTES = 256 * 1024
"""A batch of results carries at most about this much step output (``evidence.evidence_weight``), so a
message stays far below the server's 1 MiB body limit whatever the runs printed."""
POST_EVIDENCE_BYTES = 512 * 1024
"""One polling POST carries batches up to about this much step output."""
UPLOAD_BACKOFF_MAX_SEC = 30.0
"""A file whose upload failed waits 1 s, 2 s, 4 s ... up to this before the next try (jittered)."""
UPLOAD_MISMATCH_TRIES = 5
"""Uploads refused as damaged while the local copy is intact: sent again this many times, then given up."""


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _why_lost(body: bytes | None) -> str:
    return "its file is gone" if body is None else "its file changed after it was made"


def _names_field(answer: dict[str, Any] | None, fields: tuple[str, ...]) -> bool:
    """The server's 422 names one of these fields."""
    details = ((answer or {}).get("error") or {}).get("details") or []
    return any(isinstance(d, dict) and d.get("field") in fields for d in details)


def batch(items: list[OutboxItem], limit: int = 2000,
          max_bytes: int = BATCH_EVIDENCE_BYTES) -> list[tuple[str, dict[str, Any], list[int]]]:
    """Group outbox items into few events, keeping what order matters.

    Between two events that do not merge (a pause, a device update, ...) the window's reports go out
    as one ``started``, one ``progress`` and one ``finished`` event, in that order, so an assignment's
    reports keep their order. Only the latest progress of an assignment is sent, and none for one that
    finishes in the same window: the ids of the superseded items ride on the ``finished`` event and
    leave the outbox with its ack. (At the end of a job every phone writes progress then finished;
    merging only neighbours cost one round trip per phone.)
    """
    out: list[tuple[str, dict[str, Any], list[int]]] = []
    window: dict[str, tuple[list[dict[str, Any]], list[int]]] = {}
    weight = 0  # of the window's finished reports' evidence

    def flush() -> None:
        finished = window.get(ev.ASSIGNMENT_FINISHED)
        done = {r["assignment_id"] for r in finished[0]} if finished else set()
        superseded: list[int] = []
        for event in (ev.ASSIGNMENT_STARTED, ev.ASSIGNMENT_PROGRESS, ev.ASSIGNMENT_FINISHED):
            entry = window.get(event)
            if entry is None:
                continue
            reports, ids = entry
            if event == ev.ASSIGNMENT_PROGRESS:
                latest = {r["assignment_id"]: r for r in reports}
                reports = [r for aid, r in latest.items() if aid not in done]
                if not reports:
                    superseded.extend(ids)
                    continue
            if event == ev.ASSIGNMENT_FINISHED:
                ids = ids + superseded
            out.append((event, {MERGEABLE[event]: reports}, ids))
        window.clear()
        nonlocal weight
        weight = 0

    for item in items:
        key = MERGEABLE.get(item.event)
        if key is None:
            flush()
            out.append((item.event, item.data, [item.id]))
            continue
        entry = window.get(item.event)
        heavy = sum(evidence_weight(r) for r in item.data[key]) if item.event == ev.ASSIGNMENT_FINISHED else 0
        if entry is not None and (len(entry[0]) + len(item.data[key]) > limit or weight + heavy > max_bytes):
            flush()
            entry = None
        weight += heavy
        if entry is None:
            entry = window[item.event] = ([], [])
        entry[0].extend(item.data[key])
        entry[1].append(item.id)
    flush()
    return out


def _within_post_budget(groups: list[tuple[str, dict[str, Any], list[int]]]
                        ) -> list[tuple[str, dict[str, Any], list[int]]]:
    """The first groups whose step output together stays within ``POST_EVIDENCE_BYTES`` (at least one)."""
    total = 0
    for n, (event, data, _ids) in enumerate(groups):
        if event == ev.ASSIGNMENT_FINISHED:
            total += sum(evidence_weight(r) for r in data["results"])
        if total > POST_EVIDENCE_BYTES and n > 0:
            return groups[:n]
    return groups


def _still_cancelled() -> None:
    """Re-raise a cancel that a library turned into an ordinary error (aiohttp can) or lost (3.11's wait_for
    can), so stop() never hangs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _worth_retrying(exc: BaseException) -> bool:
    """A refused or reset connection is retried at once; a timeout is not (the network is stalled: the next
    poll tries again), nor is a refusal by the server (4xx)."""
    return isinstance(exc, aiohttp.ClientError | OSError) and not isinstance(exc, TimeoutError | PermissionError)


class PauseState(Protocol):
    """The server's view of this agent's pauses, as a hello ack and a poll both carry it."""

    paused: bool
    paused_serials: list[str]
    paused_job_ids: list[int]


Control = ev.JobControl | ev.DeviceControl
CONTROL_MODELS: dict[str, type[Control]] = {
    ev.JOB_PAUSED: ev.JobControl, ev.JOB_RESUMED: ev.JobControl, ev.JOB_CANCELLED: ev.JobControl,
    ev.DEVICE_PAUSE: ev.DeviceControl, ev.DEVICE_RESUME: ev.DeviceControl,
}
"""What the server may tell an agent besides ``job:assign``, with the model of each message."""

SCREEN_MODELS: dict[str, type[BaseModel]] = {
    sc.SCREEN_START: sc.StreamStart, sc.SCREEN_STOP: sc.StreamStop, sc.SCREEN_SNAPSHOT: sc.SnapshotRequest,
    sc.SCREEN_INPUT: sc.AgentInput,
}
"""The live screen's messages from the server (``screen:input`` is answered by its ack)."""


class Handlers:
    """What the link calls back into (the agent implements these); every message arrives parsed."""

    def hello(self) -> ev.AgentHello:
        raise NotImplementedError

    async def on_orders(self, orders: list[ev.AssignmentOrder], *, full: bool, since: float | None = None) -> None:
        """New orders (a push), or the server's whole list (``full``: a hello ack or a poll, asked for at
        ``since``, ``time.monotonic()``; what came by push after that may be missing from it)."""
        raise NotImplementedError

    async def on_control(self, event: str, control: Control) -> None:
        raise NotImplementedError

    async def on_pause_state(self, state: PauseState) -> None:
        raise NotImplementedError

    def running_ids(self) -> list[int]:
        raise NotImplementedError

    def on_device_ack(self, sent: list[ev.DeviceReport], refused: list[ev.RefusedDevice]) -> None:
        """The server's answer to a hello or device update that reported ``sent``: the phones it left to
        another agent."""
        raise NotImplementedError

    def on_thresholds(self, thresholds: HealthThresholds | None) -> None:
        """The fleet's health thresholds, from a hello ack (None: the server sent none) or ``fleet:thresholds``."""
        raise NotImplementedError

    def on_recover(self, ask: health.DeviceRecover) -> None:
        """An operator asked for one rung of the recovery ladder on a phone (``device:recover``)."""
        raise NotImplementedError

    def on_selftest(self, ask: health.SelftestRequest) -> None:
        """The server asks for the self-test of a quarantined phone (``device:selftest``)."""
        raise NotImplementedError

    async def on_screen(self, event: str, message: BaseModel) -> ev.Ack:
        """A live-screen message (``SCREEN_MODELS``); the answer is its ack."""
        raise NotImplementedError


M = TypeVar("M", bound=BaseModel)


ITEM_LISTS = ("assignments", "jobs", "slots")
"""The lists of a message from the server whose items are dropped one by one when they do not fit (orders, and
the jobs and slots of a ``job:assign`` that carries plans once)."""


def parse(model: type[M], data: object, what: str) -> M | None:
    """A message from the server as its model, or None (logged) when it does not fit: a malformed message never
    stops the link. Orders that do not fit are dropped from it, each logged, and the rest go on (a job that
    does not fit takes its slots with it)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
    places = [e["loc"] for e in errors]
    if isinstance(data, dict) and all(len(loc) > 1 and loc[0] in ITEM_LISTS and isinstance(data.get(loc[0]), list)
                                      for loc in places):
        bad: dict[str, set[Any]] = {}
        for loc in places:
            bad.setdefault(str(loc[0]), set()).add(loc[1])
        log.warning("malformed orders from the server ignored", extra={"what": what, "errors": errors[:5]})
        fixed = {**data, **{key: [x for i, x in enumerate(data[key]) if i not in at] for key, at in bad.items()}}
        if "jobs" in bad:
            kept = {j.get("job_id") for j in fixed["jobs"] if isinstance(j, dict)}
            fixed["slots"] = [x for x in fixed.get("slots", []) if isinstance(x, dict) and x.get("job_id") in kept]
        return parse(model, fixed, what)
    log.warning("malformed message from the server ignored", extra={"what": what, "errors": errors[:5]})
    return None


def dump(payload: BaseModel) -> dict[str, Any]:
    """A model as the JSON object it travels as (fields left at None are left out)."""
    return payload.model_dump(mode="json", exclude_none=True)


@dataclass(eq=False)
class _Socket:
    """One Socket.IO connection with its own HTTP session: a new one per attempt, so an abandoned
    half-open connection keeps nothing the next one needs."""

    sio: socketio.AsyncClient
    http: aiohttp.ClientSession
    down: asyncio.Event = field(default_factory=asyncio.Event)
    greeted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``agent:hello`` was answered on this socket (heartbeats wait for it: it sets their pace)."""
    liveness: Liveness | None = None

    def heard(self) -> None:
        if self.liveness is not None:
            self.liveness.heard()


class ServerLink:
    def __init__(self, server_url: str, token: str, outbox: Outbox, handlers: Handlers, *, artifacts_dir: Path,
                 poll_sec: float = 3.0, heartbeat_sec: float = 5.0, reconnect_max_sec: float = 3.0,
                 timings: LinkTimings | None = None) -> None:
        self.url = server_url.rstrip("/")
        self.artifacts_dir = artifacts_dir
        self.token = token
        self.outbox = outbox
        self.handlers = handlers
        self.poll_sec = poll_sec
        self.heartbeat_sec = heartbeat_sec
        self.reconnect_max_sec = reconnect_max_sec
        self.timings = timings or LinkTimings()
        self.mode: Mode = "connecting"
        self.polls = 0
        self.stalls = 0
        """Half-open sockets noticed so far."""
        self._session: aiohttp.ClientSession | None = None
        self._socket: _Socket | None = None
        self._pending = asyncio.Event()
        self._files = asyncio.Event()
        """Set when the outbox may hold new files, or an upload ended."""
        self._uploader: asyncio.Task[None] | None = None
        self._progress: dict[int, ev.ProgressItem] = {}
        """Each run's latest progress, not yet sent: memory only (see ``progress``)."""
        self._run_task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._hello_needed = True
        self._mode_watchers: list[ModeWatcher] = []
        self._upload_backoff: dict[int, tuple[int, float]] = {}
        """Outbox ids of files whose upload failed: (failures so far, when to try again, ``time.monotonic()``)."""

    # ------------------------------------------------------------------ server -> agent

    def _new_socket(self) -> _Socket:
        http = aiohttp.ClientSession()
        sock = _Socket(socketio.AsyncClient(reconnection=False, request_timeout=self.timings.connect_timeout_sec,
                                            serializer=TextPacket, json=OrJson, http_session=http,
                                            handle_sigint=False), http)  # Ctrl-C is the agent's to handle
        ns = ev.AGENT_NAMESPACE

        async def on_assign(data: object) -> dict[str, Any]:
            sock.heard()
            assign = parse(ev.JobAssign, data, ev.JOB_ASSIGN)
            orders = assign.orders() if assign is not None else []
            await self.handlers.on_orders(orders, full=False)
            return ev.JobAssignAck(received=[o.assignment_id for o in orders]).model_dump()

        async def on_disconnect(*_: Any) -> None:
            sock.down.set()

        sock.sio.on(ev.JOB_ASSIGN, on_assign, namespace=ns)
        for name in CONTROL_MODELS:
            sock.sio.on(name, self._control_handler(sock, name), namespace=ns)
        sock.sio.on(health.FLEET_THRESHOLDS, self._handler(sock, health.FLEET_THRESHOLDS, HealthThresholds,
                                                           self.handlers.on_thresholds), namespace=ns)
        sock.sio.on(health.DEVICE_RECOVER, self._handler(sock, health.DEVICE_RECOVER, health.DeviceRecover,
                                                         self.handlers.on_recover), namespace=ns)
        sock.sio.on(health.DEVICE_SELFTEST, self._handler(sock, health.DEVICE_SELFTEST, health.SelftestRequest,
                                                          self.handlers.on_selftest), namespace=ns)
        for screen_event, screen_model in SCREEN_MODELS.items():
            sock.sio.on(screen_event, self._screen_handler(sock, screen_event, screen_model), namespace=ns)
        sock.sio.on("disconnect", on_disconnect, namespace=ns)
        return sock

    def _screen_handler(self, sock: _Socket, name: str, model: type[BaseModel]
                        ) -> Callable[[object], Awaitable[dict[str, Any]]]:
        async def handler(data: object) -> dict[str, Any]:
            sock.heard()
            message = parse(model, data, name)
            ack = (ev.Ack.refused("validation_error", f"malformed {name}") if message is None
                   else await self.handlers.on_screen(name, message))
            return ack.model_dump(exclude_none=True)

        return handler

    async def send_frame(self, meta: sc.FrameMeta, data: bytes) -> bool:
        """One live-screen frame to the server, waiting for its ack (one in flight: a slow link gets fewer
        frames, not a queue). False when there is no greeted socket or the server did not take it."""
        sock = self._socket
        if sock is None or not sock.sio.connected or not sock.greeted.is_set():
            return False
        try:
            answer = await sock.sio.call(sc.SCREEN_FRAME, (meta.model_dump(mode="json", exclude_none=True), data),
                                         namespace=ev.AGENT_NAMESPACE, timeout=self.timings.ack_timeout_sec)
        except (socketio.exceptions.SocketIOError, TimeoutError):
            return False
        sock.heard()
        return isinstance(answer, dict) and answer.get("ok") is True

    def _handler(self, sock: _Socket, name: str, model: type[M], call: Callable[[M], None]
                 ) -> Callable[[object], Awaitable[None]]:
        """A server event whose handler only takes note (what it starts runs apart from the socket)."""

        async def handler(data: object) -> None:
            sock.heard()
            message = parse(model, data, name)
            if message is not None:
                call(message)

        return handler

    def _control_handler(self, sock: _Socket, name: str) -> Callable[[object], Awaitable[None]]:
        async def handler(data: object) -> None:
            sock.heard()
            control = parse(CONTROL_MODELS[name], data, name)
            if control is not None:
                await self.handlers.on_control(name, control)

        return handler

    # ------------------------------------------------------------------ lifecycle

    def _new_http(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.timings.http_timeout_sec,
                                        sock_connect=self.timings.connect_timeout_sec)
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout)

    async def start(self) -> None:
        self._session = self._new_http()
        self._run_task = asyncio.create_task(self._run(), name="link")
        self._uploader = asyncio.create_task(self._upload_loop(), name="link-uploads")

    async def stop(self) -> None:
        self.mode = "stopped"
        tasks = [t for t in (self._run_task, self._poller, self._uploader) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._socket is not None:
            await self._close_socket(self._socket, polite=True)
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._session is not None:
            await self._session.close()

    @property
    def connected(self) -> bool:
        return self._socket is not None and self._socket.sio.connected

    def notify(self) -> None:
        """New events are in the outbox."""
        self._pending.set()
        self._files.set()

    def progress(self, report: ev.AssignmentProgress) -> None:
        """A run's progress: kept in memory, the latest per run, and sent with the next outbox window. Progress is
        advisory (a run's end is what counts, and that goes through the outbox and the journal), so it is not
        worth a durable row per report: at 500 phones the outbox's SQLite writes were an eighth of the agent's
        loop. A crash loses only the last progress of the runs it cuts short, which end as interrupted."""
        for item in report.items:
            self._progress[item.assignment_id] = item
        self._pending.set()

    def _with_progress(self, peeked: list[OutboxItem], *, full: bool
                       ) -> tuple[list[OutboxItem], dict[int, ev.ProgressItem]]:
        """The outbox window and, after it, the runs' latest progress (taken from memory: ``_restore_progress``
        puts it back if the window could not be sent). None for a run whose end is in the window, and none while
        the outbox holds more than the window (a run's start may still be in there, behind it)."""
        if not self._progress or full:
            return peeked, {}
        ending = {r.get("assignment_id") for i in peeked if i.event == ev.ASSIGNMENT_FINISHED
                  for r in i.data.get("results", ()) if isinstance(r, dict)}
        latest, self._progress = self._progress, {}
        taken = {aid: item for aid, item in latest.items() if aid not in ending}  # the others are superseded
        if not taken:
            return peeked, {}
        items = [item.model_dump(mode="json", exclude_none=True) for item in taken.values()]
        return [*peeked, OutboxItem(MEMORY_ID, ev.ASSIGNMENT_PROGRESS, {"items": items}, time.time())], taken

    def _restore_progress(self, taken: dict[int, ev.ProgressItem]) -> None:
        """Progress taken for a window the server could not take: back, unless a newer report came meanwhile."""
        for assignment_id, item in taken.items():
            self._progress.setdefault(assignment_id, item)

    def require_hello(self) -> None:
        self._hello_needed = True
        self._pending.set()

    def watch_mode(self, watcher: ModeWatcher) -> None:
        """Call ``watcher`` with every mode the link enters from now on (tests and benchmarks time them)."""
        self._mode_watchers.append(watcher)

    async def _set_mode(self, mode: Mode) -> None:
        if mode != self.mode:
            log.info("link mode", extra={"mode": mode})
            self.mode = mode
            for watcher in self._mode_watchers:
                await watcher(mode)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            sock = self._socket = self._new_socket()
            try:
                await asyncio.wait_for(self._connect(sock), self.timings.connect_timeout_sec)
            except (TimeoutError, socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError) as exc:
                _still_cancelled()
                self._abandon(sock)
                log.info("socket unavailable; polling", extra={"error": str(exc) or type(exc).__name__})
                await self._start_polling()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.reconnect_max_sec)
                continue
            _still_cancelled()  # a cancel wait_for lost as the connect completed
            backoff = 0.5
            await self._stop_polling()
            self._hello_needed = True  # a new socket starts with the server's full view
            if await self._socket_session(sock):
                self._renew_http()
            self._hello_needed = True
            await self._start_polling()  # at once: polling carries the work while a new socket is tried
            self._abandon(sock)

    async def _connect(self, sock: _Socket) -> None:
        await sock.sio.connect(self.url, namespaces=[ev.AGENT_NAMESPACE],
                               auth={"token": self.token, "features": [ev.PLANS_ONCE]},
                               transports=["websocket"], wait_timeout=self.timings.connect_timeout_sec)

    def _abandon(self, sock: _Socket) -> None:
        """Let go of a socket without waiting for it: a half-open one would never answer a close."""
        if self._socket is sock:
            self._socket = None
        self._in_background(self._close_socket(sock, polite=False))

    async def _close_socket(self, sock: _Socket, *, polite: bool) -> None:
        """``polite``: say goodbye first (the server forgets the socket at once); otherwise close the TCP
        connection under it straight away, which needs no answer from the other end."""
        if polite:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.sio.disconnect(), 2)
        await sock.http.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sock.sio.disconnect(), 2)

    def _renew_http(self) -> None:
        """Keep-alive connections opened before a stall ride the same dead path: polling starts afresh."""
        old, self._session = self._session, self._new_http()
        if old is not None:
            self._in_background(old.close())

    # ------------------------------------------------------------------ socket mode

    async def _socket_session(self, sock: _Socket) -> bool:
        """Run the socket until it drops, fails or goes silent; True when it went silent (half-open)."""
        sock.liveness = Liveness(self.timings.probe_sec, self.timings.stall_sec)
        await self._set_mode("socket")
        watch = asyncio.create_task(sock.liveness.watch(lambda: self._call(sock, ev.AGENT_PING, {},
                                                                           timeout=self.timings.stall_sec)))
        tasks: set[asyncio.Task[Any]] = {watch, asyncio.create_task(self._send_loop(sock)),
                                         asyncio.create_task(self._heartbeat_loop(sock)),
                                         asyncio.create_task(sock.down.wait())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        if watch in done:
            self.stalls += 1
            log.info("socket silent (half-open); polling", extra={"silent_sec": round(watch.result(), 2)})
            return True
        errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        log.info("socket lost", extra={"error": str(errors[0]) if errors else "disconnected"})
        return False

    async def _call(self, sock: _Socket, event: str, data: dict[str, Any], *,
                    timeout: float | None = None) -> ev.Ack:
        answer = await sock.sio.call(event, data, namespace=ev.AGENT_NAMESPACE,
                                     timeout=timeout or self.timings.ack_timeout_sec)
        # Python 3.11's asyncio.wait_for (inside sio.call) loses a cancel that comes as the ack arrives; the
        # send loop then waited forever in a task being cancelled, and stop() gave up on it.
        _still_cancelled()
        sock.heard()
        ack = parse(ev.Ack, answer, f"ack of {event}")
        if ack is None:
            raise socketio.exceptions.SocketIOError(f"bad ack for {event}")
        return ack

    async def _hello_socket(self, sock: _Socket) -> None:
        hello = self.handlers.hello()
        since = time.monotonic()
        ack = await self._call(sock, ev.AGENT_HELLO, dump(hello))
        answer = parse(ev.HelloAck, ack.data, "agent:hello ack") if ack.ok else None
        if answer is None:
            raise socketio.exceptions.SocketIOError(f"hello refused: {ack.error}")
        self.handlers.on_device_ack(hello.devices, answer.refused_devices)
        self.handlers.on_thresholds(answer.thresholds)
        self.heartbeat_sec = answer.heartbeat_sec
        self.poll_sec = answer.poll_sec
        await self.handlers.on_orders(answer.assignments, full=True, since=since)
        await self.handlers.on_pause_state(answer)
        self._hello_needed = False
        sock.greeted.set()

    async def _send_loop(self, sock: _Socket) -> None:
        while True:
            if self._hello_needed:
                await self._hello_socket(sock)
            self._pending.clear()  # before reading, so an event put meanwhile still wakes us
            peeked = self.outbox.peek(SEND_WINDOW, besides=ev.ARTIFACT_UPLOAD)
            events, progress = self._with_progress(peeked, full=len(peeked) >= SEND_WINDOW)
            sent = False
            try:
                for event, data, ids in batch(events):  # results first: the server learns what files to expect
                    if self._settle(event, data, await self._call(sock, event, data), ids):
                        await asyncio.sleep(1.0)  # the server could not take it now; try again shortly
                        break
                    sent = sent or MEMORY_ID in ids
            finally:
                if not sent:
                    self._restore_progress(progress)
            if not events:
                await self._pending.wait()

    def _settle(self, event: str, data: dict[str, Any], ack: ev.Ack, ids: list[int]) -> bool:
        """Acked events leave the outbox; so do events the server rejects as invalid (they never will pass).
        Anything the server could not take now (retryable) stays for the next attempt."""
        if ack.ok and event in (ev.AGENT_HELLO, ev.DEVICE_UPDATE):
            self._device_ack(event, data, ack.data)
        error = ack.error or {}
        keep = error.get("retryable") is True or error.get("code") in ("unavailable", "unauthorized")
        if ack.ok or not keep:
            if not ack.ok:
                log.warning("server rejected an event", extra={"event": event, "error": error})
            self.outbox.ack([i for i in ids if i != MEMORY_ID])
            self._files.set()  # files queued behind these events may go now
            return False
        return True

    def _device_ack(self, event: str, sent: dict[str, Any], answer: dict[str, Any] | None) -> None:
        """Phones a hello or device update reported, and those of them the server left to another agent."""
        if event == ev.AGENT_HELLO:
            hello, hello_ack = parse(ev.AgentHello, sent, event), parse(ev.HelloAck, answer, f"ack of {event}")
            if hello is not None and hello_ack is not None:
                self.handlers.on_device_ack(hello.devices, hello_ack.refused_devices)
                self.handlers.on_thresholds(hello_ack.thresholds)
            return
        update, update_ack = parse(ev.DeviceUpdate, sent, event), parse(ev.DeviceUpdateAck, answer, f"ack of {event}")
        if update is not None and update_ack is not None:
            self.handlers.on_device_ack(update.devices, update_ack.refused_devices)

    async def _heartbeat_loop(self, sock: _Socket) -> None:
        await sock.greeted.wait()
        while True:
            await asyncio.sleep(self.heartbeat_sec)
            ack = await self._call(sock, ev.AGENT_HEARTBEAT, dump(ev.Heartbeat(running=self.handlers.running_ids())))
            if (ack.data or {}).get("hello_required") is True:  # the server had given this agent up
                self.require_hello()

    # ------------------------------------------------------------------ polling mode

    async def _start_polling(self) -> None:
        await self._set_mode("polling")
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop(), name="link-poll")

    async def _stop_polling(self) -> None:
        """Stop the poller, even in the middle of a request (what it sent without an answer is sent again)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller])
            self._poller = None

    async def _poll_loop(self) -> None:
        """Poll (and flush the outbox over HTTP) every few seconds until the socket is back."""
        while True:
            try:
                await self._poll_once()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                _still_cancelled()
                log.info("poll failed", extra={"error": str(exc) or type(exc).__name__})
            except Exception:  # a bug, not the network: keep polling, say so once per poll
                _still_cancelled()
                log.warning("poll failed unexpectedly", exc_info=True)
            await asyncio.sleep(self.poll_sec * random.uniform(0.8, 1.2))

    async def _http(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        assert self._session is not None
        async for attempt in AsyncRetrying(retry=retry_if_exception(_worth_retrying),
                                           stop=stop_after_attempt(3), wait=wait_random_exponential(0.2, 2),
                                           reraise=True):
            with attempt:
                async with self._session.request(method, self.url + path, json=body) as r:
                    if r.status >= 500:
                        raise aiohttp.ClientResponseError(r.request_info, r.history, status=r.status)
                    data: dict[str, Any] = await r.json()
                    if r.status >= 400:
                        raise PermissionError(f"{path}: {r.status} {data}")
                    return data
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ files

    async def _upload_loop(self) -> None:
        """Send the outbox's files over HTTP, in socket and polling mode alike, in the order they came and at
        most ``UPLOADS_AT_ONCE`` at a time, beside the events. A file goes once every event queued before it has
        left the outbox: its run's result, which tells the server what files to expect, so their rows are made in
        the order the run made them (a phone's gallery pages by id), not in the order concurrent uploads finish.
        The outbox is read once per new file: the files not yet settled are kept here, each with when it may be
        tried (a failed one waits a growing while, and the others go on meanwhile)."""
        waiting: dict[int, OutboxItem] = {}
        seen = 0  # the newest outbox id read
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._files.clear()  # before reading, so a file put meanwhile still wakes us
                for item in self.outbox.peek(SEND_WINDOW, only=ev.ARTIFACT_UPLOAD, after=seen):
                    waiting[item.id] = item
                    seen = item.id
                now, wake_at = time.monotonic(), math.inf
                unsent = self.outbox.oldest_id(besides=ev.ARTIFACT_UPLOAD)
                results_up_to = math.inf if unsent is None else unsent  # events before this id have been sent
                for item in list(waiting.values()):
                    if len(running) >= UPLOADS_AT_ONCE:
                        break
                    if item.id > results_up_to:
                        continue
                    retry_at = self._upload_backoff.get(item.id, (0, 0.0))[1]
                    if retry_at > now:
                        wake_at = min(wake_at, retry_at)
                        continue
                    del waiting[item.id]
                    task = asyncio.create_task(self._upload_item(item, waiting), name=f"upload-{item.id}")
                    running.add(task)
                    task.add_done_callback(running.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._files.wait(), None if wake_at == math.inf else wake_at - now)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)

    async def _upload_item(self, item: OutboxItem, waiting: dict[int, OutboxItem]) -> None:
        """One file: it leaves the outbox once the server stored its verified bytes (then the local copy goes too),
        or when it can never arrive (its local copy is gone or changed: the server is told); otherwise it goes back
        to ``waiting`` with a growing delay."""
        try:
            settled = await self._upload_one(item)
        except Exception:  # a bug here must not stop every later file
            log.exception("artifact upload failed", extra={"outbox_id": item.id})
            settled = False
        if settled:
            self._upload_backoff.pop(item.id, None)
            self.outbox.ack([item.id])
        else:
            failures = self._upload_backoff.get(item.id, (0, 0.0))[0] + 1
            delay = min(UPLOAD_BACKOFF_MAX_SEC, 0.5 * 2 ** failures) * random.uniform(0.5, 1.0)
            self._upload_backoff[item.id] = (failures, time.monotonic() + delay)
            waiting[item.id] = item
        self._files.set()

    async def _upload_one(self, item: OutboxItem) -> bool:
        """One file's upload; True when it is settled (stored, or never to be), False to try again later."""
        try:
            upload = ArtifactUpload.model_validate(item.data)
        except ValidationError:
            log.warning("malformed artifact entry dropped from the outbox", extra={"entry": item.data})
            return True
        path = self.artifacts_dir / upload.name
        body = await asyncio.to_thread(_read, path)
        if body is None or (upload.sha256 is not None and (len(body) != upload.bytes
                                                           or hashlib.sha256(body).hexdigest() != upload.sha256)):
            return await self._artifact_lost(upload, _why_lost(body))
        digest = upload.sha256 or hashlib.sha256(body).hexdigest()
        headers = {pa.HEADER_SHA256: digest, pa.HEADER_BYTES: str(len(body))}
        if upload.kind is not None:
            headers[pa.HEADER_KIND] = str(upload.kind)
        if upload.step_index is not None:
            headers[pa.HEADER_STEP] = str(upload.step_index)
        if upload.taken_at is not None:
            headers[pa.HEADER_TAKEN_AT] = upload.taken_at.isoformat()
        url = f"{self.url}/api/agent/artifacts/{upload.assignment_id}/{upload.name}"
        status, answer = await self._send_file(url, body, headers)
        if status is None or status >= 500 or status in (401, 429):
            return False  # the server will be back (or the token rotated): the file stays in the outbox
        if status in (200, 201):
            artifact = parse(pa.Artifact, answer, "artifact upload")
            if artifact is not None and (artifact.status == pa.ArtifactStatus.deleted or (
                    artifact.status == pa.ArtifactStatus.stored and artifact.sha256 == digest)):
                await asyncio.to_thread(path.unlink, missing_ok=True)  # the server holds the verified bytes
                return True
            log.warning("artifact upload answered oddly", extra={"artifact": upload.name, "answer": answer})
            return False
        if status == 422 and _names_field(answer, ("bytes", "sha256")):
            # Refused as not matching: damaged on the way (send again), or the local copy changed (say so).
            fresh = await asyncio.to_thread(_read, path)
            if fresh is None or hashlib.sha256(fresh).hexdigest() != digest:
                return await self._artifact_lost(upload, _why_lost(fresh))
            failures = self._upload_backoff.get(item.id, (0, 0.0))[0]
            if failures < UPLOAD_MISMATCH_TRIES:
                log.info("artifact damaged on the way; sent again later", extra={"artifact": upload.name})
                return False
        # It will never pass: not retried forever; the run lists it deleted with the server's reason (the local
        # copy stays, for an operator).
        log.warning("artifact refused", extra={"artifact": upload.name, "status": status, "answer": answer})
        message = str(((answer or {}).get("error") or {}).get("message") or f"HTTP {status}")
        return await self._artifact_lost(upload, f"the server refused it: {message}"[:500])

    async def _send_file(self, url: str, body: bytes, headers: dict[str, str]
                         ) -> tuple[int | None, dict[str, Any] | None]:
        """PUT the bytes, retried at once a few times when the connection fails; (None, None): it did not get
        through."""
        assert self._session is not None
        seconds = self.timings.http_timeout_sec + len(body) / UPLOAD_FLOOR_BYTES_PER_SEC
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=self.timings.connect_timeout_sec)
        try:
            async for attempt in AsyncRetrying(retry=retry_if_exception(_worth_retrying),
                                               stop=stop_after_attempt(3), wait=wait_random_exponential(0.2, 2),
                                               reraise=True):
                with attempt:
                    async with self._session.put(url, data=body, headers=headers, timeout=timeout) as r:
                        try:
                            answer = await r.json(content_type=None)
                        except ValueError:
                            answer = None
                        return r.status, answer if isinstance(answer, dict) else None
        except (aiohttp.ClientError, OSError, TimeoutError):
            _still_cancelled()
        return None, None

    async def _artifact_lost(self, upload: ArtifactUpload, reason: str) -> bool:
        """The file can never arrive (its local copy is gone or changed, or the server refuses it for good). The
        server is told (so the run does not wait for it forever); True once it knows, or when there is no one to
        tell."""
        log.warning("artifact lost before it was sent", extra={"artifact": upload.name, "reason": reason})
        if upload.sha256 is None or upload.kind is None or upload.bytes is None:
            return True  # an older entry: the server never expected it
        described = pa.ArtifactInfo(name=upload.name, kind=upload.kind, bytes=upload.bytes, sha256=upload.sha256,
                                    step_index=upload.step_index, taken_at=upload.taken_at)
        try:
            await self._http("POST", f"/api/agent/artifacts/{upload.assignment_id}/{upload.name}/lost",
                             {"reason": reason, "artifact": dump(described)})
        except PermissionError:  # 4xx: nothing there to mark
            return True
        except (aiohttp.ClientError, OSError, TimeoutError):
            _still_cancelled()
            return False
        return True

    async def _post_events(self, events: list[tuple[str, dict[str, Any], list[int]]]) -> None:
        body = {"events": [{"event": e, "data": d} for e, d, _ in events]}
        answer = parse(ev.AgentEventResults, await self._http("POST", "/api/agent/events", body), "event results")
        if answer is None or len(answer.results) != len(events):
            raise aiohttp.ClientPayloadError("the server's answer to posted events does not match them")
        for (event, data, ids), ack in zip(events, answer.results, strict=True):
            self._settle(event, data, ack, ids)

    async def _poll_once(self) -> None:
        if self._hello_needed:
            await self._post_events([(ev.AGENT_HELLO, dump(self.handlers.hello()), [])])
            self._hello_needed = False
        for start in range(0, 10):  # flush the outbox in bounded chunks
            del start
            peeked = self.outbox.peek(POLL_WINDOW, besides=ev.ARTIFACT_UPLOAD)
            events, progress = self._with_progress(peeked, full=len(peeked) >= POLL_WINDOW)
            groups = batch(events)
            posting = _within_post_budget(groups[:50])
            try:
                if posting:  # results first: the server learns what files to expect
                    await self._post_events(posting)
            finally:
                if not any(MEMORY_ID in ids for _, _, ids in posting):  # not sent, or left for the next chunk
                    self._restore_progress(progress)
            if not groups:
                break
        since = time.monotonic()
        poll = parse(ev.AgentPoll, await self._http("GET", "/api/agent/assignments"), "poll")
        self.polls += 1
        if poll is None:
            return
        self.poll_sec = poll.poll_sec
        if poll.hello_required:
            self._hello_needed = True
        await self.handlers.on_orders(poll.assignments, full=True, since=since)
        await self.handlers.on_pause_state(poll)
