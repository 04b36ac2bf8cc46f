"""SQL of the fleet's health thresholds and quarantine policy: one row holding what was changed from the
defaults (``protocol.health.FleetPolicy`` fills in the rest)."""

from typing import Any

from phonefleet.server.store import Conn, Row


async def get(conn: Conn) -> Row:
    row = await conn.fetchrow("SELECT policy, changed_at, changed_by FROM fleet_policy WHERE id = 1")
    assert row is not None, "migration 0006 inserts the row"
    return row


async def set_policy(conn: Conn, policy: dict[str, Any], actor: str) -> Row:
    row = await conn.fetchrow(
        """UPDATE fleet_policy SET policy = $1, changed_at = now(), changed_by = $2 WHERE id = 1
           RETURNING policy, changed_at, changed_by""",
        policy, actor,
    )
    assert row is not None
    return row
