"""Everything an agent says, by socket or by the polling fallback: one code path per event."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol.enums import DeviceState
from phonefleet.server import outage
from phonefleet.server.auth import Principal
from phonefleet.server.batching import Coalescer
from phonefleet.server.completion import Completion
from phonefleet.server.config import Settings
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Invalid, ServiceError
from phonefleet.server.fleet_health import FleetHealth
from phonefleet.server.orders import of_rows as orders_of_rows
from phonefleet.server.orders import with_orders
from phonefleet.server.outage import DATABASE_ERRORS, OUTAGE_ERRORS
from phonefleet.server.pauses import Pauses
from phonefleet.server.realtime import Realtime
from phonefleet.server.rooms import of_team
from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store.records import AssignmentRef, DeviceChange, JobPlacement, OrderRecord
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)

Handler = Callable[[Principal, Any], Awaitable[dict[str, Any] | None]]


def _refused(held: dict[str, str]) -> list[ev.RefusedDevice]:
    if held:
        log.info("phones refused: another connected agent drives them", extra={"phones": held})
    return [ev.RefusedDevice(serial=serial, held_by=name) for serial, name in sorted(held.items())]


def error_ack(exc: ServiceError) -> dict[str, Any]:
    return {"ok": False, "error": exc.body()["error"]}


class AgentEvents:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, *,
                 completion: Completion, pauses: Pauses, fleet_health: FleetHealth, settings: Settings) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.completion = completion
        self.pauses = pauses
        self.fleet_health = fleet_health
        self.settings = settings
        self._handlers: dict[str, tuple[type[BaseModel], Handler]] = {
            ev.AGENT_HELLO: (ev.AgentHello, self._hello),
            ev.AGENT_HEARTBEAT: (ev.Heartbeat, self._heartbeat),
            ev.DEVICE_UPDATE: (ev.DeviceUpdate, self._device_update),
            ev.ASSIGNMENT_STARTED: (ev.AssignmentStarted, self._started),
            ev.ASSIGNMENT_PROGRESS: (ev.AssignmentProgress, self._progress),
            ev.ASSIGNMENT_FINISHED: (ev.AssignmentFinished, self._finished),
            ev.AGENT_PAUSE: (ev.PauseRequest, self._pause),
            ev.AGENT_RESUME: (ev.PauseRequest, self._resume),
            health.DEVICE_RECOVERY: (health.RecoveryReport, self._recovery),
            health.DEVICE_SELFTEST_RESULT: (health.SelftestResult, self._selftest),
        }
        self._beats: Coalescer[int, bool] = Coalescer(self._beat_batch, name="heartbeats")
        """Heartbeats arriving together share two statements: 500 agents beating every 5 s are 100 a second."""

    def start(self) -> None:
        self._beats.start()

    async def stop(self) -> None:
        await self._beats.stop()

    async def handle(self, agent: Principal, event: str, data: Any) -> dict[str, Any]:
        """Validate and apply one event; always answers an ack, never raises."""
        entry = self._handlers.get(event) if isinstance(event, str) else None
        try:
            if entry is None:
                raise Invalid.field("event", f"unknown event {str(event)[:100]!r}")
            model, handler = entry
            Invalid.check_text(data)
            try:
                payload = model.model_validate(data if data is not None else {})
            except ValidationError as exc:
                raise Invalid.from_validation(exc) from None
            result = await handler(agent, payload)
            return {"ok": True, "data": result} if result is not None else {"ok": True}
        except OUTAGE_ERRORS as exc:  # before ServiceError: DatabaseUnavailable is one
            outage.report(exc, f"agent event {str(event)[:100]}")
            return outage.outage_ack(exc)
        except ServiceError as exc:
            return error_ack(exc)
        except asyncpg.PostgresError as exc:  # a query's own failure (a deadlock retried to the end, ...)
            log.warning("agent event failed", extra={"event": event, "error": type(exc).__name__})
            return {"ok": False, "error": {"code": "unavailable", "message": "try again", "details": [],
                                           "retryable": True}}
        except Exception:  # a bug, not bad input: still an ack, so the agent's call does not hang
            log.exception("agent event crashed", extra={"event": event})
            return {"ok": False, "error": {"code": "internal_error", "message": "the server failed on this event",
                                           "details": [], "retryable": True}}

    # ------------------------------------------------------------------ events

    async def _hello(self, agent: Principal, hello: ev.AgentHello) -> dict[str, Any]:
        assert agent.agent_id is not None and agent.agent_name is not None
        agent_id = agent.agent_id
        paused_serials = {d.serial for d in hello.devices} if hello.paused else set(hello.paused_serials)

        async def work(conn: Conn) -> tuple[list[int], list[JobPlacement], list[OrderRecord], dict[str, str]]:
            await agents_store.hello(conn, agent_id, hello.hostname, hello.version, hello.paused,
                                     max_running=hello.max_running)
            touched, changed, refused = await devices_store.apply_reports(
                conn, agent_id, [d.model_dump() for d in hello.devices], full=True, paused_serials=paused_serials
            )
            for job_id in await agents_store.paused_job_ids(conn, agent_id):
                if job_id not in hello.paused_job_ids:
                    await agents_store.resume_job(conn, agent_id, job_id)
            for job_id in hello.paused_job_ids:
                await agents_store.pause_job(conn, agent_id, job_id)
            handed = await self._hand_back_unavailable(conn, changed)
            await assignments_store.mark_delivered_all(conn, agent_id)
            orders = await assignments_store.open_orders(conn, agent_id)
            return touched, handed, orders, refused

        touched, handed, orders, refused = await in_transaction(self.pool, work)
        async with self.pool.acquire() as conn:
            listed = orders_of_rows(orders)
            ack = ev.HelloAck(
                agent_id=agent_id, agent_name=agent.agent_name, assignments=[],
                paused=hello.paused,
                paused_serials=await devices_store.paused_serials(conn, agent_id),
                paused_job_ids=await agents_store.paused_job_ids(conn, agent_id),
                heartbeat_sec=self.settings.heartbeat_sec, poll_sec=self.settings.poll_sec,
                refused_devices=_refused(refused), thresholds=(await self.fleet_health.policy(conn)).thresholds,
            )
        self._announce_devices(touched, handed)
        await self._agent_update(agent)
        self.distributor.request_fill()
        return with_orders(ack, listed)

    async def _heartbeat(self, agent: Principal, _hb: ev.Heartbeat) -> dict[str, Any]:
        assert agent.agent_id is not None
        (was_offline,) = await self._beats.submit([agent.agent_id])
        # An agent the server had given up on must re-register its phones with agent:hello.
        return {"hello_required": was_offline}

    async def _beat_batch(self, agent_ids: list[int]) -> list[bool]:
        """The agents are alive and their running work's leases extended; per agent, whether it had been
        considered gone. Leases are extended after the touch, outside its transaction (as one heartbeat did)."""
        async with self.pool.acquire() as conn:
            gone = await agents_store.touch_many(conn, sorted(set(agent_ids)))
            await assignments_store.extend_leases_many(conn, agent_ids, self.settings.lease_sec)
        return [agent_id in gone for agent_id in agent_ids]

    async def _device_update(self, agent: Principal, update: ev.DeviceUpdate) -> dict[str, Any]:
        assert agent.agent_id is not None
        agent_id = agent.agent_id

        async def work(conn: Conn) -> tuple[list[int], list[DeviceChange], list[JobPlacement], dict[str, str]]:
            await agents_store.touch(conn, agent_id)
            touched, changed, refused = await devices_store.apply_reports(
                conn, agent_id, [d.model_dump() for d in update.devices], full=update.full, paused_serials=None
            )
            return touched, changed, await self._hand_back_unavailable(conn, changed), refused

        touched, changed, handed, refused = await in_transaction(self.pool, work)
        self._announce_devices(touched, handed)
        if any(c.state == "idle" for c in changed) or handed:
            self.distributor.request_fill()
        await self._check_flapping(changed)
        return ev.DeviceUpdateAck(devices=len(touched), handed_back=[h.id for h in handed],
                                  refused_devices=_refused(refused)).model_dump()

    async def _started(self, agent: Principal, started: ev.AssignmentStarted) -> dict[str, Any]:
        assert agent.agent_id is not None
        agent_id = agent.agent_id
        fresh = [i.assignment_id for i in started.items if i.rerun_after_step is None]
        again = {i.assignment_id: i.rerun_after_step for i in started.items if i.rerun_after_step is not None}

        async def work(conn: Conn) -> list[AssignmentRef]:
            await agents_store.touch(conn, agent_id)
            rows = list(await assignments_store.mark_started(conn, agent_id, fresh, self.settings.lease_sec))
            if again:
                reruns = await assignments_store.record_reruns(conn, agent_id, list(again), self.settings.lease_sec)
                for r in reruns:
                    await jobs_store.add_event(conn, r.job_id, "rerun", f"agent:{agent_id}", {
                        "assignment_id": r.id, "interrupted_step": again[r.id], "reruns": r.reruns})
                rows += reruns
            return rows

        if again:  # rare: the rerun and its record in one transaction
            rows = await in_transaction(self.pool, work)
        else:
            async with self.pool.acquire() as conn:
                rows = await work(conn)
        self.realtime.jobs_changed(r.job_id for r in rows)
        return {"started": [r.id for r in rows]}

    async def _progress(self, agent: Principal, progress: ev.AssignmentProgress) -> dict[str, Any]:
        assert agent.agent_id is not None
        async with self.pool.acquire() as conn:
            rows = await assignments_store.record_progress(
                conn, agent.agent_id, [i.model_dump() for i in progress.items]
            )
        self.realtime.jobs_changed(r.job_id for r in rows)
        return {"recorded": len(rows)}

    async def _finished(self, agent: Principal, finished: ev.AssignmentFinished) -> dict[str, Any]:
        assert agent.agent_id is not None
        items = [i.model_dump() for i in finished.results]
        # The agent is alive: touched with the heartbeats that arrive meanwhile, beside the results' batch.
        _, recorded = await asyncio.gather(self._beats.submit([agent.agent_id]),
                                           self.completion.end(items, agent_id=agent.agent_id))
        # Already-ended (or foreign) ids are acknowledged too, so an outbox replay always drains.
        return {"recorded": recorded, "acknowledged": [i["assignment_id"] for i in items]}

    async def _recovery(self, agent: Principal, report: health.RecoveryReport) -> dict[str, Any]:
        assert agent.agent_id is not None
        return await self.fleet_health.on_recovery(agent.agent_id, report)

    async def _selftest(self, agent: Principal, result: health.SelftestResult) -> dict[str, Any]:
        assert agent.agent_id is not None
        return await self.fleet_health.on_selftest(agent.agent_id, result)

    async def _pause(self, agent: Principal, request: ev.PauseRequest) -> dict[str, Any]:
        assert agent.agent_id is not None and agent.agent_name is not None
        result = await self.pauses.from_agent(agent.agent_id, agent.agent_name, request, paused=True)
        await self._agent_update(agent)
        return result

    async def _resume(self, agent: Principal, request: ev.PauseRequest) -> dict[str, Any]:
        assert agent.agent_id is not None and agent.agent_name is not None
        result = await self.pauses.from_agent(agent.agent_id, agent.agent_name, request, paused=False)
        await self._agent_update(agent)
        return result

    # ------------------------------------------------------------------ polling

    async def poll(self, agent: Principal) -> ev.AgentPoll:
        """``GET /api/agent/assignments``: what the agent should hold now; pending ones become delivered."""
        assert agent.agent_id is not None
        agent_id = agent.agent_id

        async def work(conn: Conn) -> tuple[bool, list[OrderRecord], list[str], list[int], bool]:
            was_offline = await agents_store.touch(conn, agent_id)
            await assignments_store.extend_leases(conn, agent_id, self.settings.lease_sec)
            await assignments_store.mark_delivered_all(conn, agent_id)
            orders = await assignments_store.open_orders(conn, agent_id)
            paused_row = await agents_store.get(conn, agent_id, self.settings.agent_grace_sec)
            return (was_offline, orders, await devices_store.paused_serials(conn, agent_id),
                    await agents_store.paused_job_ids(conn, agent_id), bool(paused_row and paused_row.paused))

        was_offline, orders, serials, job_ids, paused = await in_transaction(self.pool, work)
        return ev.AgentPoll.model_construct(  # the orders are built from trusted rows, not validated again
            agent_id=agent_id, assignments=orders_of_rows(orders), paused=paused, paused_serials=serials,
            paused_job_ids=job_ids, poll_sec=self.settings.poll_sec, hello_required=was_offline,
        )

    # ------------------------------------------------------------------ helpers

    async def _hand_back_unavailable(self, conn: Conn, changed: list[DeviceChange]) -> list[JobPlacement]:
        """Phones that went offline, unhealthy or paused give their unstarted work back."""
        gone = [c.id for c in changed if c.state in ("offline", "unhealthy", "paused")]
        if not gone:
            return []
        handed = await assignments_store.hand_back(conn, device_ids=gone, reason="phone unavailable")
        if handed:
            await devices_store.refresh_states(conn, gone)
        return handed

    async def _check_flapping(self, changed: list[DeviceChange]) -> None:
        """Phones that just went offline may have done it once too often (the quarantine policy's flapping)."""
        gone = [c.id for c in changed if c.state == DeviceState.offline]
        if gone:
            try:
                await self.fleet_health.check_flapping(gone)
            except DATABASE_ERRORS:  # the report is recorded; the next disconnect looks again
                log.warning("flapping check failed", exc_info=True)

    def _announce_devices(self, device_ids: list[int], handed: list[JobPlacement]) -> None:
        self.realtime.devices_changed(device_ids)
        self.realtime.jobs_changed(h.job_id for h in handed)

    async def _agent_update(self, agent: Principal) -> None:
        assert agent.agent_id is not None
        async with self.pool.acquire() as conn:
            row = await agents_store.get(conn, agent.agent_id, self.settings.agent_grace_sec)
        if row is not None:
            await self.realtime.broadcast(ev.AGENT_UPDATE, ev.AgentUpdate(
                agent_id=row.id, name=row.name, status=row.status, paused=row.paused,
                connected=row.connected, team_id=row.team_id,
            ).model_dump(), to=of_team(row.team_id))
