"""Fleet health on the server: the thresholds and quarantine policy, quarantine and release, recovery asked
of agents and reported by them, the self-test that releases a phone, and the reads that show it all.

The policy's checks run where their facts change: a failure streak after a batch of results
(``check_failures``), flapping after phones report a disconnect (``check_flapping``), long illness and due
self-tests in the ``HealthWatch`` duty. A phone the policy takes out gives its unstarted work back at once.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from phonefleet.protocol.enums import DeviceEventKind, DeviceState, RecoveryRung
from phonefleet.protocol.health import (
    DEVICE_RECOVER,
    DEVICE_SELFTEST,
    FLEET_THRESHOLDS,
    AttentionItem,
    DeviceDetail,
    DeviceEvent,
    DeviceEventList,
    DeviceHealth,
    DeviceRecover,
    FleetHealthReport,
    FleetPolicy,
    FleetPolicyPatch,
    HealthThresholds,
    QuarantinePolicy,
    RecoverAccepted,
    RecoveryReport,
    SelftestRequest,
    SelftestResult,
)
from phonefleet.server import audit, reliability
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Conflict, NotFound
from phonefleet.server.metrics import Metrics
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn, device_events
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import fleet_policy as policy_store
from phonefleet.server.store import quarantine as quarantine_store
from phonefleet.server.store.records import DeviceEventRecord, JobPlacement
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)

POLICY = "policy"
"""The actor of what the quarantine policy does by itself."""
HOT_PREFIX = "battery "
"""Reasons about the battery's temperature read "battery 52.0 °C above 45.0 °C"."""


def _flat(policy: FleetPolicy) -> dict[str, Any]:
    """``thresholds.battery_min``-style keys, so the trail names the one threshold that changed."""
    parts = policy.model_dump(mode="json", include={"thresholds", "quarantine"})
    return {f"{part}.{k}": v for part, values in parts.items() for k, v in values.items()}


def event_model(event: DeviceEventRecord) -> DeviceEvent:
    return DeviceEvent.model_validate(dict(event.items()))


class FleetHealth:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, metrics: Metrics, *,
                 default_thresholds: HealthThresholds) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.metrics = metrics
        self.default_thresholds = default_thresholds
        """The servers' ``PHONEFLEET_HEALTH_*`` settings: what the stored policy overrides, field by field."""

    def _policy(self, row: Any) -> FleetPolicy:
        stored = row["policy"] or {}
        thresholds = {**self.default_thresholds.model_dump(), **stored.get("thresholds", {})}
        return FleetPolicy(thresholds=HealthThresholds.model_validate(thresholds),
                           quarantine=QuarantinePolicy.model_validate(stored.get("quarantine", {})),
                           changed_at=row["changed_at"], changed_by=row["changed_by"])

    # ------------------------------------------------------------------ policy

    async def policy(self, conn: Conn | None = None) -> FleetPolicy:
        if conn is not None:
            return self._policy(await policy_store.get(conn))
        async with self.pool.acquire() as c:
            return self._policy(await policy_store.get(c))

    async def patch_policy(self, body: FleetPolicyPatch, actor: str) -> FleetPolicy:
        """Change the given fields; agents hear new thresholds at once (and in every hello after). Only what
        was ever changed is stored: a field left alone keeps following its default."""

        async def work(conn: Conn) -> FleetPolicy:
            row = await policy_store.get(conn)
            was = self._policy(row)
            stored = dict(row["policy"] or {})
            for part, patch in (("thresholds", body.thresholds), ("quarantine", body.quarantine)):
                if patch is not None:
                    stored[part] = {**stored.get(part, {}), **patch.model_dump(exclude_none=True)}
            now = self._policy(await policy_store.set_policy(conn, stored, actor))
            await audit.record_change(conn, "fleet.policy.update", "fleet_policy", None,
                                      before=_flat(was), after=_flat(now))
            return now

        policy = await in_transaction(self.pool, work)
        async with self.pool.acquire() as conn:
            agent_ids = await agents_store.online_ids(conn)
        for agent_id in agent_ids:  # wherever each is connected (another node: through the bus)
            await self.realtime.to_agent(agent_id, FLEET_THRESHOLDS, policy.thresholds.model_dump())
        return policy

    # ------------------------------------------------------------------ reads

    async def device(self, device_id: int) -> DeviceDetail:
        async with self.pool.acquire() as conn:
            row = await devices_store.get_detail(conn, device_id)
            if row is None:
                raise NotFound(f"device {device_id} not found")
            record = await reliability.record(conn, device_id, released_at=row.released_at)
            policy = await self.policy(conn)
        fields = dict(row.items())
        fields["health"] = DeviceHealth.model_validate(row.health) if row.health else None
        return DeviceDetail.model_validate({**fields, "reliability": record, "thresholds": policy.thresholds})

    async def events(self, device_id: int, *, before: int | None, limit: int,
                     kinds: Sequence[str] | None = None) -> DeviceEventList:
        async with self.pool.acquire() as conn:
            if await devices_store.get(conn, device_id) is None:
                raise NotFound(f"device {device_id} not found")
            rows = await device_events.page(conn, device_id, before=before, limit=limit + 1, kinds=kinds)
        items = [event_model(r) for r in rows[:limit]]
        return DeviceEventList(items=items, next_before=items[-1].id if len(rows) > limit else None)

    async def report(self, teams: Sequence[int] | None = None) -> FleetHealthReport:
        """Phones by state, and those that need a look: quarantined, recovering, unhealthy, flapping, hot; of
        ``teams``' agents only (None: every phone)."""
        async with self.pool.acquire() as conn:
            policy = await self.policy(conn)
            counts = await devices_store.counts_by_state(conn, teams)
            rows = await devices_store.needing_attention(conn, teams=teams)
            flap_since = datetime.now(UTC) - timedelta(seconds=policy.quarantine.flap_window_sec)
            flapping = await device_events.disconnects_since(conn, await devices_store.connected_ids(conn, teams),
                                                             flap_since)
            ids = [d for d, n in flapping.items() if n >= 2]
            flappers = await devices_store.get_many(conn, ids) if ids else []
        items: list[AttentionItem] = []
        order = {DeviceState.quarantined: 0, DeviceState.recovering: 1, DeviceState.unhealthy: 2}
        for r in sorted(rows, key=lambda r: (order.get(DeviceState(r.state), 3), r.id)):
            state = DeviceState(r.state)
            hot = r.battery_temp_c is not None and r.battery_temp_c > policy.thresholds.max_battery_temp_c
            problem = ("quarantined" if state is DeviceState.quarantined else
                       "recovering" if state is DeviceState.recovering else "hot" if hot else "unhealthy")
            reason = (r.quarantine_reason if problem == "quarantined" else
                      f"rung {r.recovering}" if problem == "recovering" else r.health_reason)
            items.append(AttentionItem(device_id=r.id, serial=r.serial, agent_name=r.agent_name, state=state,
                                       problem=problem, reason=reason, since=r.since))
        listed = {i.device_id for i in items}
        window = policy.quarantine.flap_window_sec // 60
        items += [AttentionItem(device_id=d.id, serial=d.serial, agent_name=d.agent_name, state=DeviceState(d.state),
                                problem="flapping", reason=f"{flapping[d.id]} disconnects in {window} min", since=None)
                  for d in flappers if d.id not in listed]
        return FleetHealthReport(devices=counts, attention=items)

    # ------------------------------------------------------------------ operator actions

    async def quarantine(self, device_id: int, reason: str, by: str) -> DeviceDetail:
        async with self.pool.acquire() as conn:
            device = await devices_store.get(conn, device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found")
        if device.state == DeviceState.quarantined:
            raise Conflict(f"device {device_id} is quarantined already ({device.quarantine_reason})")
        await self.quarantine_many([(device_id, reason)], by=by)
        return await self.device(device_id)

    async def release(self, device_id: int, by: str, reason: str = "released by an operator") -> DeviceDetail:
        async def work(conn: Conn) -> tuple[DeviceEventRecord | None, bool]:
            was = await devices_store.get(conn, device_id)
            event = await quarantine_store.release(conn, device_id, by=by, reason=reason)
            if event is None or was is None:
                return None, was is not None
            await devices_store.refresh_states(conn, [device_id])
            now = await devices_store.get(conn, device_id)
            assert now is not None
            await audit.record_change(conn, "device.release", "device", device_id,
                                      before={"state": was.state, "quarantine_reason": was.quarantine_reason},
                                      after={"state": now.state, "quarantine_reason": now.quarantine_reason})
            return event, True

        event, exists = await in_transaction(self.pool, work)
        if not exists:
            raise NotFound(f"device {device_id} not found")
        if event is None:
            raise Conflict(f"device {device_id} is not quarantined")
        await self._announce([device_id], [event], [])
        return await self.device(device_id)

    async def recover(self, device_id: int, rung: RecoveryRung, by: str) -> RecoverAccepted:
        """Ask the phone's agent to run one rung now; what it did arrives as ``device:recovery`` events."""
        async with self.pool.acquire() as conn:
            device = await devices_store.get(conn, device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found")
        if device.recovering is not None:
            raise Conflict(f"device {device_id} is recovering already (rung {device.recovering})")
        sent = self.realtime.has_agent(device.agent_id)
        await self.realtime.to_agent(device.agent_id, DEVICE_RECOVER,
                                     DeviceRecover(serial=device.serial, rung=rung, by=by).model_dump())
        async with self.pool.acquire() as conn:  # an order to the agent, not a transaction: recorded once sent
            await audit.record(conn, "device.recover", "device", device_id, before={"recovering": None},
                               after={"recovering": str(rung), "sent": sent})
        return RecoverAccepted(device_id=device_id, serial=device.serial, rung=rung, sent=sent)

    # ------------------------------------------------------------------ from agents

    async def on_recovery(self, agent_id: int, report: RecoveryReport) -> dict[str, Any]:
        """A rung started or ended on one of the agent's phones; a ladder that gave up quarantines the phone."""
        started = report.phase == "started"

        async def work(conn: Conn) -> tuple[int, list[DeviceEventRecord]]:
            mark = quarantine_store.start_recovering if started else quarantine_store.end_recovering
            device_id = await mark(conn, agent_id, report.serial, str(report.rung))
            if device_id is None:
                raise NotFound(f"no phone {report.serial!r} on this agent")
            kind = DeviceEventKind.recovery_started if started else DeviceEventKind.recovery_ended
            events = await device_events.add_many(conn, [device_events.NewEvent(
                device_id, kind, report.by, report.detail,
                {"rung": str(report.rung), **({"outcome": report.outcome} if report.outcome else {})})])
            await devices_store.refresh_states(conn, [device_id])
            return device_id, events

        device_id, events = await in_transaction(self.pool, work)
        if not started:
            self.metrics.recovery_attempts.labels(rung=str(report.rung), outcome=report.outcome or "unknown").inc()
        await self._announce([device_id], events, [])
        if report.give_up:
            detail = f": {report.detail}" if report.detail else ""
            await self.quarantine_many([(device_id, f"recovery failed: {report.rung} {report.outcome}{detail}")],
                                       by=POLICY)
        return {"device_id": device_id}

    async def on_selftest(self, agent_id: int, result: SelftestResult) -> dict[str, Any]:
        """The self-test's verdict; a pass releases a quarantined phone past its cool-down."""
        failed = [c.name for c in result.checks if not c.passed]
        reason = "passed" if result.passed else f"failed: {', '.join(failed) or 'no check passed'}"

        async def work(conn: Conn) -> tuple[int, list[DeviceEventRecord]]:
            device_id = await quarantine_store.device_of(conn, agent_id, result.serial)
            if device_id is None:
                raise NotFound(f"no phone {result.serial!r} on this agent")
            return device_id, await device_events.add_many(conn, [device_events.NewEvent(
                device_id, DeviceEventKind.selftest, "selftest", reason,
                {"passed": result.passed, "checks": [c.model_dump() for c in result.checks]})])

        device_id, events = await in_transaction(self.pool, work)
        await self._announce([], events, [])
        released = False
        if result.passed:
            try:
                await self.release(device_id, "selftest", "the self-test passed after the cool-down")
                released = True
            except Conflict:
                pass  # released by an operator meanwhile
        return {"device_id": device_id, "released": released}

    # ------------------------------------------------------------------ the policy's checks

    async def check_failures(self, device_ids: Iterable[int]) -> list[int]:
        """Phones whose last runs are ``consecutive_failures`` phone-attributed failures in a row: quarantined."""
        ids = sorted(set(device_ids))
        if not ids:
            return []
        async with self.pool.acquire() as conn:
            policy = (await self.policy(conn)).quarantine
            depth = 2 * max(policy.consecutive_failures, policy.outlier_failures) + 2  # room for skipped ones
            runs = await quarantine_store.recent_runs(conn, ids, limit=depth, since_release=True)
        found = []
        for device_id, recent in runs.items():
            streak = quarantine_store.failure_streak(recent)
            outliers = quarantine_store.outlier_streak(recent)
            if len(streak) >= policy.consecutive_failures:
                codes = ", ".join(sorted({r.error_code or r.status for r in streak}))
                found.append((device_id, f"{len(streak)} phone failures in a row ({codes})"))
            elif len(outliers) >= policy.outlier_failures:
                codes = ", ".join(sorted({r.error_code or r.status for r in outliers}))
                found.append((device_id, f"{len(outliers)} failures in a row of jobs that succeed on other phones "
                                         f"({codes})"))
        return await self.quarantine_many(found, by=POLICY) if found else []

    async def check_flapping(self, device_ids: Iterable[int]) -> list[int]:
        """Phones that disconnected ``flap_disconnects`` times within ``flap_window_sec``: quarantined."""
        ids = sorted(set(device_ids))
        if not ids:
            return []
        async with self.pool.acquire() as conn:
            policy = (await self.policy(conn)).quarantine
            since = datetime.now(UTC) - timedelta(seconds=policy.flap_window_sec)
            counts = await device_events.disconnects_since(conn, ids, since)
        window = policy.flap_window_sec // 60 if policy.flap_window_sec >= 60 else policy.flap_window_sec
        unit = "min" if policy.flap_window_sec >= 60 else "s"
        found = [(d, f"flapping: {n} disconnects in {window} {unit}") for d, n in counts.items()
                 if n >= policy.flap_disconnects]
        return await self.quarantine_many(found, by=POLICY) if found else []

    async def check_long_illness(self, limit: int) -> list[int]:
        async with self.pool.acquire() as conn:
            policy = (await self.policy(conn)).quarantine
            cutoff = datetime.now(UTC) - timedelta(seconds=policy.unhealthy_max_sec)
            rows = await quarantine_store.unhealthy_since_before(conn, cutoff, limit)
        minutes = policy.unhealthy_max_sec // 60
        found = [(r["id"], f"unhealthy for more than {minutes} min: {r['health_reason'] or 'unknown'}")
                 for r in rows]
        return await self.quarantine_many(found, by=POLICY) if found else []

    async def ask_selftests(self, limit: int) -> int:
        """Quarantined phones past their cool-down are asked for the self-test (again, if the last one failed)."""
        async with self.pool.acquire() as conn:
            policy = (await self.policy(conn)).quarantine
            due = await quarantine_store.due_selftest(conn, cooldown_sec=policy.cooldown_sec,
                                                      every_sec=policy.selftest_every_sec, limit=limit)
        for row in due:
            await self.realtime.to_agent(row["agent_id"], DEVICE_SELFTEST,
                                         SelftestRequest(serial=row["serial"]).model_dump())
        return len(due)

    async def quarantine_many(self, items: Sequence[tuple[int, str]], *, by: str) -> list[int]:
        """Quarantine phones, each with its reason; their unstarted work goes back to its jobs."""
        by_reason: dict[str, list[int]] = defaultdict(list)
        for device_id, reason in items:
            by_reason[reason].append(device_id)

        async def work(conn: Conn) -> tuple[list[int], list[DeviceEventRecord], list[JobPlacement]]:
            ids: list[int] = []
            events: list[DeviceEventRecord] = []
            for reason, device_ids in by_reason.items():
                done, written = await quarantine_store.quarantine(conn, device_ids, reason=reason, by=by)
                for device_id in done:
                    await audit.record(conn, "device.quarantine", "device", device_id,
                                       before={"quarantine_reason": None}, after={"quarantine_reason": reason})
                ids += done
                events += written
            handed = await assignments_store.hand_back(conn, device_ids=ids, reason="phone quarantined") if ids \
                else []
            await devices_store.refresh_states(conn, ids)
            return ids, events, handed

        ids, events, handed = await in_transaction(self.pool, work)
        if ids:
            log.info("phones quarantined", extra={"devices": ids, "by": by,
                                                  "reasons": sorted({e.reason or "" for e in events})})
        await self._announce(ids, events, handed)
        return ids

    async def _announce(self, device_ids: list[int], events: list[DeviceEventRecord],
                        handed: list[JobPlacement]) -> None:
        """Dashboards hear of the phones (their rows, and the new entries of their timelines) with the next
        flush; the fill looks for work the changed phones may take or have given back."""
        self.realtime.devices_changed([*device_ids, *(e.device_id for e in events)])
        self.realtime.jobs_changed(h.job_id for h in handed)
        if device_ids or handed:
            self.distributor.request_fill()
