"""Agent-side changes tried from the outside (``--what-if``): nothing under phonefleet/ is edited, and every
patch is undone on exit."""

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from bench.adb.lean import async_lean_shell, lean_shell
from bench.adb.workload import AGENT_POOL, BIG_POOL
from phonefleet.agent.link import MERGEABLE
from phonefleet.agent.phone import AdbPhone
from phonefleet.protocol import events as ev

WHAT_IF = {
    "pool-64": f"the agent's default executor has {BIG_POOL} threads instead of {AGENT_POOL}",
    "cache-version": "adbutils asks the adb server its version once per client, not before every command",
    "no-close-sleep": "adbutils closes its sockets without the 10 ms time.sleep",
    "lean-adb": "AdbPhone.shell uses one shell,v2 connection per command (no version check, no sleep, no echo)",
    "async-adb": f"AdbPhone.shell speaks shell,v2 on the event loop (no thread), at most {BIG_POOL} in flight",
    "group-reports": "the link sends each outbox window as one started, one progress (latest per assignment, none "
                     "for assignments finishing in it) and one finished event, instead of one per run of a kind",
}


def _close_without_sleep(self: Any) -> None:
    conn = self._AdbConnection__conn
    if conn is None:
        return
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
    conn.close()
    self._AdbConnection__conn = None


Batch = list[tuple[str, dict[str, Any], list[int]]]


def grouped_batch(items: list[Any], limit: int = 2000, max_bytes: int = 0) -> Batch:
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
