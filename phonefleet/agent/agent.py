"""The PC agent: phones from ADB, work from the server, reports through the durable outbox."""

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adbutils
import aiohttp
from pydantic import BaseModel, ValidationError

from phonefleet import __version__
from phonefleet.agent.actions import Registry, left_behind
from phonefleet.agent.config import AgentSettings
from phonefleet.agent.control import ControlServer, FieldError
from phonefleet.agent.devices import DeviceTracker
from phonefleet.agent.health import thresholds_in_force
from phonefleet.agent.journal import JournalEntry, RunJournal
from phonefleet.agent.link import Control, Handlers, PauseState, ServerLink
from phonefleet.agent.outbox import ArtifactUpload, Outbox
from phonefleet.agent.phone import Progress
from phonefleet.agent.recovery import Recovery, RecoveryStore
from phonefleet.agent.rungs import Rungs
from phonefleet.agent.runner import PhoneWorker
from phonefleet.agent.screen import ScreenStreams
from phonefleet.agent.selftest import run_selftest
from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.protocol.enums import ErrorCode, FinishOutcome, OnInterrupt, PauseScope
from phonefleet.protocol.health import (
    DEVICE_SELFTEST_RESULT,
    DeviceRecover,
    HealthThresholds,
    SelftestRequest,
)

if TYPE_CHECKING:
    from phonefleet.virtual import VirtualFleet

log = logging.getLogger(__name__)

FETCH_REPORT_BYTES = 256 * 1024
"""A download says how far it is at most once per this many bytes."""


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def adb_binary(settings: AgentSettings) -> str:
    """The adb in the adbutils wheel unless told otherwise (Debian's adb 29 misses TCP devices going offline)."""
    return settings.adb_path or str(adbutils.adb_path())


def ensure_adb_server(settings: AgentSettings) -> adbutils.AdbClient:
    subprocess.run([adb_binary(settings), "-P", str(settings.adb_port), "start-server"], check=True,
                   capture_output=True, timeout=30)
    return adbutils.AdbClient(host=settings.adb_host, port=settings.adb_port)


class Agent(Handlers):
    def __init__(self, settings: AgentSettings) -> None:
        if not settings.token:
            raise ValueError("an agent token is required (phonefleet-server agents add NAME prints one)")
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.artifacts_dir = self.state_dir / "artifacts"
        self.outbox = Outbox(self.state_dir / "outbox.sqlite3")
        self.registry = Registry()
        self.link = ServerLink(settings.server, settings.token, self.outbox, self, artifacts_dir=self.artifacts_dir,
                               timings=settings.link_timings())
        self.tracker: DeviceTracker | None = None
        self.screens: ScreenStreams | None = None
        self.recovery: Recovery | None = None
        self._selftests: set[asyncio.Task[None]] = set()
        self.workers: dict[str, PhoneWorker] = {}
        self.paused = False  # the operator at this PC paused the whole agent
        self.local_paused_serials: set[str] = set()
        self.refused: dict[str, str] = {}
        """Phones another connected agent drives (serial -> its name): left alone, claimed again now and then."""
        self._reclaim: asyncio.Task[None] | None = None
        self.server_paused_serials: set[str] = set()
        self.paused_jobs: set[int] = set()
        self.fleet: VirtualFleet | None = None
        self.control = ControlServer(self, self.state_dir, settings.control_port)
        self.journal = RunJournal(self.outbox)
        self._received: dict[int, float] = {}
        """When each assignment the server still lists first reached this agent (``time.monotonic()``)."""
        self._reruns: dict[int, JournalEntry] = {}
        """Runs a crash cut short whose job says ``on_interrupt: rerun``: run again if the server still lists them."""
        for entry in self.journal.entries():
            if entry.on_interrupt == OnInterrupt.rerun:
                self._reruns[entry.assignment_id] = entry
            else:
                self._report_interrupted(entry)
        self._done = self._finished_in_outbox()
        self._pause_file = self.state_dir / "pauses.json"
        self._load_pauses()
        self._thresholds_file = self.state_dir / "health_thresholds.json"
        self._session: aiohttp.ClientSession | None = None

    def _finished_in_outbox(self) -> set[int]:
        """Results still in the outbox after a restart: those runs are done, whatever the server says yet."""
        done: set[int] = set()
        for item in self.outbox.peek(1_000_000):
            if item.event == ev.ASSIGNMENT_FINISHED:
                try:
                    done.update(r.assignment_id for r in ev.AssignmentFinished.model_validate(item.data).results)
                except ValidationError:
                    log.warning("unreadable result in the outbox (sent as it is)", extra={"outbox_id": item.id})
        return done

    def _load_pauses(self) -> None:
        """Local pauses survive a restart of the agent: the operator's word is not lost."""
        if self._pause_file.exists():
            saved = json.loads(self._pause_file.read_text())
            self.paused = bool(saved.get("paused"))
            self.local_paused_serials = set(saved.get("serials", []))
            self.paused_jobs.update(int(j) for j in saved.get("jobs", []))

    def _server_thresholds(self) -> HealthThresholds | None:
        """The server's thresholds as last heard (kept across restarts: until the next hello ack, phones are
        judged as the server judges them, not by the defaults)."""
        try:
            return HealthThresholds.model_validate_json(self._thresholds_file.read_text())
        except (OSError, ValidationError):
            return None

    def _save_pauses(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._pause_file.write_text(json.dumps({"paused": self.paused, "serials": sorted(self.local_paused_serials),
                                                "jobs": sorted(self.paused_jobs)}))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _line: None)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession()
        say(f"adb server on {self.settings.adb_host}:{self.settings.adb_port} ({adb_binary(self.settings)})")
        client = await asyncio.to_thread(ensure_adb_server, self.settings)
        if self.settings.virtual:
            from phonefleet.virtual import VirtualFleet

            say(f"starting {self.settings.virtual} virtual phones and adb-connecting them ...")
            ports_file = self.state_dir / "virtual_ports.json"
            ports = json.loads(ports_file.read_text()) if ports_file.exists() else []
            self.fleet = VirtualFleet(self.settings.virtual, adb_host=self.settings.adb_host,
                                      adb_port=self.settings.adb_port, ports=ports)
            try:
                await self.fleet.start()
            except OSError:  # a remembered port is taken now: fresh ports, fresh serials
                await self.fleet.stop()
                self.fleet = VirtualFleet(self.settings.virtual, adb_host=self.settings.adb_host,
                                          adb_port=self.settings.adb_port)
                await self.fleet.start()
            ports_file.write_text(json.dumps([p.port for p in self.fleet.phones]))
        self.tracker = DeviceTracker(
            client, self._devices_changed, probe_sec=self.settings.probe_sec,
            probe_timeout_sec=self.settings.probe_timeout_sec, max_probes=self.settings.max_probes,
            thresholds=thresholds_in_force(self._server_thresholds(), self.settings.health_overrides()),
            on_adb_restart=self._adb_restarted)
        await self.tracker.start()
        self.screens = ScreenStreams(self.tracker.adb, self.link.send_frame)
        self.recovery = Recovery(self.tracker, Rungs(self.tracker, self.tracker.adb, self.settings.rung_settings()),
                                 RecoveryStore(self.outbox), self.settings.ladder_settings(), report=self.report,
                                 hold=self._hold, ignored=lambda serial: serial in self.refused)
        self.recovery.start()
        phones = list(self.tracker.phones.values())
        say(f"{len(phones)} phones: " + ", ".join(f"{p.serial} ({p.model or '?'})" for p in phones[:4])
            + (" ..." if len(phones) > 4 else ""))
        self._reclaim = asyncio.create_task(self._reclaim_loop(), name="reclaim-phones")
        port = await self.control.start()
        say(f"control endpoint on 127.0.0.1:{port} (phonefleet-agent status|pause|resume)")
        await self.link.start()

    async def stop(self) -> None:
        if self._reclaim is not None:
            self._reclaim.cancel()
        if self.screens is not None:
            await self.screens.stop_all()
        await self.link.stop()
        await self.control.stop()
        if self.recovery is not None:
            await self.recovery.stop()
        for task in list(self._selftests):
            task.cancel()
        await asyncio.gather(*self._selftests, return_exceptions=True)
        if self.tracker is not None:
            await self.tracker.stop()
        if self.fleet is not None:
            await self.fleet.stop()
        for worker in self.workers.values():
            await worker.stop()
        if self._session is not None:
            await self._session.close()
        self.journal.close()
        self.outbox.close()

    # ------------------------------------------------------------------ reports

    def report(self, event: str, payload: BaseModel) -> None:
        """An event for the server: durable in the outbox, except runs' progress (the link keeps the latest)."""
        if isinstance(payload, ev.AssignmentProgress):
            self.link.progress(payload)
            return
        self.outbox.put(event, payload)
        self.link.notify()

    def _report_interrupted(self, entry: JournalEntry) -> None:
        """A run the last crash cut short: a failure the server retries per the job's max_retries."""
        log.warning("run interrupted by an agent stop", extra={"assignment_id": entry.assignment_id,
                                                               "step_index": entry.step_index})
        files = left_behind(self.artifacts_dir, entry.assignment_id)  # its evidence so far goes with it
        self.journal.finish(ev.FinishedItem(
            assignment_id=entry.assignment_id, outcome=FinishOutcome.failed, error_code=ErrorCode.interrupted,
            error=f"the agent stopped during step {entry.step_index + 1} ({entry.step_type[:200]}); "
                  "the run was cut short",
            retryable=True, result={"interrupted_step": entry.step_index, "attempt": entry.attempt},
            started_at=entry.started_at, finished_at=datetime.now(UTC), artifacts=files),
            uploads=[ArtifactUpload.of(entry.assignment_id, f) for f in files])
        self.link.notify()

    async def fetch(self, url: str, dest: Path, progress: Progress | None = None) -> None:
        """Download ``url`` to ``dest``; ``progress`` hears the bytes received (of the response's length, when it
        says one) at most once per ``FETCH_REPORT_BYTES``."""
        assert self._session is not None
        async with self._session.get(url) as r:
            r.raise_for_status()
            data = bytearray()
            told = 0
            async for chunk in r.content.iter_chunked(65536):
                data += chunk
                if progress is not None and len(data) - told >= FETCH_REPORT_BYTES:
                    told = len(data)
                    progress(told, r.content_length)
        if progress is not None:
            progress(len(data), r.content_length or len(data))
        await asyncio.to_thread(_write, dest, bytes(data))

    # ------------------------------------------------------------------ phones

    def _worker(self, serial: str) -> PhoneWorker:
        worker = self.workers.get(serial)
        if worker is None:
            assert self.tracker is not None
            tracker = self.tracker
            worker = PhoneWorker(serial, tracker.phone(serial), self.registry, self.report,
                                 self.artifacts_dir, journal=self.journal, notify=self.link.notify, fetch=self.fetch,
                                 clock=lambda: tracker.phone_clock(serial))
            worker.paused_jobs = self.paused_jobs
            worker.refused = serial in self.refused
            self.workers[serial] = worker
            worker.start()
        self._apply_pause(worker)
        return worker

    def _hold(self, serial: str, by: str | None) -> None:
        """A recovery rung holds the phone (``by``), or let it go (None): its worker starts no work meanwhile."""
        worker = self._worker(serial)
        worker.recovering = by
        worker.wake()

    def _apply_pause(self, worker: PhoneWorker) -> None:
        worker.paused = self.paused or worker.serial in self.local_paused_serials or (
            worker.serial in self.server_paused_serials)
        worker.wake()

    async def _devices_changed(self, reports: list[ev.DeviceReport], full: bool) -> None:
        for report in reports:
            worker = self._worker(report.serial)
            ready = report.adb_state == "device"
            if not ready and self.screens is not None:
                self.screens.stop(report.serial)
            if not ready and worker.current is not None:
                log.info("phone lost mid-run", extra={"serial": report.serial})
                worker.lose_phone()
            worker.online = ready
            worker.wake()
        self._report_devices(reports, full=full)

    def _report_devices(self, reports: list[ev.DeviceReport], *, full: bool = False) -> None:
        self.report(ev.DEVICE_UPDATE, ev.DeviceUpdate(devices=reports, full=full))

    # ------------------------------------------------------------------ Handlers (from the link)

    def hello(self) -> ev.AgentHello:
        devices = self.tracker.reports() if self.tracker else []
        return ev.AgentHello(version=__version__, hostname=socket.gethostname(), devices=devices, paused=self.paused,
                             paused_serials=sorted(self.local_paused_serials), paused_job_ids=sorted(self.paused_jobs),
                             max_running=self.settings.max_running)

    async def on_orders(self, orders: list[ev.AssignmentOrder], *, full: bool, since: float | None = None) -> None:
        now = time.monotonic()
        for order in orders:
            aid = order.assignment_id
            self._received.setdefault(aid, now)
            if aid in self._done:
                continue
            worker = self._worker(order.serial)
            interrupted = self._reruns.pop(aid, None)
            if interrupted is not None:
                worker.reruns[aid] = interrupted.step_index
            worker.offer(order)
        if full:  # the server's whole list: anything else we held before asking is no longer ours to run
            listed = {o.assignment_id for o in orders}
            asked = now if since is None else since

            def stale(aid: int) -> bool:  # a push that came after the list was asked for may be missing from it
                return aid not in listed and self._received.get(aid, 0.0) < asked

            for aid in [a for a in self._reruns if stale(a)]:  # no longer ours to run again: say so
                self._report_interrupted(self._reruns.pop(aid))
            for worker in self.workers.values():
                dropped = {aid for aid in worker.queued_ids() if stale(aid)}
                if worker.current is not None and stale(worker.current.assignment_id):
                    dropped.add(worker.current.assignment_id)
                if dropped:
                    worker.drop(dropped, stop_running=True)
            for aid in [a for a in self._received if a not in listed and self._received[a] < asked]:
                del self._received[aid]  # forget what the server no longer lists

    async def on_control(self, event: str, control: Control) -> None:
        if isinstance(control, ev.JobControl):
            ids = set(control.assignment_ids)
            for worker in self.workers.values():
                if event == ev.JOB_PAUSED:
                    worker.drop(ids, hold=True, now=control.abort_running)
                elif event == ev.JOB_CANCELLED:
                    worker.drop(ids, stop_running=True)
                elif event == ev.JOB_RESUMED:
                    worker.restore(ids)
            return
        if event == ev.DEVICE_PAUSE:
            self.server_paused_serials.add(control.serial)
        elif event == ev.DEVICE_RESUME:
            self.server_paused_serials.discard(control.serial)
        if control.serial in self.workers:
            self._apply_pause(self.workers[control.serial])

    async def on_pause_state(self, state: PauseState) -> None:
        """The server's view of pauses: phones it lists that we did not pause here were paused there.
        The agent stays the authority on its own pauses (they are kept in its state directory)."""
        self.server_paused_serials = set(state.paused_serials) - self.local_paused_serials
        for worker in self.workers.values():
            self._apply_pause(worker)

    def on_device_ack(self, sent: list[ev.DeviceReport], refused_devices: list[ev.RefusedDevice]) -> None:
        """Phones the server refused because another connected agent drives them are left alone here (said
        once, loudly); a phone it took is this agent's again."""
        refused = {r.serial: r.held_by for r in refused_devices}
        for report in sent:
            serial = report.serial
            if serial in refused:
                if serial not in self.refused:
                    log.warning("phone already driven by another agent (two agents on one adb server?); this agent "
                                "leaves it alone until that agent lets it go",
                                extra={"serial": serial, "held_by": refused[serial]})
                self.refused[serial] = refused[serial]
            elif report.online and self.refused.pop(serial, None) is not None:
                log.warning("phone let go by the agent that drove it: this agent drives it now",
                            extra={"serial": serial})
            if serial in self.workers:
                self.workers[serial].refused = serial in self.refused
                self.workers[serial].wake()

    def on_thresholds(self, thresholds: HealthThresholds | None) -> None:
        """The server's thresholds under this agent's own: phones whose health that changes are reported."""
        if thresholds is not None and thresholds != self._server_thresholds():
            self._thresholds_file.write_text(thresholds.model_dump_json())
        if self.tracker is not None:
            changed = self.tracker.set_thresholds(thresholds_in_force(thresholds, self.settings.health_overrides()))
            if changed:
                self._report_devices(changed)

    def on_recover(self, ask: DeviceRecover) -> None:
        if self.recovery is not None:
            self.recovery.request(ask)

    def on_selftest(self, ask: SelftestRequest) -> None:
        if self.tracker is None:
            return
        adb = self.tracker.adb

        async def selftest() -> None:
            result = await run_selftest(adb, ask.serial, timeout_sec=self.settings.selftest_timeout_sec)
            log.info("self-test", extra={"serial": ask.serial, "passed": result.passed,
                                         "checks": [c.model_dump() for c in result.checks]})
            self.report(DEVICE_SELFTEST_RESULT, result)

        task = asyncio.create_task(selftest(), name=f"selftest-{ask.serial}")
        self._selftests.add(task)
        task.add_done_callback(self._selftests.discard)

    async def on_screen(self, event: str, message: BaseModel) -> ev.Ack:
        screens = self.screens
        if screens is None:
            return ev.Ack.refused("starting", "the agent is starting")
        serial = getattr(message, "serial", "")
        if self.tracker is None or serial not in self.tracker.phones or serial in self.refused:
            return ev.Ack.refused("not_found", f"no phone {serial!r} here")
        if isinstance(message, sc.StreamStart):
            screens.start(message)
        elif isinstance(message, sc.StreamStop):
            screens.stop(message.serial)
        elif isinstance(message, sc.SnapshotRequest):
            screens.snapshot(message)
        elif isinstance(message, sc.AgentInput):
            return await screens.input(message)
        return ev.Ack(ok=True)

    async def _reclaim_loop(self) -> None:
        """Claim refused phones again on every probe: when the agent holding one goes away, take it over."""
        while True:
            await asyncio.sleep(self.settings.probe_sec)
            if self.refused and self.tracker is not None:
                self._report_devices(self.tracker.reports(self.refused))

    def running_ids(self) -> list[int]:
        return sorted(w.current.assignment_id for w in self.workers.values() if w.current is not None)

    # ------------------------------------------------------------------ local control (the operator at this PC)

    def pause(self, scope: str, serial: str | None = None, job_id: int | None = None, *, resume: bool = False
              ) -> dict[str, Any]:
        """Stop new work at once where asked, then tell the server (through the outbox)."""
        try:
            kind = PauseScope(scope)
        except ValueError:
            raise ValueError(f"unknown scope {scope!r}") from None
        if kind == PauseScope.agent:
            self.paused = not resume
        elif kind == PauseScope.device:
            if serial is None:
                raise ValueError("--device is required")
            if resume:
                self.local_paused_serials.discard(serial)
            else:
                self.local_paused_serials.add(serial)
        elif job_id is None:
            raise ValueError("--job is required")
        elif resume:
            self.paused_jobs.discard(job_id)
        else:
            self.paused_jobs.add(job_id)
        self._save_pauses()
        for worker in self.workers.values():
            self._apply_pause(worker)
        self.report(ev.AGENT_RESUME if resume else ev.AGENT_PAUSE,
                    ev.PauseRequest(scope=kind, serial=serial, job_id=job_id))
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "server": self.settings.server, "link": self.link.mode, "polls": self.link.polls,
            "stalls": self.link.stalls,
            "outbox": len(self.outbox), "paused": self.paused, "paused_serials": sorted(self.local_paused_serials),
            "server_paused_serials": sorted(self.server_paused_serials), "paused_jobs": sorted(self.paused_jobs),
            "refused": dict(sorted(self.refused.items())),
            "given_up": dict(sorted(self.recovery.given_up.items())) if self.recovery is not None else {},
            "phones": [{
                "serial": w.serial, "online": w.online, "paused": w.paused, "recovering": w.recovering,
                "queued": w.queued_ids(),
                "running": w.current.assignment_id if w.current else None, "done": w.done_count,
            } for w in sorted(self.workers.values(), key=lambda w: w.serial)],
            "virtual": [{
                "serial": p.adb_serial, "online": p.online, "fault": p.fault.value, "commands": len(p.actions.records),
                "recent": [r.command for r in p.actions.records[-10:]],
            } for p in self.fleet.phones] if self.fleet is not None else [],
        }

    async def _adb_restarted(self) -> None:
        """The adb server died or restarted: start it again; virtual phones must be re-connected
        (USB phones the new server finds by itself)."""
        await asyncio.to_thread(ensure_adb_server, self.settings)
        if self.fleet is not None:
            for phone in self.fleet.phones:
                if phone.online:
                    with contextlib.suppress(Exception):
                        await self.fleet.connect(phone)

    def devices(self) -> list[dict[str, Any]]:
        if self.tracker is None:
            return []
        return [{**p.report(self.tracker.thresholds).model_dump(mode="json"), "adb_status": p.status}
                for p in sorted(self.tracker.phones.values(), key=lambda p: p.serial)]

    async def virtual(self, serial: str | None, action: str | None) -> dict[str, Any]:
        """Inspect or steer the virtual phones: their action logs, and offline/online for tests and demos."""
        if self.fleet is None:
            raise ValueError("this agent runs no virtual phones (start it with --virtual N)")
        if serial is None:
            return {"phones": [{"serial": p.adb_serial, "serialno": p.serialno, "model": p.model,
                                "online": p.online, "fault": p.fault.value, "actions": len(p.actions.records)}
                               for p in self.fleet.phones]}
        phone = self.fleet.phone(serial)
        if action == "offline":
            await phone.go_offline()
        elif action == "online":
            await phone.come_back()
        elif action != "log":
            raise ValueError(f"unknown action {action!r}: offline, online or log")
        return {"serial": phone.adb_serial, "online": phone.online, "fault": phone.fault.value,
                "log": [{"at": r.timestamp, "service": r.service, "command": r.command}
                        for r in phone.actions.records[-500:]]}

    async def virtual_fault(self, serial: str, fault: object, flap_sec: object = None) -> dict[str, Any]:
        """Give a virtual phone a fault (``none`` clears it): tests and demos of fleet health."""
        from phonefleet.virtual import Fault
        from phonefleet.virtual.faults import FAULT_NAMES

        if self.fleet is None:
            raise ValueError("this agent runs no virtual phones (start it with --virtual N)")
        if not isinstance(fault, str) or fault not in {f.value for f in Fault}:
            raise FieldError("fault", f"{str(fault)[:50]!r} is not one of {FAULT_NAMES}")
        if flap_sec is not None and (isinstance(flap_sec, bool) or not isinstance(flap_sec, int | float)
                                     or not 0.1 <= flap_sec <= 3600):
            raise FieldError("flap_sec", "a number of seconds between 0.1 and 3600")
        try:
            phone = self.fleet.phone(serial)
        except KeyError:
            raise FieldError("serial", f"no virtual phone {serial[:100]!r} on this agent") from None
        await phone.set_fault(fault, flap_sec=None if flap_sec is None else float(flap_sec))
        return {"serial": phone.adb_serial, "online": phone.online, "fault": phone.fault.value}
