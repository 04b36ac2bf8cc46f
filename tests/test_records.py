"""The store's typed records match the SQL that fills them, and read as their columns."""

import re
from datetime import UTC, datetime

import asyncpg
import pytest

from phonefleet.server.store import admin_tokens, agents, assignments, audit, devices, jobs, schedules, steps, teams
from phonefleet.server.store import records as r


def _names(select_list: str) -> list[str]:
    """The output names of a SELECT list: each item's alias, else its column (commas inside parentheses
    belong to the item)."""
    items, depth, current = [], 0, ""
    for ch in select_list:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    names = []
    for item in (i.strip() for i in items if i.strip()):
        alias = re.search(r"\bAS\s+(\w+)\s*$", item, re.IGNORECASE)
        names.append(alias.group(1) if alias else item.rsplit(".", 1)[-1])
    return names


@pytest.mark.parametrize(("record", "select_list", "extra"), [
    (r.JobRecord, jobs.JOB_COLUMNS, []),
    (r.DeviceRecord, devices.DEVICE_COLUMNS, []),
    (r.AgentRecord, agents.AGENT_COLUMNS, []),
    (r.ScheduleRecord, schedules.SCHEDULE_COLUMNS, []),
    (r.AdminTokenRecord, admin_tokens.COLUMNS, []),
    (r.AssignmentRecord, assignments.ASSIGNMENT_COLUMNS, ["serial"]),
    (r.OrderRecord, assignments.ORDER_COLUMNS, []),
    (r.StepRow, steps.STEP_COLUMNS, []),
    (r.AuditRecord, audit.AUDIT_COLUMNS, []),
    (r.TeamRecord, teams.TEAM_COLUMNS, []),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_a_records_columns_are_exactly_what_its_query_selects(
    record: type[asyncpg.Record], select_list: str, extra: list[str]
) -> None:
    assert r.columns(record) == _names(select_list) + extra


def test_a_subclass_adds_its_columns_after_its_bases() -> None:
    assert r.columns(r.RenderedJob) == [*r.columns(r.JobRecord), "running_count", "paused_count"]


async def test_a_record_reads_as_typed_attributes_and_stays_a_mapping(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        row = await conn.fetchrow("SELECT true AS running, $1::timestamptz AS changed_at, NULL AS changed_by",
                                  now, record_class=r.SwitchState)
    finally:
        await conn.close()
    assert row is not None
    assert (row.running, row.changed_at, row.changed_by) == (True, now, None)
    assert dict(row.items()) == {"running": True, "changed_at": now, "changed_by": None}
    with pytest.raises(KeyError):
        _ = r.FillContext.idle.fget(row)  # type: ignore[attr-defined]  # a column the row does not have
