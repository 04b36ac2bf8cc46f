"""SQL of the distribution switch: one row saying whether new assignments may be made anywhere."""

from phonefleet.server.store import Conn
from phonefleet.server.store.records import FillContext, SwitchState


async def fill_context(conn: Conn) -> FillContext:
    """What a fill pass needs first, in one round trip: idle phones, whether distribution runs, and
    whether any online agent caps its running phones (claims then take the capped path)."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM devices WHERE state = 'idle')::int AS idle,
                  coalesce((SELECT running FROM scheduler_state WHERE id = 1), true) AS running,
                  EXISTS (SELECT 1 FROM agents WHERE max_running IS NOT NULL AND status = 'online') AS agent_caps""",
        record_class=FillContext)
    assert row is not None
    return row


async def state(conn: Conn) -> SwitchState:
    row = await conn.fetchrow("SELECT running, changed_at, changed_by FROM scheduler_state WHERE id = 1",
                              record_class=SwitchState)
    assert row is not None, "migration 0003 inserts the row"
    return row


async def set_running(conn: Conn, running: bool, actor: str) -> SwitchState:
    """Flip the switch (waits for claims in flight: ``jobs.get_for_fill`` holds the row's share lock)."""
    row = await conn.fetchrow(
        """UPDATE scheduler_state SET running = $1,
               changed_at = CASE WHEN running = $1 THEN changed_at ELSE now() END,
               changed_by = CASE WHEN running = $1 THEN changed_by ELSE $2 END
           WHERE id = 1 RETURNING running, changed_at, changed_by""",
        running, actor, record_class=SwitchState,
    )
    assert row is not None
    return row
